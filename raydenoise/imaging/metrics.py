"""Image quality metrics on images scaled to [0, 1]. No Ray here.

All functions take float arrays of shape (H, W, 3) or (H, W) with values in [0, 1] (8-bit
images divided by 255), compare ``pred`` to the reference ``target``, and return a Python float.
PSNR uses a data range of 1.0 and is ``inf`` for identical images.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("psnr", "mse", "mae", "ssim")


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {target.shape}")
    return np.asarray(pred, np.float64), np.asarray(target, np.float64)


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = _check(pred, target)
    return float(np.mean((p - t) ** 2))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = _check(pred, target)
    return float(np.mean(np.abs(p - t)))


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, data range 1.0."""
    err = mse(pred, target)
    return math.inf if err == 0 else 10.0 * math.log10(1.0 / err)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity (scikit-image, Gaussian-free 7x7 window, data range 1.0), mean
    over channels for color images."""
    from skimage.metrics import structural_similarity  # SciPy's ndimage: 0.4 s, on first use

    p, t = _check(pred, target)
    if min(p.shape[:2]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {p.shape[:2]}")
    return float(
        structural_similarity(p, t, data_range=1.0, channel_axis=-1 if p.ndim == 3 else None)
    )


def all_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``{"psnr", "mse", "mae", "ssim"}`` of pred against target."""
    return {
        "psnr": psnr(pred, target),
        "mse": mse(pred, target),
        "mae": mae(pred, target),
        "ssim": ssim(pred, target),
    }
