"""Running a trained model on whole images of any size, optionally in overlapping tiles. No Ray.

Tiling is exact rather than blended: each tile is run with a margin of context at least as wide
as the network's receptive field, on a grid aligned to the network's downsampling stride, and
only the tile's own region is kept. A pixel's output then depends on exactly the same input
pixels as in a single pass, so tiled and untiled outputs agree to float rounding (~1e-6).

Memory: a forward pass needs about ``bytes_per_pixel_per_width * width`` bytes per input
pixel (``networks.NETWORKS``) (measured on CPU under ``inference_mode``: unet 800 B/px, swift 490 B/px and seed-ae
260 B/px at width 32). Without an explicit ``tile``, an image whose pass would need more than the Denoiser's
``memory_budget`` is tiled automatically with the largest tiles that fit. Tiles are converted
from and to uint8 one at a time, so beyond the pass itself an image costs ~2 bytes per sample.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections import defaultdict
from typing import Any

import numpy as np

from ..imaging.images import MIN_TILE, area_thumbnail
from ..imaging.noise_level import BLIND_SIGMA, estimate_sigma, strength_problem

# torch is imported where a torch network runs (engines.TorchEngine): an actor running an ONNX
# graph with ONNX Runtime never loads it.

GiB = 1 << 30


class NonFiniteOutput(ValueError):
    """The model produced NaN or Inf (diverged weights, or an overflow on this input)."""


def default_memory_budget(cpu_share: float = 1.0) -> int:
    """Bytes one model actor may use for a forward pass: half of this machine's memory, split
    by the actor's share of the CPUs (``cpu_share`` CPUs out of all), between 0.5 and 2 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * GiB
    share = max(cpu_share, 0.01) / max(os.cpu_count() or 1, 1)
    return int(min(2 * GiB, max(GiB // 2, 0.5 * total * min(share, 1.0))))


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside the block, as one model actor per CPU runs it (for timing a
    sample on the driver); the thread count is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_strength(strength: float, sigma: float | None, conditioned: bool) -> None:
    """ValueError naming the option when ``strength``/``sigma`` are out of range, or when
    ``sigma`` is given for a blind network (it has no level input to give it to)."""
    problem = strength_problem(strength, sigma)
    if problem:
        raise ValueError(problem)
    if sigma is not None and not conditioned:
        raise ValueError(BLIND_SIGMA.format(model="this model"))


class Denoiser:
    """Callable: uint8 (or 16-bit uint16) image (H, W, 3) or (H, W) -> an image of the same
    shape and type.

    ``model``: a torch network (raydenoise's own; ``model_name`` its architecture, ``device``
    where it runs) or an engine (``engines.OrtEngine`` for an ONNX graph run by ONNX Runtime,
    ``engines.TorchEngine``): everything below is the same for both.

    Strength: a network conditioned on the noise level (``swift-cond``) is given, per image,
    ``sigma`` when set, else ``strength`` times the level estimated from the whole image
    (``noise_level.estimate_sigma``; tiles share it, so tiling stays exact). A blind network's
    output is blended with the input: ``input + strength * (output - input)``. Strength 0 (or
    sigma 0) returns the input unchanged, bit for bit, without running the network.

    ``tile`` (pixels, rounded down to a multiple of the network's stride, 4 or 16, and at
    least MIN_TILE; None = automatic)
    bounds the size of one forward pass. With ``tile=None`` an image is processed whole unless
    its pass would exceed ``memory_budget`` bytes (default: ``default_memory_budget()``), then in
    the largest tiles that fit. Grayscale inputs are replicated to RGB for the model and the
    output is averaged back to one channel. Raises NonFiniteOutput when the model's output
    contains NaN or Inf, instead of writing a black or garbage image.

    ``tta``: self-ensemble, the mean of the 8 flips and 90-degree rotations of each image,
    each transformed back (8x the cost, as BasicSR and KAIR offer it); each turned image is
    tiled as a whole image of its shape, so tiling stays exact (the image is then held as
    float32, 12 bytes per pixel, twice).

    A global network (``swift-global``: ``info.context`` > 0) is given, beside every tile, the
    thumbnail of the whole image (``images.area_thumbnail``), taken once per image, so tiled
    and untiled outputs stay equal.
    """

    def __init__(
        self,
        model: Any,
        model_name: str | None = None,
        device: str = "cpu",
        tile: int | None = None,
        width: int | None = None,
        memory_budget: int | None = None,
        strength: float = 1.0,
        sigma: float | None = None,
        tta: bool = False,
    ):
        from .engines import TorchEngine

        self.engine = (
            model
            if hasattr(model, "run") and hasattr(model, "info")
            else TorchEngine(model, model_name or "", device, width)
        )
        info = self.engine.info
        check_strength(strength, sigma, info.conditioned)
        self.conditioned = info.conditioned
        self.context = info.context
        self.strength, self.sigma, self.tta = float(strength), sigma, tta
        self.device = self.engine.device
        self.model = getattr(
            self.engine, "model", None
        )  # the torch network (None for an ONNX graph)
        self.name = info.name
        self.margin, self.stride = info.margin, info.multiple
        if tile is not None and tile < MIN_TILE:
            raise ValueError(f"tile must be at least {MIN_TILE} pixels, got {tile}")
        self.tile = None if tile is None else max(MIN_TILE, tile - tile % self.stride)
        self.memory_budget = memory_budget or default_memory_budget()

    def _forward_bytes(self, h: int, w: int) -> int:
        return self.engine.info.bytes_per_pixel * h * w

    def tile_for(self, h: int, w: int) -> int | None:
        """The tile size used for an h x w image: the explicit one, else None when the whole
        image fits the memory budget, else the largest multiple of the stride whose tile plus
        margins fits it."""
        if self.tile is not None:
            return self.tile
        if self._forward_bytes(h, w) <= self.memory_budget:
            return None
        side = int(math.sqrt(self.memory_budget / self._forward_bytes(1, 1))) - 2 * self.margin
        return max(MIN_TILE, side - side % self.stride)

    def pass_bytes(self, h: int, w: int) -> int:
        """Estimated peak memory of the largest forward pass for an h x w image: the whole image,
        or one tile with its margins."""
        t = self.tile_for(h, w)
        if t is None:
            return self._forward_bytes(h, w)
        return self._forward_bytes(min(h, t) + 2 * self.margin, min(w, t) + 2 * self.margin)

    @property
    def passthrough(self) -> bool:
        """Strength 0 (or sigma 0): every image comes back as it went in."""
        return self.sigma == 0 if self.sigma is not None else self.strength == 0

    def level_for(self, measured: float) -> float:
        """The level given to the network for an image whose estimated noise level is ``measured``."""
        return self.sigma if self.sigma is not None else self.strength * measured

    def _forward(
        self, x: np.ndarray, level: float | None = None, context: np.ndarray | None = None
    ) -> np.ndarray:
        """One pass of the engine over float32 NHWC in [0, 1]. ``context``: the whole images'
        thumbnails (N, 3, S, S) for a global network (taken from ``x`` when None)."""
        levels = np.full(x.shape[0], float(level or 0.0), np.float32) if self.conditioned else None
        if self.context and context is None:
            context = np.stack([area_thumbnail(img, self.context) for img in x])
        y = np.asarray(self.engine.run(np.ascontiguousarray(x, dtype=np.float32), levels, context))
        if not np.isfinite(y).all():
            raise NonFiniteOutput(
                "the model produced NaN/Inf values (diverged weights, or an overflow on this image)"
            )
        return np.clip(y, 0.0, 1.0)

    def run_array(self, x: np.ndarray, level: float | None = None) -> np.ndarray:
        """float32 NHWC in [0, 1] -> same, tiled when the image is larger than the tile size.
        ``level``: the noise level (0-255) a conditioned network is given for every image of
        the batch (None: each image's own estimate, times the strength)."""
        if self.conditioned and level is None:  # each image its own estimate
            if x.shape[0] > 1:
                return np.concatenate([self.run_array(x[i : i + 1]) for i in range(x.shape[0])])
            if self.passthrough:
                return np.array(x, np.float32)
            level = self.level_for(estimate_sigma(x[0] * 255.0))
        context = (
            np.stack([area_thumbnail(img, self.context) for img in x]) if self.context else None
        )
        if not self.tta:
            return self._run_whole(x, level, context)
        # Self-ensemble over whole images: each of the 8 turned images is run (and tiled) as an
        # image of its own shape, so tiling stays exact whatever the size.
        y = np.zeros(x.shape, np.float32)
        for k in range(4):
            for flip in (False, True):
                t = np.rot90(x, k, axes=(1, 2))
                t = np.ascontiguousarray(t[:, :, ::-1] if flip else t)
                c = None
                if context is not None:  # the thumbnail turns with the image
                    c = np.rot90(context, k, axes=(2, 3))
                    c = np.ascontiguousarray(c[..., ::-1] if flip else c)
                out = self._run_whole(t, level, c)
                out = out[:, :, ::-1] if flip else out
                y += np.rot90(out, -k, axes=(1, 2))
        return y / 8.0

    def _run_whole(
        self, x: np.ndarray, level: float | None, context: np.ndarray | None
    ) -> np.ndarray:
        h, w = x.shape[1:3]
        t = self.tile_for(h, w)
        if t is None or (h <= t and w <= t):
            return self._forward(x, level, context)
        out = np.empty(x.shape, np.float32)
        for (y0, y1, x0, x1), (ys, ye, xs, xe) in self._grid(h, w, t):
            pred = self._forward(x[:, ys:ye, xs:xe], level, context)
            out[:, y0:y1, x0:x1] = pred[:, y0 - ys : y1 - ys, x0 - xs : x1 - xs]
        return out

    def run_tensor(self, x):
        """The same for a torch tensor, float32 NCHW in [0, 1] (the API's ``Model.tensor``)."""
        import torch

        y = self.run_array(
            np.ascontiguousarray(x.detach().float().cpu().permute(0, 2, 3, 1).numpy())
        )
        return torch.from_numpy(np.ascontiguousarray(y)).permute(0, 3, 1, 2)

    def _grid(self, h: int, w: int, t: int):
        """((y0, y1, x0, x1) kept region, (ys, ye, xs, xe) region run with its margins) per tile."""
        m = self.margin
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                yield (
                    (y0, y1, x0, x1),
                    (max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)),
                )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.run_many([image])[0]

    @staticmethod
    def _to_float(rgb: np.ndarray) -> np.ndarray:
        """Integer NHWC pixels (8 or 16 bits: 16-bit inputs at full precision) -> float32 in [0, 1]."""
        return rgb.astype(np.float32) * np.float32(1.0 / np.iinfo(rgb.dtype).max)

    @staticmethod
    def _to_int(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
        top = float(np.iinfo(dtype).max)
        return np.rint(y * top).clip(0, top).astype(dtype)

    def _run_int_tiled(self, rgb: np.ndarray, t: int, level: float | None) -> np.ndarray:
        """One integer (H, W, 3) image in tiles, converting each tile on its own (a large image
        never exists as float32)."""
        h, w = rgb.shape[:2]
        out = np.empty_like(rgb)
        context = area_thumbnail(rgb, self.context)[None] if self.context else None
        for (y0, y1, x0, x1), (ys, ye, xs, xe) in self._grid(h, w, t):
            pred = self._forward(self._to_float(rgb[None, ys:ye, xs:xe]), level, context)
            out[y0:y1, x0:x1] = self._to_int(
                pred[0, y0 - ys : y1 - ys, x0 - xs : x1 - xs], rgb.dtype
            )
        return out

    def run_many(
        self, images: list[np.ndarray], measured: list[float] | None = None
    ) -> list[np.ndarray]:
        """Denoise several images. On a GPU, equal shapes share one forward pass (when untiled)
        if they get the same level; on a CPU every image gets its own, which is faster there
        (the activations of one 400x600 image already overflow the caches: batch 4 costs 1.3x
        batch 1 per image). ``measured``: each image's estimated noise level when the caller
        has it (``estimate_sigma``), else it is estimated here where the network needs it."""
        results: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = defaultdict(list)
        levels: list[float | None] = [None] * len(images)
        on_cpu = str(self.device).startswith("cpu")
        for i, img in enumerate(images):
            if (
                img.dtype not in (np.uint8, np.uint16)
                or img.ndim not in (2, 3)
                or (img.ndim == 3 and img.shape[2] != 3)
            ):
                raise ValueError(
                    f"expected uint8 or uint16 (H, W, 3) or (H, W), got {img.dtype} {img.shape}"
                )
            if self.conditioned and self.sigma is None and self.strength > 0:
                levels[i] = self.level_for(
                    measured[i] if measured is not None else estimate_sigma(img)
                )
            elif self.conditioned:
                levels[i] = self.level_for(0.0)
            if self.passthrough:
                results[i] = img.copy()  # strength 0 / sigma 0: the input, bit for bit
                continue
            t = self.tile_for(*img.shape[:2])
            tiled = t is not None and (img.shape[0] > t or img.shape[1] > t)
            shared = not on_cpu and not tiled
            groups[(img.shape, img.dtype.str, levels[i]) if shared else (i, img.shape)].append(i)
        for idx in groups.values():
            gray = images[idx[0]].ndim == 2
            rgb = [np.repeat(images[i][..., None], 3, axis=2) if gray else images[i] for i in idx]
            h, w = rgb[0].shape[:2]
            t = self.tile_for(h, w)
            level = levels[idx[0]]
            if t is not None and (h > t or w > t) and len(idx) == 1 and not self.tta:
                arr = self._run_int_tiled(rgb[0], t, level)[None]
            else:
                arr = self._to_int(
                    self.run_array(self._to_float(np.stack(rgb)), level), rgb[0].dtype
                )
            for j, i in enumerate(idx):
                out = arr[j]
                if gray:
                    out = out.mean(axis=2).round().astype(out.dtype)
                if not self.conditioned and self.strength != 1.0:
                    out = _blend(images[i], out, self.strength)
                results[i] = np.ascontiguousarray(out)
        return results  # type: ignore[return-value]


def _blend(image: np.ndarray, output: np.ndarray, strength: float) -> np.ndarray:
    """``image + strength * (output - image)`` in the image's integer type (a blind network's
    --strength)."""
    mixed = image.astype(np.float32) + strength * (
        output.astype(np.float32) - image.astype(np.float32)
    )
    return np.clip(np.rint(mixed), 0, np.iinfo(image.dtype).max).astype(image.dtype)


# ----------------------------------------------------------------------------- large images

LARGE_IMAGE_BYTES = GiB  # images estimated above this take a per-node slot (see LargeImageGate)


def image_bytes(h: int, w: int, forward: int) -> int:
    """Estimated peak memory of handling one h x w image end to end: the forward pass (or its
    tile) plus ~24 bytes per pixel for the encoded file, decoded input, alpha, output and the
    encoder's copies."""
    return forward + 24 * h * w


class LargeImageGate:
    """Bounds how many large images the processes of one machine hold at once.

    An image estimated above LARGE_IMAGE_BYTES must hold one of ``k`` slots, where ``k`` is how
    many such images fit in ``fraction`` of the machine's memory (at least 1). Slots are lock
    files in the machine's temporary folder (``fcntl.flock``): every actor on the node shares
    them, and a killed process releases its slot. Smaller images pass without waiting.
    """

    def __init__(self, fraction: float = 0.6, folder: str | None = None, poll_s: float = 0.2):
        try:
            self.total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            self.total = 8 * GiB
        self.fraction, self.poll_s = fraction, poll_s
        self.folder = folder or os.path.join(tempfile.gettempdir(), "raydenoise-large-images")

    def slots_for(self, nbytes: int) -> int:
        return max(1, int(self.fraction * self.total // max(nbytes, 1)))

    @contextlib.contextmanager
    def hold(self, nbytes: int):
        """Wait for a slot if ``nbytes`` is large; yields the seconds spent waiting."""
        if nbytes <= LARGE_IMAGE_BYTES:
            yield 0.0
            return
        import fcntl

        os.makedirs(self.folder, exist_ok=True)
        k, t0 = self.slots_for(nbytes), time.perf_counter()
        while True:
            for slot in range(k):
                fd = os.open(
                    os.path.join(self.folder, f"slot-{slot}.lock"), os.O_RDWR | os.O_CREAT, 0o666
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                try:
                    yield time.perf_counter() - t0
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            time.sleep(self.poll_s)
