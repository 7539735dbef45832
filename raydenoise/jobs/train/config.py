"""train's configuration: the per-network defaults (networks.NETWORKS), TrainConfig, and what
--init brings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...models.networks import DEFAULT_WIDTH, NETWORKS
from ...storage.errors import StorageError
from ...storage.store import endpoint_from_env

# Per network (networks.NETWORKS): epochs, batch size, patch size, lr, loss and schedule.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    name: dict(net.training) for name, net in NETWORKS.items()
}


PATCHES_PER_IMAGE = (
    4  # default random patches per train image per epoch (one decode feeds them all when streaming)
)


CRASH_ENV = "RAYDENOISE_INJECT_CRASH"  # "EPOCH:RANK:MARKER_FILE" -> one hard worker crash (tests)


class TrainError(Exception):
    """A user-facing failure: bad arguments, data, storage or cluster; or a failed run."""


@dataclass(frozen=True)
class TrainConfig:
    data: str
    model: str
    storage_path: str
    name: str
    epochs: int
    batch_size: int
    patch_size: int | None  # None: full images (a batch is cropped to its smallest image)
    lr: float
    loss: str  # "bce" | "l1" | "charbonnier" | "mse"
    schedule: str  # "constant" | "cosine" (per epoch)
    width: int | None = None
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # None: 1, less if the data pipeline would get no CPU
    max_failures: int = 0
    placement: str = "pack"  # "pack": workers on as few nodes as fit; "spread": on different nodes where possible
    seed: int = 0
    max_steps_per_epoch: int | None = None
    time_limit_s: float | None = None  # stop (after a final eval + checkpoint) once exceeded
    amp: bool = True  # bf16 autocast, only ever on GPU
    degrade: str | None = None  # noise SPEC: inputs synthesized from the clean side at every step
    synthetic_data: str | None = (
        None  # a second data set whose clean images get --degrade inputs, mixed in
    )
    synthetic_share: float = 0.5  # with synthetic_data: the share of training patches drawn from it
    init: str | None = None  # a model folder to start from
    ema: float | None = (
        None  # keep an exponential moving average of the weights (decay) as the model
    )
    in_memory: str = (
        "auto"  # "auto" | "yes" | "no": decode the train split once and keep it in memory
    )
    patches_per_image: int | None = (
        None  # per image per epoch; None: PATCHES_PER_IMAGE (1 with full images)
    )
    s3_endpoint: str | None = None
    inject_crash: str | None = field(default=None, compare=False)


def resolve_config(model: str, **overrides: Any) -> TrainConfig:
    """Fill unset (None) hyper-parameters from the model's defaults."""
    if model not in MODEL_DEFAULTS:
        raise TrainError(f"unknown model {model!r}; choose one of {', '.join(MODEL_DEFAULTS)}")
    values = dict(MODEL_DEFAULTS[model])
    for key, value in overrides.items():
        if value is not None or key not in values:
            values[key] = value
    if values.get("patch_size") == 0:
        values["patch_size"] = None
    return TrainConfig(model=model, **values)


def init_model_config(uri: str, s3_endpoint: str | None = None) -> dict:
    """The config of the model ``--init`` names, after checking the folder loads (config,
    weights, shapes, finite values); TrainError says what is wrong."""
    from ...models.artifacts import ArtifactError, load_model_uri

    try:
        return load_model_uri(uri, endpoint_from_env(s3_endpoint))[1]
    except (ArtifactError, StorageError) as exc:
        raise TrainError(f"--init: {exc}") from None


def _apply_init(cfg: TrainConfig) -> TrainConfig:
    """Check --init against --model/--width and take the width from it when none is given."""
    if not cfg.init:
        return cfg
    config = init_model_config(cfg.init, cfg.s3_endpoint)
    width = config.get("width") or DEFAULT_WIDTH
    # A blind swift may start a conditioned one (its head gets a zero weight for the level plane).
    # A blind swift may also become the local network of a swift-global (its global path starts at zero).
    fits = config["model"] == cfg.model or (config["model"], cfg.model) in (
        ("swift", "swift-cond"),
        ("swift", "swift-global"),
    )
    if not fits or (cfg.width is not None and cfg.width != width):
        raise TrainError(
            f"--init {cfg.init} is a {config['model']} of width {width}; this command asks for --model "
            f"{cfg.model}"
            + (f" --width {cfg.width}" if cfg.width is not None else "")
            + ": leave --model/--width out (the model's config decides) or make them match"
        )
    from ...models.artifacts import resolve_model_uri

    # Workers run in their own directories: a relative --init becomes an absolute URI here.
    return replace(cfg, width=width, init=resolve_model_uri(cfg.init, cfg.s3_endpoint))
