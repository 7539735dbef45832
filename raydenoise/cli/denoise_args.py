"""``raydenoise denoise``'s arguments."""

from __future__ import annotations

import argparse

from ..imaging.images import DEFAULT_MAX_PIXELS, MIN_TILE
from ..ledger.plan import FORMATS, KEEP, REPORT_DIR
from .args import (
    _add_engine,
    _add_hidden,
    _add_ray,
    _add_s3,
    _add_strength,
    _finite,
    _positive,
    _tile,
)


def _denoise_command(sub) -> None:
    """``raydenoise denoise``."""
    p = sub.add_parser(
        "denoise", help="denoise every image under a folder or s3:// prefix (Ray Data)"
    )
    _denoise_command_locations(p)
    _denoise_command_outputs(p)


def _denoise_command_locations(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="folder or s3:// prefix of images (recursive)")
    p.add_argument(
        "--output", required=True, help="outputs at the same relative keys, same formats"
    )
    p.add_argument(
        "--model",
        default="builtin:denoise",
        help="builtin:NAME (see `raydenoise models`; default builtin:denoise), or a model folder "
        "(config.json + model.safetensors), local or s3://",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="clean images at the same relative keys: adds PSNR/MSE/MAE/SSIM",
    )
    p.add_argument(
        "--report", default=None, help=f"where the report goes (default: OUTPUT/{REPORT_DIR})"
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=4,
        help="images per Ray Data batch (default 4); on GPUs, equal-size images share a forward pass",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="model actors (default: one per CPU, or as many as the GPUs allow with --num-gpus-per-worker)",
    )
    p.add_argument(
        "--num-gpus-per-worker",
        type=_finite(minimum=0),
        default=0.0,
        help="GPUs per model actor, e.g. 1 or 0.5 (default 0: CPU)",
    )
    p.add_argument(
        "--tile",
        type=_tile,
        default=None,
        help=f"process images in tiles of this size (pixels, at least {MIN_TILE}); default: whole images, "
        "tiled automatically when one would not fit in a worker's memory",
    )
    _add_strength(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every image whose output already exists (by default an output is kept when the "
        "earlier report says this input was made into it by the same model and options, and it "
        "is unchanged since)",
    )
    _add_engine(p)
    p.add_argument(
        "--onnx-margin",
        type=int,
        default=None,
        help="for an .onnx --model: the context (pixels each side) its outputs depend on, so tiles of "
        "large images join exactly (default: from the graph's raydenoise metadata, else 64)",
    )


def _denoise_command_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--onnx-multiple",
        type=int,
        default=None,
        help="for an .onnx --model: the size multiple its input needs (tiles start on multiples of it; "
        "default: from the graph's metadata, else 8)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=None,
        help="JPEG/WebP quality of lossy outputs, 1-100 (default: a lossy input stays lossy at its own "
        "quality, estimated from its quantization tables; lossless inputs stay lossless)",
    )
    p.add_argument(
        "--format",
        choices=(KEEP, *FORMATS),
        default=KEEP,
        help="the outputs' format (default keep: each input's own, at its key). Another format "
        "renames each output to the format's extension (a/b.bmp -> a/b.png); inputs whose outputs "
        "would share a name are listed in the report, all but the first left out. JPEG and WebP "
        "are 8-bit (JPEG drops transparency, noted per image); PNG and TIFF keep 16 bits",
    )
    p.add_argument(
        "--other-model",
        choices=("redo", "refuse"),
        default="redo",
        help="outputs an earlier run made with another model or options: redo them (default), or "
        "refuse to start, naming both models",
    )
    p.add_argument(
        "--max-megapixels",
        type=_finite(minimum=0),
        default=DEFAULT_MAX_PIXELS / 1e6,
        help=f"refuse larger inputs (default {DEFAULT_MAX_PIXELS / 1e6:.1f}, Pillow's guard against "
        "decompression bombs); raise it for large images you trust, 0 = no limit",
    )
    _add_hidden(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list and plan only (no Ray, nothing written): how many inputs would be done, found done, or "
        "excluded and why, and a rough time estimate from a few inputs denoised here",
    )
    p.add_argument(
        "--pipeline",
        choices=("auto", "fused", "staged"),
        default="auto",
        help="fused: each actor reads, denoises and writes (CPU default); staged: separate read, "
        "model and write stages (GPU default)",
    )
    _add_s3(p)
    _add_ray(p)
