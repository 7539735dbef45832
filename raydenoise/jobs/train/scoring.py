"""The loss, the val scores (PSNR, SSIM) across workers, the learning-rate schedule and the EMA of
the weights.
"""

from __future__ import annotations

import math

import numpy as np

from .config import LOSSES, TrainConfig
from .data import to_tensors


def loss_fn(name: str):
    """The training loss called ``name`` (one of config.LOSSES)."""
    import torch
    import torch.nn.functional as F

    losses = {
        "bce": lambda pred, target: F.binary_cross_entropy(pred.clamp(1e-7, 1 - 1e-7), target),
        "l1": F.l1_loss,
        "charbonnier": lambda pred, target: torch.sqrt((pred - target) ** 2 + 1e-6).mean(),
        "mse": F.mse_loss,  # mean squared error: what PSNR measures
    }
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}")
    return losses[name]


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def evaluate(model, items, loss_fn, device) -> dict[str, float | None]:
    """Loss, PSNR, MSE, MAE and SSIM over this rank's share of the val split (``items``: its
    (low, high) uint8 images) on full images, summed across ranks (exact means, no image
    dropped or counted twice). A network conditioned on the noise level gets the level
    estimated from each input, as ``denoise`` gives it by default. ``model=None`` scores the noisy input itself (the baseline every
    model must beat)."""
    import torch

    from ...imaging.metrics import all_metrics
    from ...imaging.noise_level import estimate_sigma
    from ...models.architectures import is_conditioned

    sums = np.zeros(6)  # count, loss, psnr, mse, mae, ssim
    if model is not None:
        model.eval()
    with torch.no_grad():
        for low, high in items:
            x, y = (t.to(device) for t in to_tensors(low[None], high[None]))
            if model is None:
                pred = x
            elif is_conditioned(
                model
            ):  # blind, as users run it: the level estimated from the input
                pred = model(x, torch.tensor([estimate_sigma(low)], device=device)).clamp(0, 1)
            else:
                pred = model(x).clamp(0, 1)
            loss = float(loss_fn(pred, y))
            p = pred[0].permute(1, 2, 0).float().cpu().numpy()
            m = all_metrics(p, high.astype(np.float32) / 255.0)
            sums += [1, loss, min(m["psnr"], 100.0), m["mse"], m["mae"], m["ssim"]]
    total = _all_reduce_sum(sums.tolist(), device)
    keys = ("val_loss", "val_psnr", "val_mse", "val_mae", "val_ssim")
    out: dict[str, float | None] = {"val_images": int(total[0])}
    for k, v in zip(
        keys, total[1:]
    ):  # no val images: no metric (None), never a 0 that reads as a score
        out[k] = v / total[0] if total[0] else None
    return out


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0..1 of the run): constant, or cosine down to 1%."""
    if cfg.schedule != "cosine":
        return cfg.lr
    low = cfg.lr * 0.01
    return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _num(value, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def format_metrics(m: dict) -> str:
    """One line of an epoch's metrics; val metrics show '-' when there is no val split."""
    line = (
        f"train_loss {_num(m.get('train_loss'), '.4f')}  val_loss {_num(m.get('val_loss'), '.4f')}  "
        f"val_psnr {_num(m.get('val_psnr'), '.2f', ' dB')}  val_ssim {_num(m.get('val_ssim'), '.3f')}"
    )
    if "synthetic_val_psnr" in m:  # --synthetic-data's own val split
        line += f"  synthetic_val_psnr {_num(m['synthetic_val_psnr'], '.2f', ' dB')}"
    return line


def _update_ema(ema, model, decay: float) -> None:
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)
