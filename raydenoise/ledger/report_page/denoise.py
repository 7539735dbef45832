"""denoise's report.html, built from report.parquet in streaming passes. No Ray."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ...console import duration, plural
from .crops import Comparison
from .html import render_page, select_rows
from .plots import histogram, svg_bars, svg_histogram, svg_scatter

# ----------------------------------------------------------------------------- denoise's page

DONE = ("ok", "skipped")
TABLE_COLUMNS = [
    "key",
    "status",
    "width",
    "height",
    "seconds",
    "psnr",
    "input_psnr",
    "gain",
    "ssim",
    "input_noise",
    "output_noise",
    "change",
    "note",
]


def denoise_words(summary: dict[str, Any]) -> str:
    """The run in one sentence: "13 images denoised, none failed, 0.46 images/s" and the rest."""
    parts = [f"{plural(summary.get('ok', 0), 'image')} denoised"]
    failed = summary.get("failures", 0)
    parts.append(
        "none failed" if not failed else f"{failed:,} failed (see the table, status error)"
    )
    if summary.get("skipped"):
        parts.append(f"{summary['skipped']:,} already done and kept")
    if summary.get("excluded"):
        parts.append(f"{summary['excluded']:,} excluded by rule")
    if summary.get("not_done"):
        parts.append(f"{summary['not_done']:,} not done")
    if summary.get("images_per_s"):
        parts.append(
            f"{summary['images_per_s']:.2f} images/s over {duration(summary.get('seconds') or 0)}"
        )
    words = ", ".join(parts) + "."
    if summary.get("stopped"):
        words += f" The job stopped before it was complete ({summary['stopped']}): rerun to resume."
    gain = (
        (summary.get("metrics") or {}).get("psnr"),
        (summary.get("metrics") or {}).get("input_psnr"),
    )
    if gain[0] and gain[1] and gain[0].get("mean") is not None and gain[1].get("mean") is not None:
        words += f" Mean PSNR {gain[0]['mean']:.2f} dB against the reference (input {gain[1]['mean']:.2f} dB)."
    return words


def _gain(r: dict[str, Any]) -> float | None:
    if r.get("psnr") is None or r.get("input_psnr") is None:
        return None
    return float(r["psnr"]) - float(r["input_psnr"])


Batches = Callable[[list[str]], Iterator[Any]]  # a report's columns, a RecordBatch at a time
ROW_COLUMNS = ["key", "status", "width", "height", "seconds", "psnr", "input_psnr", "ssim",
               "input_noise", "output_noise", "change", "error", "note"]  # fmt: skip


def denoise_page(
    *,
    title: str,
    summary: dict[str, Any],
    facts: dict[str, Any],
    batches: Batches,
    comparisons: list[Comparison],
    links: Callable[[str], tuple[str, str] | None],
    where: dict[str, str],
) -> str:
    """denoise's report.html. ``batches(columns)``: the report's rows as pyarrow RecordBatches,
    read again for each pass (memory does not grow with the report); ``links(key)``: hrefs of a
    row's input and output relative to the page, or None."""
    plots, scored = _plots(batches, summary)

    def rows() -> Iterator[dict[str, Any]]:
        for b in batches(ROW_COLUMNS):
            yield from b.to_pylist()

    ranked = _gain if scored else (lambda r: r.get("input_noise"))
    chosen, total = select_rows(rows, ranked)
    table = []
    embedded = {c.key for c in comparisons}
    link_map = {}
    for r in chosen:
        r["gain"] = _gain(r)
        r["note"] = r.get("error") or r.get("note")
        table.append([r.get(c) for c in TABLE_COLUMNS])
        link = links(r["key"]) if r["key"] not in embedded and r.get("status") in DONE else None
        if link:
            link_map[r["key"]] = link
    statuses = sorted({r[1] for r in table if r[1]})
    # columns no row has a value for (no reference: no PSNR) are left out
    shown = [i for i in range(len(TABLE_COLUMNS)) if i < 2 or any(r[i] is not None for r in table)]
    return render_page(
        title=title,
        summary_words=denoise_words(summary),
        facts=facts,
        plots=plots,
        columns=[TABLE_COLUMNS[i] for i in shown],
        rows=[[r[i] for i in shown] for r in table],
        total_rows=total,
        comparisons=comparisons,
        links=link_map,
        where=where,
        statuses=statuses,
    )


def _done_values(batches: Batches, name: str, minus: str | None = None):
    """A streaming pass: ``name`` (minus ``minus``) of the ok and skipped rows, as float64
    arrays, non-finite values as NaN."""
    import pyarrow.compute as pc

    def values() -> Iterator[np.ndarray]:
        for b in batches(["status", name] + ([minus] if minus else [])):
            status = b.column("status")
            done = pc.fill_null(pc.is_in(status, pc.cast(np.array(DONE), status.type)), False)
            v = pc.filter(b.column(name), done).to_numpy(zero_copy_only=False).astype(np.float64)
            if minus:
                other = pc.filter(b.column(minus), done).to_numpy(zero_copy_only=False)
                v = v - other.astype(np.float64)
            yield np.nan_to_num(v, nan=np.nan, posinf=np.nan, neginf=np.nan)

    return values


def _plots(batches: Batches, summary: dict[str, Any]) -> tuple[list[str], bool]:
    """(the page's SVG plots, whether rows were scored against a reference)."""
    plots = []
    gain = histogram(_done_values(batches, "psnr", "input_psnr"))
    if gain:
        title = "PSNR gain per image (output − input, dB)"
        plots.append(svg_histogram(title, "dB gained", [("gain", *gain)]))
    noise = (("input", "input_noise"), ("output", "output_noise"))
    levels = [(n, *h) for n, c in noise if (h := histogram(_done_values(batches, c)))]
    if levels:
        title = "Estimated noise level per image (0–255)"
        plots.append(svg_histogram(title, "noise level σ", levels))
    change = histogram(_done_values(batches, "change"))
    if change:
        title = "Change per image: RMS of output − input (0–255)"
        plots.append(svg_histogram(title, "RMS change", [("change", *change)]))
    (mp, secs), (when, secs2) = _sample_times(batches)
    if when.size:
        since = "seconds since the first image finished"
        plots.append(
            svg_scatter("Time per image over the run", since, "s", when - when.min(), secs2)
        )
    plots.append(svg_scatter("Time per image by size", "megapixels", "s", mp, secs))
    nodes = summary.get("nodes") or {}
    plots.append(svg_bars("Images per node", {n[:12]: c for n, c in nodes.items()}))
    return plots, gain is not None


def _sample_times(
    batches: Callable[[list[str]], Iterator[Any]], n: int = 1500, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Up to ``n`` ok rows, a uniform sample (reservoir) of any report: ((megapixels, seconds),
    (finished, seconds)) — the second only for rows that record when they finished."""
    rng = np.random.default_rng(seed)
    sample: list[tuple[float, float, float]] = []
    seen = 0
    for b in batches(["status", "width", "height", "seconds", "finished"]):
        for r in b.to_pylist():
            if r["status"] != "ok" or r["seconds"] is None or not r["width"]:
                continue
            point = (
                r["width"] * r["height"] / 1e6,
                r["seconds"],
                math.nan if r["finished"] is None else r["finished"],
            )
            seen += 1
            if len(sample) < n:
                sample.append(point)
            else:
                j = int(rng.integers(seen))
                if j < n:
                    sample[j] = point
    a = np.asarray(sample, np.float64).reshape(-1, 3)
    timed = np.isfinite(a[:, 2])
    return (a[:, 0], a[:, 1]), (a[timed, 2], a[timed, 1])
