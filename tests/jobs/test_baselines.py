"""The classical baselines evaluate and bench/quality.py compare with, on colour and gray."""

import numpy as np
import pytest

from raydenoise.imaging.metrics import psnr
from raydenoise.jobs.evaluate.baselines import cbm3d, nl_means


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("method", [nl_means, cbm3d])
def test_each_baseline_denoises_colour_and_grayscale_photos(method, gray):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    clean = np.stack([128 + 60 * np.sin(x / 9 + c) * np.cos(y / 7) for c in range(3)], axis=-1)
    clean = clean.mean(axis=-1) if gray else clean
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).round().astype(np.uint8)
    out = method(noisy)
    assert out.shape == noisy.shape and out.dtype == np.uint8
    ref = clean.astype(np.float32) / 255
    assert psnr(out / 255.0, ref) > psnr(noisy / 255.0, ref) + 2.0
