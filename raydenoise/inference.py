"""Running a trained model on whole images of any size, optionally in overlapping tiles. No Ray.

Tiling is exact rather than blended: each tile is run with a margin of context at least as wide
as the network's receptive field, on a grid aligned to the network's downsampling stride, and
only the tile's own region is kept. A pixel's output then depends on exactly the same input
pixels as in a single pass, so tiled and untiled outputs agree to float rounding (~1e-6).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

# Context (pixels) each side that covers the network's receptive field, a multiple of its stride.
# seed-ae: 5 convs at scales 1, 1/2, 1/4, 1/2, 1 plus pooling/upsampling reach ~16 px.
# unet: ~30 3x3 convs across scales 1, 1/2, 1/4 reach ~64 px.
MARGINS = {"seed-ae": 32, "unet": 96}
STRIDE = 4  # both models downsample twice by 2


class Denoiser:
    """Callable: uint8 image (H, W, 3) or (H, W) -> uint8 image of the same shape.

    ``tile`` (pixels, rounded down to a multiple of 4; None = whole image) bounds the size of one
    forward pass, so images of any size fit in memory. Grayscale inputs are replicated to RGB for
    the model and the output is averaged back to one channel.

    Runs in ``inference_mode`` with channels-last (NHWC) tensors: oneDNN's and cuDNN's convolutions
    are fastest in that layout (2.0x for seed-ae and 1.4x for unet on a 2-core CPU, compared with
    the default NCHW under ``no_grad``; see BENCHMARKS.md). Results equal NCHW to float rounding.
    """

    def __init__(self, model: nn.Module, model_name: str, device: str | torch.device = "cpu",
                 tile: int | None = None):
        self.model = model.to(device).to(memory_format=torch.channels_last).eval()
        self.device = torch.device(device)
        self.margin = MARGINS.get(model_name, 128)
        if tile is not None and tile < STRIDE:
            raise ValueError(f"tile must be at least {STRIDE} pixels, got {tile}")
        self.tile = None if tile is None else tile - tile % STRIDE

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        return self.model(x).clamp(0, 1).float().cpu()

    @torch.inference_mode()
    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """float32 NCHW in [0, 1] -> same, tiled when the image is larger than ``tile``."""
        h, w = x.shape[-2:]
        t = self.tile
        if t is None or (h <= t and w <= t):
            return self._forward(x)
        out = torch.empty(x.shape, dtype=torch.float32)
        m = self.margin
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                ys, xs = max(0, y0 - m), max(0, x0 - m)
                ye, xe = min(h, y1 + m), min(w, x1 + m)
                pred = self._forward(x[..., ys:ye, xs:xe])
                out[..., y0:y1, x0:x1] = pred[..., y0 - ys : y1 - ys, x0 - xs : x1 - xs]
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.run_many([image])[0]

    @torch.inference_mode()
    def run_many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Denoise several images. On a GPU, equal shapes share one forward pass (when untiled);
        on a CPU every image gets its own, which is faster there (the activations of one
        400x600 image already overflow the caches: batch 4 costs 1.3x batch 1 per image)."""
        results: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
                raise ValueError(f"expected uint8 (H, W, 3) or (H, W), got {img.dtype} {img.shape}")
            groups[img.shape if self.device.type != "cpu" else (i, img.shape)].append(i)
        for idx in groups.values():
            gray = images[idx[0]].ndim == 2
            rgb = [np.repeat(images[i][..., None], 3, axis=2) if gray else images[i] for i in idx]
            # NHWC uint8 viewed as NCHW is already channels-last: no copy on the way in or out.
            x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float().div_(255.0)
            y = self.run_tensor(x)
            arr = y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for j, i in enumerate(idx):
                out = arr[j]
                if gray:
                    out = out.mean(axis=2).round().astype(np.uint8)
                results[i] = np.ascontiguousarray(out)
        return results  # type: ignore[return-value]
