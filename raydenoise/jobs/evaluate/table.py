"""The results table: means over pairs, CSV cells, and the table as the terminal shows it."""

from __future__ import annotations

import csv
import io
import math

import numpy as np


def _mean(values: list[float]) -> float | None:
    """Mean of the finite values; None when there are none (never NaN in a table)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id"])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def format_table(table: dict[str, dict[str, float]], split: str) -> str:
    lines = [f"{split} split    PSNR (dB)      MSE      MAE     SSIM   s/image", "-" * 62]

    def f(v, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    for method, v in table.items():
        lines.append(
            f"{method:<14} {f(v['psnr'], 9, 2)} {f(v['mse'], 8, 5)} {f(v['mae'], 8, 5)} {f(v['ssim'], 8, 4)} "
            f"{f(v['seconds'], 8, 3)}"
        )
    return "\n".join(lines)
