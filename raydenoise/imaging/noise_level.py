"""How noisy is a photo? A blind estimate of its noise level, on the 0-255 scale. No Ray, no torch.

The estimator is the weak-texture patch PCA of Liu, Tanaka and Okutomi ("Single-image noise
level estimation for blind denoising", IEEE TIP 2013): the smallest eigenvalue of the covariance
of 7x7 patches is the noise variance when the patches hold no structure in some direction, so
the patches are narrowed to those whose gradient energy pure noise of the current estimate
explains, and the estimate is refined on them until it settles.

It runs per colour channel and combines the channel variances, so a grayscale photo stored as
three equal channels reads the same as its one channel. Patches that touch 0 or 255 are left out
while enough others remain: clipping hides noise there and would bias a noisy photo low. For
white Gaussian noise the estimate is the true sigma; for noise correlated between neighbouring
pixels (demosaicked camera noise, JPEG) it is the level of the noise's finest-grained part,
which is what a denoiser trained on ``estimate_sigma(noisy - clean)`` levels expects.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

PATCH = 7  # pixels per side of the patches whose covariance is analysed
MAX_PATCHES = 20_000  # per channel: larger images are sampled on a coarser grid (the estimate needs far fewer)
REPORT_PATCHES = 10_000  # per channel for a level that is only reported (estimate_sigma's doc)
MIN_PATCHES = 500  # below this many unclipped patches, clipped ones are used too
NOISE_PATCHES = (
    2_500  # per channel for estimate_noise (a training patch's noise): fast, within a few %
)
MAX_STRENGTH = 4.0  # --strength: beyond 4x the estimated level a conditioned network only blurs
MAX_SIGMA = 255.0  # --sigma, on the 0-255 scale
MAX_ROUNDS = 6  # of weak-texture selection (it settles in 2-4)


def estimate_sigma(image: np.ndarray, patches: int = MAX_PATCHES) -> float:
    """The noise level of ``image`` (uint8, uint16 or float on the 0-255 scale, (H, W) or (H, W, C)) as
    the standard deviation of its noise on the 0-255 scale; 0.0 for an image too small to hold
    a patch (under 7 x 7 pixels). ValueError for an array that is not 2-D or 3-D.

    Calibrated for white noise (the estimate is the true sigma within a few percent on BSDS
    photos from sigma 5 to 50). Noise that neighbouring pixels share (a camera's demosaicking,
    JPEG) reads lower than its per-pixel spread: the estimator sees its finest-grained part only.
    A conditioned denoiser is trained on the level this estimator reads of each training noise
    (``estimate_noise``), so the two agree.

    ``patches`` (per channel) trades precision for time: ``REPORT_PATCHES`` takes half the
    default's time and reads within 3.5 % of it (0.2 on the 0-255 scale for a clean photo; 60
    noisy bsds500/train photos, sigma 0-50), enough for a figure that is only reported (denoise's
    residual level of each output), not for the level a network is given."""
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    if image.dtype == np.uint16:  # a 16-bit image, on the same 0-255 scale
        image = image.astype(np.float32) / 257.0
    with _one_blas_thread():
        return _image_level(image, patches)


def estimate_noise(noise: np.ndarray) -> float:
    """The level ``estimate_sigma`` reads of a photo whose noise is ``noise`` (float, (H, W) or
    (H, W, C), the noisy photo minus the clean one, 0-255 scale), computed from the noise alone:
    it has no texture to leave out, so one PCA per channel on a sample of patches suffices
    (training calls it for every patch whose level is not a known Gaussian sigma)."""
    with _one_blas_thread():
        return _noise_level(noise)


def _one_blas_thread():
    """The covariance products and eigenvalues on one BLAS thread: matrices of 49 x 49 gain
    nothing from more, and on a machine whose cores are busy OpenBLAS's waiting threads made one
    estimate take 7-12 s instead of 0.2 (numpy's BLAS uses every core outside Ray's workers)."""
    return _blas_threads().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=1)
def _blas_threads():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _planes(image: np.ndarray) -> list[np.ndarray]:
    return [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[2])]


def _image_level(image: np.ndarray, patches: int) -> float:
    return _sigma([_plane_variance(p, patches) for p in _planes(image)])


def _noise_level(noise: np.ndarray) -> float:
    variances = []
    for plane in _planes(noise):
        cols = _patches(plane, max_patches=NOISE_PATCHES)
        if cols is not None and len(cols) > 2 * PATCH * PATCH:
            variances.append(_smallest_variance(cols))
    return _sigma(variances)


def _sigma(variances: Sequence[float | None]) -> float:
    """The noise level (standard deviation) of the channels' variances; 0.0 when none was measured."""
    known = [v for v in variances if v is not None]
    return math.sqrt(max(float(np.mean(known)), 0.0)) if known else 0.0


def _patches(plane: np.ndarray, max_patches: int = MAX_PATCHES) -> np.ndarray | None:
    """Every PATCH x PATCH window of ``plane`` on a grid as fine as keeps at most ``max_patches``
    windows, flattened, as float32; None for a plane under one patch. Only the sampled windows
    are copied: the cost does not grow with the image."""
    h, w = plane.shape
    if h < PATCH or w < PATCH:
        return None
    step = max(1, math.ceil(math.sqrt((h - PATCH + 1) * (w - PATCH + 1) / max_patches)))
    view = np.lib.stride_tricks.sliding_window_view(plane, (PATCH, PATCH))[::step, ::step]
    return view.reshape(-1, PATCH * PATCH).astype(np.float32)


def _plane_variance(plane: np.ndarray, patches: int) -> float | None:
    cols = _patches(plane, patches)
    if cols is None:
        return None
    texture = _gradient_energy(cols)
    clipped = (cols.min(axis=1) <= 0.0) | (cols.max(axis=1) >= 255.0)
    if (~clipped).sum() >= MIN_PATCHES:
        cols, texture = cols[~clipped], texture[~clipped]
    if len(cols) <= PATCH * PATCH:
        return 0.0
    variance = _smallest_variance(cols)
    means = cols @ np.full(PATCH * PATCH, 1.0 / (PATCH * PATCH), cols.dtype)  # BLAS, not a reduce
    subset = _SubsetCovariance(cols)
    for _ in range(MAX_ROUNDS):
        weak = texture < variance * TEXTURE_THRESHOLD
        # Noise near black or white is partly clipped away: use patches two sigmas clear of both.
        margin = 2.0 * math.sqrt(variance)
        clear = weak & (means > margin) & (means < 255.0 - margin)
        weak = clear if clear.sum() > 2 * PATCH * PATCH else weak
        if weak.sum() <= 2 * PATCH * PATCH:
            break
        update = subset.smallest_variance(weak)
        if abs(update - variance) <= 1e-3 * max(variance, 1e-6):
            variance = update
            break
        variance = update
    return variance


def _gradient_energy(cols: np.ndarray) -> np.ndarray:
    """For every flattened PATCH x PATCH window, the sum of its squared horizontal and vertical
    neighbour differences (computed on the sampled windows alone). On the flat rows: a
    horizontal neighbour is the next element but across a row's end, a vertical one PATCH
    elements on; dot products instead of square-then-sum (a third of the time)."""
    across = cols[:, 1:] - cols[:, :-1]
    across[:, PATCH - 1 :: PATCH] = 0.0  # from a row's last pixel to the next row's first
    down = cols[:, PATCH:] - cols[:, :-PATCH]
    return np.einsum("ij,ij->i", across, across) + np.einsum("ij,ij->i", down, down)


class _SubsetCovariance:
    """The smallest-eigenvalue variance (``_smallest_variance``) of a changing subset of the rows
    of ``cols``. Once the weak-texture selection settles, a round changes few patches, so the
    covariance is updated by the rows that enter and leave (float64 sums about a fixed centre)
    instead of recomputed from every selected row; a subset that changed by more than a quarter
    is computed afresh. The same value to float32's rounding (within 1e-4 on photos from clean
    to sigma 15); an estimate of a 400 x 600 photo takes ~22 % less time (47 -> 37 ms)."""

    def __init__(self, cols: np.ndarray):
        self.cols = cols
        self.mask: np.ndarray | None = None
        width = cols.shape[1]
        self.centre = np.zeros(width)  # of the rows last computed afresh
        self.gram = np.zeros((width, width))  # sum of outer products about the centre
        self.total = np.zeros(width)  # sum of the rows minus the centre

    def smallest_variance(self, mask: np.ndarray) -> float:
        n = int(mask.sum())
        if self.mask is not None:
            enter, leave = mask & ~self.mask, self.mask & ~mask
            if int(enter.sum() + leave.sum()) * 4 <= n:
                for rows, sign in ((enter, 1.0), (leave, -1.0)):
                    x = self.cols[rows].astype(np.float64) - self.centre
                    self.gram += sign * (x.T @ x)
                    self.total += sign * x.sum(axis=0)
                self.mask = mask
                return self._variance(n)
        self.centre, self.gram = _centred_gram(self.cols[mask])
        self.total[:] = 0.0  # the rows' own mean is the centre
        self.mask = mask
        return self._variance(n)

    def _variance(self, n: int) -> float:
        cov = (self.gram - np.outer(self.total, self.total) / n) / (n - 1)
        return _noise_variance(cov, n, self.cols.shape[1])


def _smallest_variance(cols: np.ndarray) -> float:
    """The noise variance of the patches ``cols`` (one per row): see _noise_variance."""
    _, gram = _centred_gram(cols)
    return _noise_variance(gram / (len(cols) - 1), len(cols), cols.shape[1])


def _centred_gram(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the rows' mean, the sum of the outer products of the rows minus it), in float64."""
    # the mean as a BLAS product: 5x numpy's float64 mean, and the covariance does not depend on
    # the centre to within float32's rounding (results equal to numpy's mean on 180 planes)
    centre = (np.ones(len(rows), rows.dtype) @ rows) / len(rows)
    x = rows - centre
    # float32 products (SGEMM, twice as fast): their rounding moves the result by far less than 1%
    return centre.astype(np.float64), (x.T @ x).astype(np.float64)


def _noise_variance(cov: np.ndarray, n: int, r: int) -> float:
    """The noise variance that explains the smallest eigenvalue of the covariance ``cov`` of n
    patches of r pixels: a finite sample spreads pure noise's eigenvalues down to
    sigma^2 (1 - sqrt(r / n))^2 (Marchenko-Pastur), so the smallest is scaled back up by that."""
    smallest = max(float(np.linalg.eigvalsh(cov)[0]), 0.0)
    return smallest / (1.0 - math.sqrt(r / n)) ** 2


# A patch of pure noise with variance 1 has a gradient energy (sum of squared horizontal and
# vertical differences) of about a gamma(r/2, 2 tr / r) variable, r = PATCH**2 = 49 pixels and
# tr = 4 PATCH (PATCH - 1) = 168 difference terms; a patch above its 99th percentile has texture.
# The percentile, scipy.stats.gamma.ppf(0.99, a=24.5, scale=336/49), written out: importing
# scipy.stats costs every worker 0.75 s before its first image (tests/imaging/test_noise_level.py
# checks the number against SciPy).
TEXTURE_THRESHOLD = 256.8667690576394


def strength_problem(strength: float, sigma: float | None) -> str | None:
    """What is wrong with a --strength / --sigma pair (None when both are in range)."""
    if not (math.isfinite(strength) and 0 <= strength <= MAX_STRENGTH):
        return f"--strength must be a number from 0 to {MAX_STRENGTH:g}, not {strength}"
    if sigma is not None and not (math.isfinite(sigma) and 0 <= sigma <= MAX_SIGMA):
        return (
            f"--sigma must be a noise level from 0 to {MAX_SIGMA:g} on the 0-255 scale, not {sigma}"
        )
    if sigma is not None and strength != 1:
        return (
            "give --strength (a multiple of the estimated noise level) or --sigma (a fixed "
            "level), not both"
        )
    return None


BLIND_SIGMA = (
    "--sigma needs a model conditioned on the noise level (builtin:denoise, or a swift-cond you "
    "trained); {model} is blind: use --strength to weaken or strengthen it"
)
