"""denoise's configuration, its checks, and what makes an output (made_by: the fingerprint a rerun
compares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...imaging.images import (
    DEFAULT_MAX_PIXELS,
    MIN_TILE,
)
from ...imaging.noise_level import strength_problem
from ...ledger.plan import (
    FORMATS,
    KEEP,
)

if TYPE_CHECKING:
    from .stages import ModelSpec

    pass


class DenoiseError(Exception):
    """A user-facing failure of the whole job (bad arguments, model, storage)."""


@dataclass(frozen=True)
class DenoiseConfig:
    input: str
    output: str
    model: str = "builtin:denoise"  # or a model folder, local or s3://
    reference: str | None = None
    report: str | None = None  # default: OUTPUT/_report
    batch_size: int = 4
    workers: int | None = None  # None: one per CPU (CPU mode) or per GPU share (GPU mode)
    num_gpus_per_worker: float = 0.0
    tile: int | None = None  # None: whole images, tiled automatically when one would not fit
    overwrite: bool = False
    pipeline: str = "auto"  # "fused" (CPU default), "staged" (GPU default); see FusedActor
    s3_endpoint: str | None = None
    include_hidden: bool = False  # process files and folders whose names start with '.'
    max_megapixels: float = DEFAULT_MAX_PIXELS / 1e6  # larger inputs are refused; 0 = no limit
    dry_run: bool = False  # list and plan only: counts and a time estimate, nothing written
    strength: float = (
        1.0  # x the estimated noise level (conditioned model) or blend (blind); 0 = the input
    )
    sigma: float | None = (
        None  # a fixed noise level (0-255) for a conditioned model, instead of the estimate
    )
    other_model: str = (
        "redo"  # outputs an earlier run made with another model or options: "redo" or "refuse"
    )
    quality: int | None = (
        None  # JPEG/WebP quality of lossy outputs, 1-100 (None: the input's, estimated)
    )
    format: str = KEEP  # the outputs' format: "keep" (each input's own) or a key of plan.FORMATS
    engine: str = "auto"  # "torch", "onnxruntime" or "auto" (engines.choose_engine)
    tta: bool = False  # self-ensemble: the mean of 8 flips/rotations (8x the time)
    onnx_margin: int | None = (
        None  # an .onnx model's receptive field (pixels each side), for tiling
    )
    onnx_multiple: int | None = (
        None  # an .onnx model's size multiple (tiles start on multiples of it)
    )


OTHER_MODEL = ("redo", "refuse")


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
