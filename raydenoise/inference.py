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
    """

    def __init__(self, model: nn.Module, model_name: str, device: str | torch.device = "cpu",
                 tile: int | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.margin = MARGINS.get(model_name, 128)
        if tile is not None and tile < STRIDE:
            raise ValueError(f"tile must be at least {STRIDE} pixels, got {tile}")
        self.tile = None if tile is None else tile - tile % STRIDE

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device)).clamp(0, 1).float().cpu()

    @torch.no_grad()
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

    def run_many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Denoise several images; equal shapes share one forward pass (when untiled)."""
        results: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
                raise ValueError(f"expected uint8 (H, W, 3) or (H, W), got {img.dtype} {img.shape}")
            groups[img.shape].append(i)
        for shape, idx in groups.items():
            rgb = [images[i] if len(shape) == 3 else np.repeat(images[i][..., None], 3, axis=2) for i in idx]
            x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float().div_(255.0)
            y = self.run_tensor(x) if self.tile else self._forward(x)
            arr = (y.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            for j, i in enumerate(idx):
                out = arr[j]
                if len(shape) == 2:
                    out = out.mean(axis=2).round().astype(np.uint8)
                results[i] = out
        return results  # type: ignore[return-value]
