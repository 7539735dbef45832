"""denoise's configuration, its checks, and what makes an output (made_by: the fingerprint a rerun
compares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import RaydenoiseError
from ...imaging.images import (
    DEFAULT_MAX_PIXELS,
    MIN_TILE,
)
from ...imaging.noise_level import strength_problem
from ...ledger.plan import FORMATS, KEEP, REPORT_DIR
from .. import options
from ..options import opt

if TYPE_CHECKING:
    from .stages import ModelSpec

    pass


class DenoiseError(RaydenoiseError):
    """A user-facing failure of the whole job (bad arguments, model, storage)."""


OTHER_MODEL = ("redo", "refuse")


@dataclass(frozen=True, kw_only=True)
class DenoiseConfig:
    """``raydenoise denoise``'s options (the command line is built from these fields)."""

    input: str = opt(help="folder or s3:// prefix of images (recursive)")
    output: str = opt(help="outputs at the same relative keys, same formats")
    model: str = opt(
        "builtin:denoise",
        "builtin:NAME (see `raydenoise models`; default builtin:denoise), or a model folder "
        "(config.json + model.safetensors), local or s3://",
    )
    reference: str | None = opt(
        None, "clean images at the same relative keys: adds PSNR/MSE/MAE/SSIM"
    )
    report: str | None = opt(None, f"where the report goes (default: OUTPUT/{REPORT_DIR})")
    batch_size: int = opt(
        4,
        "images per Ray Data batch (default 4); on GPUs, equal-size images share a forward pass",
        type=options.positive,
    )
    workers: int | None = opt(
        None,
        "model actors (default: one per CPU, or as many as the GPUs allow with "
        "--num-gpus-per-worker)",
        type=options.positive,
    )
    num_gpus_per_worker: float = opt(
        0.0, "GPUs per model actor, e.g. 1 or 0.5 (default 0: CPU)", type=options.finite(0)
    )
    tile: int | None = options.tile_size(
        f"process images in tiles of this size (pixels, at least {MIN_TILE}); default: whole "
        "images, tiled automatically when one would not fit in a worker's memory"
    )
    strength: float = options.strength()
    sigma: float | None = options.sigma()
    overwrite: bool = opt(
        False,
        "redo every image whose output already exists (by default an output is kept when the "
        "earlier report says this input was made into it by the same model and options, and it "
        "is unchanged since)",
    )
    engine: str = options.engine()
    tta: bool = options.tta()
    onnx_margin: int | None = opt(
        None,
        "for an .onnx --model: the context (pixels each side) its outputs depend on, so tiles of "
        "large images join exactly (default: from the graph's raydenoise metadata, else 64)",
    )
    onnx_multiple: int | None = opt(
        None,
        "for an .onnx --model: the size multiple its input needs (tiles start on multiples of "
        "it; default: from the graph's metadata, else 8)",
    )
    quality: int | None = opt(
        None,
        "JPEG/WebP quality of lossy outputs, 1-100 (default: a lossy input stays lossy at its "
        "own quality, estimated from its quantization tables; lossless inputs stay lossless)",
    )
    format: str = opt(
        KEEP,
        "the outputs' format (default keep: each input's own, at its key). Another format "
        "renames each output to the format's extension (a/b.bmp -> a/b.png); inputs whose "
        "outputs would share a name are listed in the report, all but the first left out. JPEG "
        "and WebP are 8-bit (JPEG drops transparency, noted per image); PNG and TIFF keep 16 bits",
        choices=(KEEP, *FORMATS),
    )
    other_model: str = opt(
        "redo",
        "outputs an earlier run made with another model or options: redo them (default), or "
        "refuse to start, naming both models",
        choices=OTHER_MODEL,
    )
    max_megapixels: float = opt(
        DEFAULT_MAX_PIXELS / 1e6,
        f"refuse larger inputs (default {DEFAULT_MAX_PIXELS / 1e6:.1f}, Pillow's guard against "
        "decompression bombs); raise it for large images you trust, 0 = no limit",
        type=options.finite(0),
    )
    include_hidden: bool = options.include_hidden()
    dry_run: bool = options.dry_run(
        "list and plan only (no Ray, nothing written): how many inputs would be done, found "
        "done, or excluded and why, and a rough time estimate from a few inputs denoised here"
    )
    pipeline: str = opt(
        "auto",
        "fused: each actor reads, denoises and writes (CPU default); staged: separate read, "
        "model and write stages (GPU default)",
        choices=("auto", "fused", "staged"),
    )
    s3_endpoint: str | None = options.s3_endpoint()


def made_by(cfg: DenoiseConfig, spec: ModelSpec) -> dict[str, str]:
    """What makes this run's outputs, for the report's ``model`` and ``made_by`` columns: the
    model as named and a hash of its fingerprint (artifacts.model_fingerprint) with every option
    that changes pixels. A rerun keeps an existing output only when these match (plan.other_maker)."""
    import hashlib
    import json

    from ...models.artifacts import model_fingerprint

    options = {
        "weights": model_fingerprint(spec.uri, spec.endpoint),
        "strength": cfg.strength,
        "sigma": cfg.sigma,
        "quality": cfg.quality,
        "engine": spec.engine,
        "tta": cfg.tta,
    }
    if cfg.format != KEEP:  # (absent otherwise: the outputs of earlier versions stay vouched for)
        options["format"] = cfg.format
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    return {"model": spec.uri, "made_by": digest}


def check_config(cfg: DenoiseConfig) -> None:
    """Every number in range and finite, every choice known; DenoiseError says which is not."""
    if cfg.batch_size < 1 or (cfg.workers is not None and cfg.workers < 1):
        raise DenoiseError("--batch-size and --workers must be at least 1")
    if not math.isfinite(cfg.num_gpus_per_worker) or cfg.num_gpus_per_worker < 0:
        raise DenoiseError(
            f"--num-gpus-per-worker must be a finite number >= 0, not {cfg.num_gpus_per_worker}"
        )
    if cfg.tile is not None and cfg.tile < MIN_TILE:
        raise DenoiseError(
            f"--tile must be at least {MIN_TILE} pixels, not {cfg.tile} (smaller tiles would be "
            "mostly margin); leave it out to tile only the images that need it"
        )
    if not math.isfinite(cfg.max_megapixels) or cfg.max_megapixels < 0:
        raise DenoiseError(
            f"--max-megapixels must be a finite number >= 0 (0: no limit), not {cfg.max_megapixels}"
        )
    if cfg.pipeline not in PIPELINES:
        raise DenoiseError(
            f"--pipeline must be one of {', '.join(PIPELINES)}, not {cfg.pipeline!r}"
        )
    if cfg.quality is not None and not 1 <= cfg.quality <= 100:
        raise DenoiseError(f"--quality must be 1-100, not {cfg.quality}")
    if cfg.format != KEEP and cfg.format not in FORMATS:
        raise DenoiseError(
            f"--format must be one of {', '.join((KEEP, *FORMATS))}, not {cfg.format!r}"
        )
    from ...models.engines import ENGINES

    if cfg.engine not in ENGINES:
        raise DenoiseError(f"--engine must be one of {', '.join(ENGINES)}, not {cfg.engine!r}")
    if (cfg.onnx_margin is not None and cfg.onnx_margin < 0) or (
        cfg.onnx_multiple is not None and cfg.onnx_multiple < 1
    ):
        raise DenoiseError("--onnx-margin must be >= 0 and --onnx-multiple >= 1")
    if cfg.other_model not in OTHER_MODEL:
        raise DenoiseError(
            f"--other-model must be one of {', '.join(OTHER_MODEL)}, not {cfg.other_model!r}"
        )
    problem = strength_problem(cfg.strength, cfg.sigma)
    if problem:
        raise DenoiseError(problem)


PIPELINES = ("auto", "fused", "staged")
