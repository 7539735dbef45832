"""Denoising networks, plain ``nn.Module``s chosen by name. No Ray here.

Every model maps float32 NCHW images in [0, 1] to float32 NCHW in [0, 1] of the same size; any
height and width work (inputs are reflect-padded to the network's multiple and cropped back).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODEL_NAMES = ("seed-ae", "unet")


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


class SeedAE(nn.Module):
    """The seed notebook's Keras autoencoder, layer for layer.

    Conv(32, 3x3, ReLU) -> BN -> MaxPool(2) -> Conv(32) -> BN -> MaxPool(2) -> Conv(32) -> BN ->
    UpSample(2) -> Conv(32) -> BN -> UpSample(2) -> Conv(3) + sigmoid, 'same' padding.
    29,763 trainable parameters plus 256 BatchNorm moving statistics = Keras's 30,019.
    BatchNorm uses Keras's defaults (momentum 0.99, epsilon 1e-3), i.e. PyTorch momentum 0.01.
    """

    multiple = 4

    def __init__(self, width: int = 32):
        super().__init__()

        def conv_bn(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                    nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]

        self.net = nn.Sequential(
            *conv_bn(3, width), nn.MaxPool2d(2),
            *conv_bn(width, width), nn.MaxPool2d(2),
            *conv_bn(width, width), nn.Upsample(scale_factor=2, mode="nearest"),
            *conv_bn(width, width), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = _pad_to_multiple(x, self.multiple)
        return self.net(x)[..., :h, :w]


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.GELU(), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UNet(nn.Module):
    """Residual U-Net: 3 scales (width, 2w, 4w), residual blocks, strided-conv down, pixel-
    shuffle up, additive skips, and a global residual (output = input + correction).

    ~1.2M parameters at the default width 32. Learns the correction, so even a low-light input
    that needs a large brightening is an easy target early in training.
    """

    multiple = 4

    def __init__(self, width: int = 32, blocks: int = 2):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.head = nn.Conv2d(3, w1, 3, padding=1)
        self.enc1 = nn.Sequential(*[_ResBlock(w1) for _ in range(blocks)])
        self.down1 = nn.Conv2d(w1, w2, 2, stride=2)
        self.enc2 = nn.Sequential(*[_ResBlock(w2) for _ in range(blocks)])
        self.down2 = nn.Conv2d(w2, w3, 2, stride=2)
        self.mid = nn.Sequential(*[_ResBlock(w3) for _ in range(2 * blocks)])
        self.up2 = nn.Sequential(nn.Conv2d(w3, w2 * 4, 1), nn.PixelShuffle(2))
        self.dec2 = nn.Sequential(*[_ResBlock(w2) for _ in range(blocks)])
        self.up1 = nn.Sequential(nn.Conv2d(w2, w1 * 4, 1), nn.PixelShuffle(2))
        self.dec1 = nn.Sequential(*[_ResBlock(w1) for _ in range(blocks)])
        self.tail = nn.Conv2d(w1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, h, w = _pad_to_multiple(x, self.multiple)
        e1 = self.enc1(self.head(xp))
        e2 = self.enc2(self.down1(e1))
        m = self.mid(self.down2(e2))
        d2 = self.dec2(self.up2(m) + e2)
        d1 = self.dec1(self.up1(d2) + e1)
        out = xp + self.tail(d1)
        out = out[..., :h, :w]
        # Clamp only at inference: during training the loss sees the raw output, so the
        # gradient is not cut off where the prediction overshoots.
        return out if self.training else out.clamp(0.0, 1.0)


def build_model(name: str, width: int | None = None) -> nn.Module:
    """``seed-ae`` or ``unet``; ValueError naming the choices for anything else."""
    if name == "seed-ae":
        return SeedAE(width or 32)
    if name == "unet":
        return UNet(width or 32)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts the way Keras reports them: BatchNorm moving mean/variance count as
    non-trainable parameters (PyTorch keeps them as buffers)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    bn_stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    return {"total": trainable + frozen + bn_stats, "trainable": trainable}
