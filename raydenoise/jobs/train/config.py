"""train's configuration: the per-network defaults (networks.NETWORKS), TrainConfig, and what
--init brings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...errors import RaydenoiseError
from ...models.networks import DEFAULT_WIDTH, NETWORKS
from ...storage.errors import StorageError
from ...storage.store import endpoint_from_env
from .. import options
from ..options import opt

# Per network (networks.NETWORKS): epochs, batch size, patch size, lr, loss and schedule.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    name: dict(net.training) for name, net in NETWORKS.items()
}


PATCHES_PER_IMAGE = (
    4  # default random patches per train image per epoch (one decode feeds them all when streaming)
)


# The training losses (scoring.loss_fn has one function per name); mse is what PSNR measures.
LOSSES = ("bce", "l1", "charbonnier", "mse")
PRECISIONS = ("auto", "fp32", "bf16")  # --precision: what the forward pass computes in
CRASH_ENV = "RAYDENOISE_INJECT_CRASH"  # "EPOCH:RANK:MARKER_FILE" -> one hard worker crash (tests)


class TrainError(RaydenoiseError):
    """A user-facing failure: bad arguments, data, storage or cluster; or a failed run."""


def _per_network(key: str, shown=str) -> str:
    """The networks' defaults of a training option in words: "default 20 (unet, swift), 10
    (seed-ae)"."""
    by_value: dict[str, list[str]] = {}
    for name, values in MODEL_DEFAULTS.items():
        by_value.setdefault(shown(values[key]), []).append(name)
    return "default " + ", ".join(f"{v} ({', '.join(names)})" for v, names in by_value.items())


def _network_default(help: str, key: str, shown=str, **kw: Any) -> Any:
    """A hyper-parameter whose default depends on the network (resolve_config fills it)."""
    return opt(help=f"{help}; {_per_network(key, shown)}", required=False, **kw)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """``raydenoise train``'s options (the command line is built from these fields; the
    hyper-parameters without a default here take the network's, see resolve_config)."""

    data: str = opt(help="ingest output (folder or s3:// prefix with manifest.json)")
    model: str = opt(
        help="network to train (required unless --init gives it): "
        + "; ".join(f"{name} ({net.summary})" for name, net in NETWORKS.items()),
        choices=tuple(sorted(NETWORKS)),
        required=False,
    )
    storage_path: str = opt(help="folder or s3:// prefix for runs and checkpoints")
    name: str = opt(help="run name; re-running the same name resumes it")
    epochs: int = _network_default("epochs", "epochs", type=options.positive)
    batch_size: int = _network_default("per worker", "batch_size", type=options.positive)
    # None: full images (a batch is cropped to its smallest image)
    patch_size: int | None = _network_default(
        "random crop size; 0 = full images",
        "patch_size",
        shown=lambda v: v or "full",
        type=options.whole(0),
    )
    lr: float = _network_default("Adam learning rate", "lr", type=options.finite(positive=True))
    loss: str = _network_default(
        "the training loss (mse fits PSNR best: a last stage)",
        "loss",
        choices=LOSSES,
    )
    schedule: str = _network_default(
        "learning-rate schedule per epoch", "schedule", choices=("constant", "cosine")
    )
    width: int | None = opt(
        None, f"base channel width (default {DEFAULT_WIDTH})", type=options.positive
    )
    num_workers: int = opt(1, "DDP workers (Ray Train actors)", type=options.positive)
    use_gpu: bool = opt(False, "one GPU per worker (bf16 autocast)")
    cpus_per_worker: float | None = opt(
        None,
        "CPUs reserved per worker; torch runs that many threads (default: in memory, all the "
        "cluster's CPUs shared by the workers; streaming, 1, less when the data pipeline would "
        "get none)",
        type=options.finite(positive=True),
    )
    max_failures: int = opt(
        0,
        "restart the worker group up to K times after a worker or node dies (from the last "
        "checkpoint)",
        type=options.whole(0),
    )
    placement: str = opt(
        "pack",
        "pack: workers on as few nodes as fit (default, least network); spread: on different "
        "nodes where possible (a lost node takes fewer workers)",
        choices=("pack", "spread"),
    )
    seed: int = opt(0, "seed of weights, patches and synthesized noise (default 0)")
    max_steps_per_epoch: int | None = opt(
        None, "cap the optimizer steps of an epoch (quick trials)", type=options.positive
    )
    time_limit_s: float | None = opt(
        None,
        "stop (after a final eval and checkpoint) after this many seconds of training",
        type=options.finite(positive=True),
        flag="--time-limit",
        metavar="SECONDS",
    )
    precision: str = opt(
        "auto",
        "auto: bfloat16 autocast on GPUs, float32 on CPUs; bf16: on CPUs too, where they have "
        "bfloat16 units (AMX or AVX-512 BF16: up to ~1.6x faster steps, slower on some: measure "
        "yours; refused elsewhere); fp32: never",
        choices=PRECISIONS,
    )
    degrade: str | None = opt(
        None,
        "train from the clean side: each patch's noisy input is synthesized at every step, e.g. "
        "gaussian:0-50 (sigma drawn per patch), or a comma-separated mix: "
        "gaussian:0-50,poisson-gaussian:peak=5-60 (kinds and parameters as for synth --noise)",
        metavar="SPEC",
    )
    synthetic_data: str | None = opt(
        None,
        "a second ingest output whose clean images get --degrade inputs, mixed with --data's "
        "real pairs (e.g. LOL pairs + synthetic low light from clean photos); its val split, "
        "synthesized with a fixed seed, is scored beside --data's and the checkpoint is chosen on "
        "both (weighted as --synthetic-share mixes them)",
        metavar="DATA",
    )
    synthetic_share: float = opt(
        0.5,
        "with --synthetic-data: the share of training patches drawn from it (default 0.5)",
        metavar="S",
    )
    init: str | None = opt(
        None,
        "start from this model folder's weights (local or s3://): fine-tune, or continue a "
        "finished run in a new stage; its config gives --model and --width",
        metavar="MODEL",
    )
    ema: float | None = opt(
        None,
        "keep an exponential moving average of the weights (e.g. 0.999) and save it as the model",
        type=options.finite(positive=True),
        metavar="DECAY",
    )
    in_memory: str = opt(
        "auto",
        "decode the train split once and keep it in the workers' memory (auto: when it fits "
        "half the memory Ray offers; no: stream it with Ray Data every epoch)",
        choices=("auto", "yes", "no"),
    )
    patches_per_image: int | None = opt(
        None,
        f"random patches per train image per epoch (default {PATCHES_PER_IMAGE}; streaming, "
        "one decode feeds them all)",
        type=options.positive,
    )
    s3_endpoint: str | None = options.s3_endpoint()
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
    # A network may also start one that deepens it (networks.Network.deepens).
    fits = (
        config["model"] == cfg.model
        or (config["model"], cfg.model) in (("swift", "swift-cond"), ("swift", "swift-global"))
        or NETWORKS[cfg.model].deepens == config["model"]
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
