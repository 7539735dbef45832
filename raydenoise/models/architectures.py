"""Denoising networks, plain ``nn.Module``s chosen by name. No Ray here.

Every model maps float32 NCHW images in [0, 1] to float32 NCHW in [0, 1] of the same size; any
height and width work (inputs are reflect-padded to the network's multiple and cropped back).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .networks import MODEL_NAMES, network  # noqa: F401  (MODEL_NAMES: the names, re-exported)

LEVEL_SCALE = 50.0  # a noise level (0-255 scale) enters a conditioned network divided by this
CONTEXT_SIZE = (
    32  # a global network sees the whole image as a CONTEXT_SIZE x CONTEXT_SIZE thumbnail
)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if torch.jit.is_tracing():  # ONNX export: the pads are computed in the graph, for any size
        return (
            F.pad(x, (0, pw, 0, ph), mode="reflect"),
            h,
            w,
        )  # (inputs smaller than `multiple`: see engines)
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
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
            ]

        self.net = nn.Sequential(
            *conv_bn(3, width),
            nn.MaxPool2d(2),
            *conv_bn(width, width),
            nn.MaxPool2d(2),
            *conv_bn(width, width),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *conv_bn(width, width),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, 3, 3, padding=1),
            nn.Sigmoid(),
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


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of an NCHW tensor (NAFNet's normalization)."""

    def __init__(self, ch: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Measured on 2 CPU cores: 10% faster per training step than computing mean and
        # variance over dim 1 by hand.
        # The channel count from the weights, a constant: ONNX export keeps height and width dynamic.
        y = F.layer_norm(
            x.permute(0, 2, 3, 1), (self.weight.shape[0],), self.weight, self.bias, self.eps
        )
        return y.permute(0, 3, 1, 2)


class _NAFBlock(nn.Module):
    """NAFNet's block (Chen et al. 2022): LayerNorm -> 1x1 conv to 2c -> depthwise 3x3 ->
    SimpleGate (split the channels in two halves and multiply them) -> 1x1 conv, then a gated
    1x1 feed-forward; both branches are residual, scaled by learned per-channel factors that
    start at 0, so a fresh block is the identity.

    NAFNet's simplified channel attention (a global average pool) is left out on purpose: with
    it every output pixel would depend on the whole image, so tiled inference (large images,
    ``--tile``) could not reproduce the untiled output. Without it the receptive field is local
    (under 128 px) and tiles with that margin are exact."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm1 = LayerNorm2d(ch)
        self.expand = nn.Conv2d(ch, 2 * ch, 1)
        self.depthwise = nn.Conv2d(2 * ch, 2 * ch, 3, padding=1, groups=2 * ch)
        self.project = nn.Conv2d(ch, ch, 1)
        self.norm2 = LayerNorm2d(ch)
        self.ffn_in = nn.Conv2d(ch, 2 * ch, 1)
        self.ffn_out = nn.Conv2d(ch, ch, 1)
        self.beta = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, ch, 1, 1))

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._gate(self.depthwise(self.expand(self.norm1(x))))
        x = x + self.project(y) * self.beta
        return x + self.ffn_out(self._gate(self.ffn_in(self.norm2(x)))) * self.gamma


class Swift(nn.Module):
    """raydenoise's efficient restoration network: FFDNet's pixel-unshuffle input, NAFNet
    blocks in a 4-scale U-Net, and a global residual.

    The input is reflect-padded to a multiple of 16 and pixel-unshuffled 2x (3 -> 12 channels
    at half resolution), so no layer runs at full resolution; the U-Net works at 1/2, 1/4, 1/8
    (encoder blocks 1, 1, 2 at widths w, 2w, 4w) and 1/16 (2 middle blocks at 8w), with
    strided-conv down, pixel-shuffle up and additive skips; a final pixel-shuffle gives the
    full-resolution correction that is added to the input. At the default width 32: 1.53M
    parameters and 19 GMAC per megapixel (the ``unet``: 1.63M and 231 GMAC); on 2 CPU cores
    a training step takes about a quarter of the ``unet``'s.
    """

    multiple = 16

    def __init__(
        self,
        width: int = 32,
        encoder: tuple[int, ...] = (1, 1, 2),
        middle: int = 2,
        decoder: tuple[int, ...] = (1, 1, 1),
        conditioned: bool = False,
    ):
        super().__init__()
        self.conditioned = conditioned
        self.head = nn.Conv2d(13 if conditioned else 12, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n in encoder:
            self.encoders.append(nn.Sequential(*[_NAFBlock(ch) for _ in range(n)]))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.middle = nn.Sequential(*[_NAFBlock(ch) for _ in range(middle)])
        for n in decoder:
            self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(nn.Sequential(*[_NAFBlock(ch) for _ in range(n)]))
        self.tail = nn.Conv2d(width, 12, 3, padding=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """``sigma``: (N,) noise levels on the 0-255 scale, one per image; required by (and only
        used by) a conditioned network, which sees it as a uniform extra input plane."""
        return (
            x + self.residual(x, sigma)
            if self.training
            else (x + self.residual(x, sigma)).clamp(0.0, 1.0)
        )

    def residual(
        self, x: torch.Tensor, sigma: torch.Tensor | None = None, film: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The correction the network adds to ``x``. ``film``: (N, 2 * channels of the middle)
        per-image scale and shift of the middle blocks' input (a global network's steering)."""
        xp, h, w = _pad_to_multiple(x, self.multiple)
        y = F.pixel_unshuffle(xp, 2)
        if self.conditioned:
            if sigma is None:
                raise ValueError(
                    "this network is conditioned on the noise level: pass sigma, (N,) on the 0-255 scale"
                )
            level = (sigma.to(y.dtype).reshape(-1, 1, 1, 1) / LEVEL_SCALE).expand(
                y.shape[0], 1, *y.shape[-2:]
            )
            y = torch.cat([y, level], dim=1)
        y = self.head(y)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            y = encoder(y)
            skips.append(y)
            y = down(y)
        if film is not None:
            scale, shift = film[:, :, None, None].chunk(2, dim=1)
            y = y * (1 + scale) + shift
        y = self.middle(y)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            y = decoder(up(y) + skip)
        return F.pixel_shuffle(self.tail(y), 2)[..., :h, :w]


def context_of(x: torch.Tensor) -> torch.Tensor:
    """The whole image as a global network sees it: the mean of each of CONTEXT_SIZE x
    CONTEXT_SIZE cells (adaptive average pooling; ``images.area_thumbnail`` computes the same on
    NumPy images, which is how tiled inference gives every tile the whole image's context)."""
    return F.adaptive_avg_pool2d(x, CONTEXT_SIZE)


class SwiftGlobal(nn.Module):
    """Low-light enhancement that sees the whole image: a global path and a local ``Swift``.

    The global path reads a 32x32 thumbnail of the whole image (``context``; computed from
    ``x`` when not given) - its pixels and their logarithms, through three strided convs, mean
    and max pooled - and predicts, per image, an exposure gain, a 3x3 colour matrix plus offset
    and a gamma (as IAT and curve-estimation methods do), applied to every pixel:
    ``y = clamp(M @ (gain * x) + b) ** gamma``, plus a scale and shift of the local network's
    middle features. The local ``Swift`` then removes the noise that brightening reveals and
    restores detail on ``y``: the output is ``y + swift.residual(y)``.

    Everything the global path computes is one small vector per image, so tiled inference stays
    exact: the context is taken once from the whole image and given to every tile (its tiles
    and margins are the local network's). The global head starts at zero: a fresh (or
    ``--init swift``) network is its local ``Swift`` (to 1e-4: inputs are floored at 1e-4).
    """

    multiple = 16
    context = CONTEXT_SIZE

    def __init__(self, width: int = 32, features: int = 64, middle: int = 2):
        super().__init__()
        self.local = Swift(width, middle=middle)
        self.encoder = nn.Sequential(
            nn.Conv2d(6, 16, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(32, features, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.fc = nn.Sequential(nn.Linear(2 * features + 6, features), nn.GELU())
        self.adjust = nn.Linear(
            features, 1 + 9 + 3 + 1
        )  # log gain, colour matrix - I, offset, log gamma
        self.film = nn.Linear(features, 2 * 8 * width)
        for head in (self.adjust, self.film):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def global_params(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(gain (N,1,1,1), matrix (N,3,3), offset (N,3,1,1), gamma (N,1,1,1), film (N, 16w))."""
        logs = torch.log(context.clamp_min(1.0 / 255.0)) / 5.0
        f = self.encoder(torch.cat([context, logs], dim=1))
        stats = torch.cat([context.mean(dim=(2, 3)), logs.mean(dim=(2, 3))], dim=1)
        f = self.fc(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), stats], dim=1))
        p = self.adjust(f)
        n = p.shape[0]
        gain = torch.exp(p[:, 0].clamp(-3.0, 4.0)).reshape(n, 1, 1, 1)
        matrix = torch.eye(3, dtype=p.dtype, device=p.device) + p[:, 1:10].reshape(n, 3, 3)
        offset = p[:, 10:13].reshape(n, 3, 1, 1)
        gamma = torch.exp(p[:, 13].clamp(-1.5, 1.5)).reshape(n, 1, 1, 1)
        return gain, matrix, offset, gamma, self.film(f)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        gain, matrix, offset, gamma, film = self.global_params(
            context_of(x) if context is None else context
        )
        y = torch.einsum("nij,njhw->nihw", matrix, x * gain) + offset
        y = y.clamp(1e-4, 1.0) ** gamma
        out = y + self.local.residual(y, film=film)
        return out if self.training else out.clamp(0.0, 1.0)


def build_model(name: str, width: int | None = None) -> nn.Module:
    """The network ``name`` of ``networks.NETWORKS`` at ``width`` (default: its own);
    ValueError naming the choices for an unknown name."""
    spec = network(name)
    return _CLASSES[spec.cls](width or spec.width, **spec.options)


_CLASSES: dict[str, type[nn.Module]] = {
    "SeedAE": SeedAE,
    "UNet": UNet,
    "Swift": Swift,
    "SwiftGlobal": SwiftGlobal,
}


def is_conditioned(model: nn.Module) -> bool:
    """Whether ``model`` (or the module DDP wraps) takes a noise level beside the image."""
    return bool(getattr(getattr(model, "module", model), "conditioned", False))


def expand_state_for_levels(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``swift`` state dict made to fit ``swift-cond``: the head gets a zero weight for the
    level plane, so the conditioned network starts as exactly the blind one (train --init)."""
    weight = state["head.weight"]
    if weight.shape[1] != 12:
        raise ValueError(f"expected a swift head with 12 input channels, found {weight.shape[1]}")
    zeros = torch.zeros(weight.shape[0], 1, *weight.shape[2:], dtype=weight.dtype)
    return {**state, "head.weight": torch.cat([weight, zeros], dim=1)}


def takes_context(model: nn.Module) -> bool:
    """Whether ``model`` (or the module DDP wraps) takes the whole image's context beside a tile."""
    return bool(getattr(getattr(model, "module", model), "context", 0))


def local_state_for_global(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """A ``swift`` state dict as the local network of a ``swift-global`` (train --init): the
    global path starts at zero, so the new network is exactly the old one; None when ``state``
    is not a blind swift's."""
    if any(k.startswith("local.") for k in state) or state.get(
        "head.weight", torch.zeros(0, 0)
    ).shape[1:2] != (12,):
        return None
    return {f"local.{k}": v for k, v in state.items()}


def deepen_state(
    state: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor] | None:
    """``state`` of a network that ``model`` deepens (networks.Network.deepens), completed with
    ``model``'s own fresh blocks (whose residual scales start at zero, so the deeper network
    starts exactly at the shallower one's output); None when ``state`` lacks anything but whole
    blocks of ``model`` or has keys ``model`` does not."""
    own = model.state_dict()
    missing = set(own) - set(state)
    if not missing or set(state) - set(own):
        return None
    blocks = [name for name, module in model.named_modules() if isinstance(module, _NAFBlock)]

    def block_of(key: str) -> str | None:
        return next((b for b in blocks if key.startswith(b + ".")), None)

    new_blocks = {block_of(k) for k in missing}
    if None in new_blocks or any(block_of(k) in new_blocks for k in state):
        return None
    return {**own, **state}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts the way Keras reports them: BatchNorm moving mean/variance count as
    non-trainable parameters (PyTorch keeps them as buffers)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    bn_stats: int = sum(
        m.running_mean.numel() + m.running_var.numel()  # type: ignore[union-attr, misc]
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    return {"total": trainable + frozen + bn_stats, "trainable": trainable}


def macs_per_megapixel(model: nn.Module, size: int = 256) -> float:
    """Multiply-accumulates per megapixel of input (in GMAC/MP) of one forward pass, counted by
    torch's FLOP counter on a ``size`` x ``size`` image (convolutions and matmuls; the
    element-wise work of norms and activations is not included)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size), *([torch.zeros(1)] if is_conditioned(model) else []))
    model.train(was_training)
    return counter.get_total_flops() / 2 / (size * size) / 1e3
