"""The classical baselines: Non-Local Means, CBM3D (the noise level estimated per image where none
is given) and a gamma curve for low light.
"""

from __future__ import annotations

import math

import numpy as np


def noise_sigma(x: np.ndarray) -> float:
    """The noise level of a float (H, W[, C]) image in [0, 1], on the same scale: the estimate
    raydenoise gives its own conditioned models (``noise_level.estimate_sigma``), so the
    classical baselines get the same information about each image."""
    from ...imaging.noise_level import estimate_sigma

    return estimate_sigma(x * 255.0) / 255.0


def nl_means(noisy: np.ndarray) -> np.ndarray:
    """scikit-image Non-Local Means on a uint8 RGB (or grayscale (H, W)) image -> the same."""
    from skimage.restoration import denoise_nl_means

    x = noisy.astype(np.float32) / 255
    sigma = noise_sigma(x)
    y = denoise_nl_means(
        x,
        h=0.8 * sigma,
        sigma=sigma,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=-1 if x.ndim == 3 else None,
    )
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def cbm3d(noisy: np.ndarray) -> np.ndarray:
    """CBM3D (``bm3d`` package) on a uint8 RGB image -> uint8 RGB, sigma estimated per image;
    BM3D on a grayscale (H, W) one."""
    import bm3d

    x = noisy.astype(np.float32) / 255
    sigma = max(noise_sigma(x), 1e-3)
    y = bm3d.bm3d_rgb(x, sigma_psd=sigma) if x.ndim == 3 else bm3d.bm3d(x, sigma_psd=sigma)
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def gamma_curve(low: np.ndarray, target: float = 0.45) -> np.ndarray:
    """x ** g with g chosen per image so the mean becomes ``target`` (uint8 RGB -> uint8 RGB)."""
    x = low.astype(np.float64) / 255
    mean = float(np.clip(x.mean(), 1e-4, 0.9999))
    g = math.log(target) / math.log(mean)
    return np.clip(np.rint(np.power(x, g) * 255), 0, 255).astype(np.uint8)


BASELINE_FNS = {"identity": lambda a: a, "nlm": nl_means, "bm3d": cbm3d, "gamma": gamma_curve}
