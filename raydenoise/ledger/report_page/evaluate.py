"""evaluate's report.html: the methods side by side per image. No Ray."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from ...console import plural
from .crops import Comparison
from .html import TABLE_ROWS, render_page
from .plots import BINS, histogram, svg_bars, svg_histogram

# ----------------------------------------------------------------------------- evaluate's page


def evaluate_page(
    *,
    title: str,
    table: dict[str, dict[str, Any]],
    per_image: dict[str, dict[str, float]],
    facts: dict[str, Any],
    comparisons: list[Comparison],
    crop_names: tuple[str, ...],
) -> str:
    """evaluate's report.html: the methods table, per-image PSNR of every method side by side
    (``per_image``: id -> {method: PSNR}), plots and a few images' outputs at 1:1."""
    methods = list(table)
    baselines = [m for m in methods if m != "model" and m != "noisy input"] or [
        m for m in methods if m != "model"
    ]
    best_other = {
        i: max((v[m] for m in baselines if m in v and math.isfinite(v[m])), default=math.nan)
        for i, v in per_image.items()
    }
    gains = np.array(
        [per_image[i].get("model", math.nan) - best_other[i] for i in per_image], np.float64
    )
    wins = int(np.sum(gains > 0))
    n = len(per_image)
    means = ", ".join(
        f"{m} {table[m]['psnr']:.2f} dB" for m in methods if table[m].get("psnr") is not None
    )
    words = f"{plural(n, 'image')} scored by {plural(len(methods), 'method')}: mean PSNR {means}."
    if baselines and np.isfinite(gains).any():
        words += (
            f" The model beats the best of {', '.join(baselines)} on {wins:,} of {int(np.isfinite(gains).sum()):,} "
            f"images (median gain {np.nanmedian(gains):+.2f} dB)."
        )
    plots = _plots(table, per_image, gains)
    columns = ["key", "status", *[f"psnr {m}" for m in methods], "gain over best baseline"]
    rows = [
        [i, "ok", *[per_image[i].get(m) for m in methods], float(gains[k])]
        for k, i in enumerate(per_image)
    ]
    order = np.argsort(np.nan_to_num(gains, nan=0.0))
    if len(rows) > TABLE_ROWS:  # the worst and best gains
        keep = sorted(set(order[: TABLE_ROWS // 2]) | set(order[-TABLE_ROWS // 2 :]))
        rows = [rows[k] for k in keep]
    extra = _methods_table(table)
    return render_page(
        title=title,
        summary_words=words,
        facts=facts,
        plots=plots,
        columns=columns,
        rows=rows,
        total_rows=n,
        comparisons=comparisons,
        links={},
        where={"input": "", "output": ""},
        statuses=["ok"],
        crop_names=crop_names,
        extra_html=extra,
    )


def _plots(table: dict[str, dict[str, Any]], per_image: dict[str, dict[str, float]],
           gains: np.ndarray) -> list[str]:  # fmt: skip
    """PSNR per image by method (three methods per plot), the model's gain over the best
    baseline, and the mean time per method."""
    methods = list(table)
    series = []
    finite = [v for row in per_image.values() for v in row.values() if math.isfinite(v)]
    if finite:
        edges = np.linspace(min(finite), max(finite) + 1e-9, BINS + 1)
        for m in methods:
            vals = [row[m] for row in per_image.values() if m in row and math.isfinite(row[m])]
            series.append((m, np.histogram(np.array(vals), edges)[0], edges))
    plots = [svg_histogram("PSNR per image, by method", "PSNR (dB)", series[:3])]
    plots += [svg_histogram(f"PSNR per image: {s[0]}", "PSNR (dB)", [s]) for s in series[3:]]
    g = histogram(lambda: iter([gains]))
    if g:
        title = "Model minus the best baseline, per image"
        plots.append(svg_histogram(title, "dB", [("gain", *g)]))
    ms = {m: round(1000 * (table[m].get("seconds") or 0)) for m in methods}
    plots.append(svg_bars("Mean seconds per image (x1000 = ms)", ms))
    return plots


def _methods_table(table: dict[str, dict[str, Any]]) -> str:
    cells = (("psnr", ".2f"), ("ssim", ".3f"), ("mae", ".4f"), ("seconds", ".3f"))
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td>"
        + "".join(f"<td>{'–' if v.get(k) is None else format(v[k], fmt)}</td>" for k, fmt in cells)
        + f"<td>{v.get('images', 0)}</td></tr>"
        for m, v in table.items()
    )
    return ("<h2>Methods</h2><table><tr><th>method</th><th>PSNR (dB)</th><th>SSIM</th>"
            f"<th>MAE</th><th>s/image</th><th>images</th></tr>{rows}</table>")  # fmt: skip


def extremes(per_image: dict[str, dict[str, float]], n: int = 2) -> list[tuple[str, str]]:
    """(label, id) of the ``n`` images where the model gains most over the best other method,
    and the ``n`` where it gains least: the ones worth looking at."""
    scored = []
    for i, row in per_image.items():
        others = [v for m, v in row.items() if m != "model" and math.isfinite(v)]
        if "model" in row and math.isfinite(row["model"]) and others:
            scored.append((row["model"] - max(others), i))
    scored.sort()
    best = [("largest gain", i) for _, i in reversed(scored[-n:])]
    worst = [("smallest gain", i) for _, i in scored[:n] if i not in {b for _, b in best}]
    return best + worst
