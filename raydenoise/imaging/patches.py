"""Training batches from decoded images: random patches, augmentation, noise synthesized on the
fly, and a reproducible val set. No Ray here (``train.py`` wires it to Ray Train).

Randomness is explicit: every function takes a ``numpy.random.Generator`` or a seed, and
``epoch_rng`` derives the generators of one epoch on one worker from (seed, epoch, rank,
stream), so a run is reproducible from its ``--seed`` while every epoch and every step sees
different crops and noise.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, cast

import numpy as np

from .images import area_thumbnail
from .noise import NoiseSpec, degrade, degrade_with_level
from .noise_level import estimate_noise

# The val split is degraded with this seed, whatever --seed is, so val PSNR compares across
# epochs and runs (each image's noise depends only on this seed and the image's id).
VAL_SEED = 20261126
GRAY_FRACTION = 0.1  # share of synthesized training patches made grayscale (see synthesize_inputs)


def epoch_rng(seed: int, epoch: int, rank: int, stream: int) -> np.random.Generator:
    """The generator of one (seed, epoch, rank) for one purpose (0: crops, 1: noise)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, rank, stream])


def augment_pair(
    low: np.ndarray | None,
    high: np.ndarray,
    patch: int | None,
    rng: np.random.Generator,
    context: np.ndarray | None = None,
) -> tuple[Any, ...]:
    """Random crop to patch x patch (reflect-padding images smaller than that) plus random
    flips and 90-degree rotations; with patch None, only portrait -> landscape transposition.
    ``low`` may be None (clean-only training: the input is synthesized from ``high`` later).
    ``context`` (C, S, S), the whole image's thumbnail, gets the same flips and rotations
    (not the crop) and is returned third."""
    pair = [high] if low is None else [low, high]
    ctx = None if context is None else context.transpose(1, 2, 0)  # HWC, transformed like the pair
    if patch is None:
        if high.shape[0] > high.shape[1]:
            pair = [a.transpose(1, 0, 2) for a in pair]
            ctx = None if ctx is None else ctx.transpose(1, 0, 2)
        return _with_context((None, *pair) if low is None else tuple(pair), ctx, context)
    h, w = high.shape[:2]
    if h < patch or w < patch:
        pad = ((0, max(0, patch - h)), (0, max(0, patch - w)), (0, 0))
        pair = [np.pad(a, pad, mode="reflect" if min(h, w) > 1 else "edge") for a in pair]
        h, w = pair[0].shape[:2]
    top, left = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
    pair = [a[top : top + patch, left : left + patch] for a in pair]
    if ctx is not None:
        pair.append(ctx)
    if rng.random() < 0.5:
        pair = [a[:, ::-1] for a in pair]
    if rng.random() < 0.5:
        pair = [a[::-1] for a in pair]
    k = int(rng.integers(0, 4))
    pair = [np.ascontiguousarray(np.rot90(a, k)) for a in pair]
    if ctx is not None:
        ctx = pair.pop()
    return _with_context((None, *pair) if low is None else tuple(pair), ctx, context)


def _with_context(pair: tuple, ctx: np.ndarray | None, context: np.ndarray | None) -> tuple:
    if context is None or ctx is None:
        return pair
    return (*pair, np.ascontiguousarray(ctx.transpose(2, 0, 1)))


def synthesize_inputs(
    highs: Iterable[np.ndarray],
    specs: list[NoiseSpec],
    rng: np.random.Generator,
    gray_fraction: float = GRAY_FRACTION,
    levels: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
    """(clean, degraded, levels) patches: a fresh degraded input for each clean patch, one kind of
    ``specs`` and one draw of its ranges per patch (``gaussian:0-50`` gives every patch its own
    sigma), and each input's noise level (float32 (N,), 0-255 scale, see
    ``noise.degrade_with_level``). A ``gray_fraction`` of the patches become grayscale first,
    with the same noise in all three channels: that is what the model sees of a grayscale file
    (replicated to RGB), and a model trained on colour noise alone barely touches it (+1.4 dB at
    sigma 25, measured). ``levels=False`` (a network that takes no level): levels None, and none
    is measured; the patches are the same."""
    cleans, lows, found = [], [], []

    def one(clean: np.ndarray) -> np.ndarray:
        if not levels:
            return degrade(clean, specs, rng)
        low, level = degrade_with_level(clean, specs, rng)
        found.append(level)
        return low

    for h in highs:
        h = np.ascontiguousarray(h)
        if gray_fraction and rng.random() < gray_fraction:
            g = to_gray(h)[..., None]
            h, low = np.repeat(g, 3, axis=2), np.repeat(one(g), 3, axis=2)
        else:
            low = one(h)
        cleans.append(h)
        lows.append(low)
    return cleans, lows, np.asarray(found, dtype=np.float32) if levels else None


def batch_with_levels(
    lows: list[np.ndarray | None],
    highs: list[np.ndarray],
    specs: list[NoiseSpec] | None,
    rng: np.random.Generator,
    levels: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One batch: (low, high) stacked to a common size, and the levels when ``levels`` (else None).
    With ``specs`` the low side is synthesized from the clean one; otherwise ``lows`` are the pairs'."""
    if specs and any(
        low is not None for low in lows
    ):  # a mix: only the missing inputs are synthesized
        made = [i for i, low in enumerate(lows) if low is None]
        new_highs, new_lows, _ = synthesize_inputs(
            [highs[i] for i in made], specs, rng, levels=False
        )
        highs, lows = list(highs), list(lows)
        for i, h, low in zip(made, new_highs, new_lows):
            highs[i], lows[i] = h, low
        specs = None
    found = None
    if specs:
        highs, made_lows, found = synthesize_inputs(highs, specs, rng, levels=levels)
        return (*crop_to_common(made_lows, highs), found)
    pairs = cast("list[np.ndarray]", lows)  # without specs every input is a real one
    if levels:
        found = pair_levels(pairs, highs)
    return (*crop_to_common(pairs, highs), found)


def pair_levels(lows: list[np.ndarray], highs: list[np.ndarray]) -> np.ndarray:
    """The noise level of each paired input (``estimate_noise`` of input minus target), float32
    (N,): what a conditioned network is told when it trains on ingested pairs."""
    return np.asarray(
        [
            estimate_noise(lo.astype(np.float32) - hi.astype(np.float32))
            for lo, hi in zip(lows, highs)
        ],
        dtype=np.float32,
    )


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W) luma (ITU-R BT.601, as Pillow's "L" mode)."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def val_input(image_id: str, high: np.ndarray, specs: list[NoiseSpec]) -> np.ndarray:
    """The degraded val input of one clean image: the same for every epoch, rank and run."""
    return degrade(high, specs, np.random.default_rng([VAL_SEED, zlib.crc32(image_id.encode())]))


class MemoryPatches:
    """A worker's share of the train split, decoded once and held in memory, served as batches
    of random patches.

    An epoch has ``steps`` batches on every worker (DDP needs equal step counts): the images are
    visited in a fresh random order, ``patches_per_image`` random patches each, cycling when the
    worker's share is smaller than ``steps * batch_size``.
    """

    def __init__(
        self,
        images: list[tuple[np.ndarray | None, np.ndarray]],
        synthetic: list[np.ndarray] | None = None,
        synthetic_share: float = 0.0,
    ):
        if not images:
            raise ValueError("no images to train on")
        self.images = images
        # Clean images whose inputs are always synthesized (train --synthetic-data), drawn for a
        # ``synthetic_share`` of the patches.
        self.synthetic = synthetic or []
        self.synthetic_share = synthetic_share if self.synthetic else 0.0
        self._contexts: dict[
            tuple[int, int], np.ndarray
        ] = {}  # (image, size) -> a real input's thumbnail

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes + (0 if low is None else low.nbytes) for low, h in self.images) + sum(
            h.nbytes for h in self.synthetic
        )

    def batches(
        self,
        *,
        steps: int,
        batch_size: int,
        patch: int | None,
        seed: int,
        epoch: int,
        rank: int,
        specs: list[NoiseSpec] | None,
        levels: bool = True,
        context: int = 0,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """``steps`` batches of (low, high) uint8 arrays (N, P, P, 3) and the inputs' noise levels
        (float32 (N,); None with ``levels=False``); with ``specs`` the low side is synthesized
        from the clean patch (from the synthetic images only, when there are any).

        ``context`` > 0 (a global network): the third array is instead each input's whole-image
        thumbnail (float32 (N, 3, context, context), ``images.area_thumbnail``), taken before
        the crop as inference takes it; synthetic inputs are then made from the whole image."""
        crop_rng, noise_rng = epoch_rng(seed, epoch, rank, 0), epoch_rng(seed, epoch, rank, 1)
        need = steps * batch_size
        order = np.concatenate(
            [crop_rng.permutation(len(self.images)) for _ in range(-(-need // len(self.images)))]
        )[:need]
        synthesize_all = bool(specs) and not self.synthetic
        for step in range(steps):
            lows, highs, contexts = [], [], []
            for i in order[step * batch_size : (step + 1) * batch_size]:
                low, high = self.images[int(i)]
                if self.synthetic and crop_rng.random() < self.synthetic_share:
                    low, high = None, self.synthetic[int(crop_rng.integers(len(self.synthetic)))]
                elif synthesize_all:
                    low = None
                if context:
                    thumb: np.ndarray | None
                    if low is None:
                        low = degrade(high, specs or [], noise_rng)
                        thumb = area_thumbnail(low, context)
                    else:
                        thumb = self._contexts.get((int(i), context))
                        if thumb is None:
                            thumb = self._contexts[(int(i), context)] = area_thumbnail(low, context)
                    low, high, ctx = augment_pair(low, high, patch, crop_rng, thumb)
                    contexts.append(ctx)
                else:
                    low, high = augment_pair(low, high, patch, crop_rng)
                lows.append(low)
                highs.append(high)
            if context:
                yield (*crop_to_common(lows, highs), np.stack(contexts))
            else:
                yield batch_with_levels(lows, highs, specs, noise_rng, levels)


def crop_to_common(
    lows: list[np.ndarray], highs: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Stack images (possibly of different sizes) cropped to the smallest height and width."""
    h = min(a.shape[0] for a in highs)
    w = min(a.shape[1] for a in highs)
    return np.stack([a[:h, :w] for a in lows]), np.stack([a[:h, :w] for a in highs])


def steps_per_epoch(train_images: int, patches_per_image: int, world: int, batch_size: int) -> int:
    """Batches per worker per epoch: every image's patches once across all workers, rounded up."""
    return max(1, -(-(train_images * patches_per_image) // (world * batch_size)))


class _Done:
    pass


def prefetch(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``batches`` in a background thread, ``depth`` items ahead: cropping and noise
    synthesis overlap the model's step (torch releases the GIL while it computes). Stopping
    early (``break``) stops the thread; an exception in it is raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in batches:
                if not put(item):
                    return
            put(_Done())
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=work, daemon=True, name="raydenoise-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
