"""What a finished run writes beside its model: metrics.csv and curves.png."""

from __future__ import annotations

import csv
import io
import math

from ...storage.jsonfile import json_safe


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _or_inf(value) -> float:
    return math.inf if value is None or not math.isfinite(value) else value


def metrics_csv(history: list[dict]) -> str:
    """One row per epoch; a metric with no value (no val split) is an empty cell, never NaN."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(json_safe(history))
    return buf.getvalue()


def _nan(value) -> float:
    return math.nan if value is None else value


def curves_png(history: list[dict], title: str) -> bytes:
    """Loss (train and val) and val PSNR per epoch, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    a.plot(epochs, [_nan(h.get("val_loss")) for h in history], "o-", label="val loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(
        epochs, [_nan(h.get("val_psnr")) for h in history], "o-", color="tab:green", label="model"
    )
    if history and history[-1].get("input_psnr") is not None:
        b.axhline(history[-1]["input_psnr"], ls="--", color="gray", label="noisy input")
    if any(h.get("synthetic_val_psnr") is not None for h in history):
        b.plot(epochs, [_nan(h.get("synthetic_val_psnr")) for h in history], "s-",
               color="tab:purple", label="model, synthetic val")  # fmt: skip
        b.axhline(_nan(history[-1].get("synthetic_input_psnr")), ls=":", color="tab:purple",
                  label="synthetic input")  # fmt: skip
    if history and history[-1].get("val_psnr") is None:
        b.text(
            0.5, 0.5, "no val split", ha="center", va="center", transform=b.transAxes, color="gray"
        )
    b.legend()
    b.set_xlabel("epoch")
    b.set_ylabel("val PSNR (dB)")
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
