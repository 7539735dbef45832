"""Per-image denoising reports: summary statistics, CSV/Parquet tables and an HTML page. No Ray.

A report row is a dict with ``key``, ``width``, ``height``, ``status``, ``error``, ``note``,
``seconds``, ``node`` (the Ray node id of the machine that processed the image) and, with a reference, ``psnr``, ``mse``, ``mae``, ``ssim`` of the output and
``input_psnr`` ... ``input_ssim`` of the input, all against the reference; ``input_noise`` and
``output_noise`` (the estimated noise level of the input and of the output, standard deviation
on the 0-255 scale, no reference needed; the output's from half as many patches,
``noise_level.REPORT_PATCHES``), ``change`` (the RMS difference of output and input,
0-255 scale), ``finished`` (Unix time the row was made) and ``sigma`` (the level a conditioned network was
given); ``output_bytes``,
``output_md5`` and ``output_tag`` (what a listing shows for the output: S3 ETag, local
modification time) let a rerun trust an unchanged output without reading it; ``input_bytes``,
``input_tag``, ``model`` and ``made_by`` record what made it (PROVENANCE). Statuses:

- ``ok``: denoised and written; ``skipped``: its output existed, was verified and kept;
- ``error``: this image failed (``error`` says why; the job went on);
- ``excluded``: not an input by rule (hidden file, an earlier report; ``note`` says which);
- ``not-done``: the job stopped (storage failure, Ctrl-C) before this image; a rerun does it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

METRICS = ("psnr", "mse", "mae", "ssim")
EXCLUDED, NOT_DONE = "excluded", "not-done"
ALL_METRICS = (*METRICS, *(f"input_{m}" for m in METRICS))
# Estimated levels (0-255 scale), summarized like metrics; ``change``: the RMS difference between
# output and input (0-255 scale), what the model removed or altered, with or without a reference.
NOISE = ("input_noise", "output_noise", "sigma", "change")
STATS = (*ALL_METRICS, *NOISE)
# What made an output (a rerun keeps it only when all of these still hold): the input's size and
# listed tag, the model as named and ``made_by``, the fingerprint of its weights and the options
# that change pixels (see denoise.made_by).
PROVENANCE = ("input_bytes", "input_tag", "model", "made_by")
COLUMNS = [
    "key",
    "width",
    "height",
    "status",
    "error",
    "note",
    "seconds",
    "node",
    *ALL_METRICS,
    *NOISE,
    "output_bytes",
    "output_md5",
    "output_tag",
    *PROVENANCE,
    "finished",
]
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("note", pa.string()),
        ("seconds", pa.float64()),
        ("node", pa.string()),
        *[(m, pa.float64()) for m in STATS],
        ("output_bytes", pa.int64()),
        ("output_md5", pa.string()),
        ("output_tag", pa.string()),
        ("input_bytes", pa.int64()),
        ("input_tag", pa.string()),
        ("model", pa.string()),
        ("made_by", pa.string()),
        (
            "finished",
            pa.float64(),
        ),  # when the row was made (Unix time): the report plots time per image over the run
    ]
)


def blank_row(key: str, **values: Any) -> dict[str, Any]:
    """A report row for ``key`` with every column None except ``values``."""
    return {**{c: None for c in COLUMNS}, "key": key, **values}


def table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> a table with the report schema, sorted by key; missing values become nulls."""
    rows = sorted(rows, key=lambda r: r["key"])
    cols = {c: [_clean(r.get(c)) for r in rows] for c in COLUMNS}
    return pa.table(cols, schema=SCHEMA)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> None:
    """Report rows to CSV text, streamed: the header, then one line per row."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])


def summarize(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """summarize_batches over rows held in memory."""
    t = table(rows)
    return summarize_batches(lambda columns: t.select(columns).to_batches(), seconds)


def summarize_batches(
    read: Callable[[list[str]], Iterable[pa.RecordBatch]], seconds: float
) -> dict[str, Any]:
    """Counts, failures, throughput (``ok`` rows) and mean/median/min/max of every metric over
    ``ok`` and ``skipped`` rows (a skipped row has metrics when its existing output was scored),
    from a report read a batch at a time (``read(columns)``, called once per pass): memory does
    not grow with the number of rows (the median is found by histogram passes, parts.median).

    Non-finite values (PSNR of a perfect output is inf) are left out of the statistics and
    counted under ``<metric>_infinite``.
    """
    from ..storage.parts import median

    counts: dict[str, int] = {}
    nodes: dict[str, int] = {}
    pixels = 0
    acc = {m: [0, 0, 0.0, math.inf, -math.inf] for m in STATS}  # count, finite, sum, min, max
    for b in read(["status", "width", "height", "node", *STATS]):
        status = b.column("status")
        for item in pc.value_counts(status).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
        ok = pc.fill_null(pc.equal(status, "ok"), False)
        area = pc.multiply(
            pc.cast(b.column("width"), pa.int64()), pc.cast(b.column("height"), pa.int64())
        )
        pixels += pc.sum(pc.filter(area, ok)).as_py() or 0
        handled = pc.fill_null(pc.is_in(status, pa.array(["ok", "skipped", "error"])), False)
        for item in pc.value_counts(pc.drop_null(pc.filter(b.column("node"), handled))).to_pylist():
            nodes[item["values"]] = nodes.get(item["values"], 0) + item["counts"]
        done = pc.fill_null(pc.is_in(status, pa.array(["ok", "skipped"])), False)
        for m in STATS:
            v = pc.drop_null(pc.filter(b.column(m), done)).to_numpy(zero_copy_only=False)
            fin = v[np.isfinite(v)]
            a = acc[m]
            a[0] += v.size
            a[1] += fin.size
            if fin.size:
                a[2] += float(fin.sum())
                a[3], a[4] = min(a[3], float(fin.min())), max(a[4], float(fin.max()))
    ok_n = counts.get("ok", 0)
    out: dict[str, Any] = {
        "count": sum(counts.values()),
        "ok": ok_n,
        "skipped": counts.get("skipped", 0),
        "failures": counts.get("error", 0),
        "excluded": counts.get(EXCLUDED, 0),
        "not_done": counts.get(NOT_DONE, 0),
        "seconds": round(seconds, 3),
        "images_per_s": ok_n / seconds if seconds > 0 else None,
        "megapixels_per_s": pixels / 1e6 / seconds if seconds > 0 else None,
        "metrics": {},
    }
    # images handled per Ray node (ok, skipped or failed)
    out["nodes"] = dict(sorted(nodes.items()))
    for m, (count, finite, total, lo, hi) in acc.items():
        if not count:
            continue

        def values(m=m):
            for b in read(["status", m]):
                done = pc.fill_null(
                    pc.is_in(b.column("status"), pa.array(["ok", "skipped"])), False
                )
                yield pc.drop_null(pc.filter(b.column(m), done)).to_numpy(zero_copy_only=False)

        out["metrics"][m] = {
            "mean": total / finite if finite else None,
            "median": median(values, int(finite), lo, hi) if finite else None,
            "min": lo if finite else None,
            "max": hi if finite else None,
            "count": count,
            "infinite": count - finite,
        }
    return out
