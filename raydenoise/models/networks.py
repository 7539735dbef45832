"""What each network is, in one table: its class, default width, tiling facts, memory per
pixel and training defaults. No torch, no Ray: an ONNX Runtime actor, the CLI's help and the
training driver read it without loading torch (``models.build_model`` builds the class).

Adding a network: its class in ``models.py`` and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_WIDTH = 32  # channels of the first scale, for every network unless --width says otherwise

# Training defaults shared by the modern networks: Charbonnier, Adam 1e-3 with cosine decay,
# batch 8, 128x128 patches, 20 epochs.
_MODERN_TRAINING: dict[str, Any] = dict(
    epochs=20, batch_size=8, patch_size=128, lr=1e-3, loss="charbonnier", schedule="cosine"
)


@dataclass(frozen=True)
class Network:
    """One network: ``cls`` names its class in ``models`` (built with ``width`` and ``options``)."""

    cls: str
    summary: str  # one line for --help and the README's table
    # Context (pixels) each side that covers the receptive field, a multiple of ``stride``:
    # tiles run with this margin give exactly the untiled output.
    margin: int
    # The network's total downsampling: tiles start on multiples of it, so they see the same
    # grid as the whole image.
    stride: int
    # Peak bytes per input pixel of one forward pass, per unit of width (measured on CPU under
    # inference_mode, rounded up; see inference.py).
    bytes_per_pixel_per_width: int
    training: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    width: int = DEFAULT_WIDTH
    # The network this one deepens: the same layers plus blocks that start as the identity, so
    # ``train --init`` from that network starts exactly at its output.
    deepens: str | None = None


NETWORKS: dict[str, Network] = {
    # The seed notebook's autoencoder: 5 convs at scales 1, 1/2, 1/4, 1/2, 1 reach ~16 px.
    "seed-ae": Network(
        "SeedAE",
        "the notebook's autoencoder (30,019 parameters)",
        margin=32,
        stride=4,
        bytes_per_pixel_per_width=9,
        # The notebook: BCE, Adam 1e-3, batch 2, 10 epochs, full images, no augmentation.
        training=dict(
            epochs=10, batch_size=2, patch_size=None, lr=1e-3, loss="bce", schedule="constant"
        ),
    ),
    # ~30 3x3 convs across scales 1, 1/2, 1/4 reach ~64 px.
    "unet": Network(
        "UNet",
        "residual U-Net",
        margin=96,
        stride=4,
        bytes_per_pixel_per_width=28,
        training=_MODERN_TRAINING,
    ),
    # Measured by back-propagating from one output pixel: its inputs lie within 88 px;
    # pixel-unshuffle then 3 x 2 downsampling.
    "swift": Network(
        "Swift",
        "efficient, recommended",
        margin=112,
        stride=16,
        bytes_per_pixel_per_width=16,
        training=_MODERN_TRAINING,
    ),
    "swift-cond": Network(
        "Swift",
        "swift conditioned on the noise level: --strength/--sigma apply",
        margin=112,
        stride=16,
        bytes_per_pixel_per_width=16,
        training=_MODERN_TRAINING,
        options={"conditioned": True},
    ),
    # Its local swift's margin: the global path sees the whole image's thumbnail, given to
    # every tile.
    "swift-global": Network(
        "SwiftGlobal",
        "swift steered by the whole image: exposure, colour, tone; for low light",
        margin=112,
        stride=16,
        bytes_per_pixel_per_width=16,
        training=_MODERN_TRAINING,
    ),
    # swift-global with 6 middle blocks instead of 2: twice the parameters, all at 1/16 scale
    # (+33% MACs); each block's depthwise conv reaches 16 px further: 152 px measured.
    "swift-global-deep": Network(
        "SwiftGlobal",
        "swift-global with 4 more blocks at 1/16 scale: more capacity for low light",
        margin=176,
        stride=16,
        bytes_per_pixel_per_width=16,
        training=_MODERN_TRAINING,
        options={"middle": 6},
        deepens="swift-global",
    ),
}

MODEL_NAMES = tuple(NETWORKS)


def network(name: str) -> Network:
    """The table's row for ``name``; ValueError naming the choices for anything else."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}"
        ) from None
