"""Everything a user can get wrong, checked on the driver before any worker starts: manifest,
splits, --init, --degrade and --synthetic-data, resources, a resumed run's config.
"""

from __future__ import annotations

import math

from ...models.networks import DEFAULT_WIDTH
from ...storage.dataset import DatasetError, read_manifest
from ...storage.errors import StorageError
from ...storage.store import Store, open_store
from .config import PRECISIONS, TrainConfig, TrainError


def _preflight(cfg: TrainConfig) -> tuple[dict, Store, Store]:
    from ...imaging.noise import NoiseSpecError, parse_degrade

    if cfg.placement not in ("pack", "spread"):
        raise TrainError(f"--placement must be pack or spread, not {cfg.placement!r}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.num_workers < 1 or cfg.max_failures < 0:
        raise TrainError(
            "--epochs, --batch-size and --num-workers must be at least 1, --max-failures at least 0"
        )
    for name, value in (
        ("--lr", cfg.lr),
        ("--time-limit", cfg.time_limit_s),
        ("--cpus-per-worker", cfg.cpus_per_worker),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise TrainError(f"{name} must be a finite number greater than 0, not {value}")
    if cfg.ema is not None and not (math.isfinite(cfg.ema) and 0 < cfg.ema < 1):
        raise TrainError(f"--ema must be a decay between 0 and 1 (e.g. 0.999), not {cfg.ema}")
    if cfg.in_memory not in ("auto", "yes", "no"):
        raise TrainError(f"--in-memory must be auto, yes or no, not {cfg.in_memory!r}")
    if cfg.precision not in PRECISIONS:
        raise TrainError(
            f"--precision must be one of {', '.join(PRECISIONS)}, not {cfg.precision!r}"
        )
    if cfg.precision == "bf16" and not cfg.use_gpu:
        from ...models.engines import EngineError, check_bf16_cpu

        try:  # here first, before Ray starts (each worker checks its own CPU again)
            check_bf16_cpu("--precision bf16", "--precision auto")
        except EngineError as exc:
            raise TrainError(str(exc)) from None
    if cfg.patches_per_image is not None and cfg.patches_per_image < 1:
        raise TrainError("--patches-per-image must be at least 1")
    if cfg.width is not None and not 1 <= cfg.width <= 1024:
        raise TrainError(f"--width must be from 1 to 1024, not {cfg.width}")
    if cfg.patch_size is not None and cfg.patch_size < 8:
        raise TrainError("--patch-size must be at least 8 (or 0 for full images)")
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        raise TrainError(f"--name {cfg.name!r}: use a plain name without '/'")
    if cfg.degrade is not None:
        try:
            parse_degrade(cfg.degrade)
        except NoiseSpecError as exc:
            raise TrainError(f"--degrade: {exc}") from None
    try:
        manifest = read_manifest(cfg.data, cfg.s3_endpoint)
    except (DatasetError, StorageError) as exc:
        raise TrainError(str(exc)) from None
    if manifest["counts"].get("train", 0) == 0:
        raise TrainError(
            f"{cfg.data}: the train split is empty; re-run ingest with more data or another --split"
        )
    if manifest.get("clean_only") and not cfg.degrade:
        raise TrainError(
            f"{cfg.data} holds clean images only (ingested without --low): give --degrade SPEC to "
            "synthesize the inputs, e.g. --degrade gaussian:0-50"
        )
    if cfg.synthetic_data is not None:
        _check_synthetic(cfg, manifest)
    data = open_store(cfg.data, cfg.s3_endpoint)
    try:
        storage = open_store(cfg.storage_path, cfg.s3_endpoint)
        storage.check_writable()
    except StorageError as exc:
        raise TrainError(f"--storage-path: {exc}") from None
    _check_resume(cfg, storage)
    return manifest, data, storage


def _check_synthetic(cfg: TrainConfig, manifest: dict) -> None:
    """--synthetic-data mixes synthesized pairs into a paired data set's real ones."""
    if not cfg.degrade:
        raise TrainError("--synthetic-data needs --degrade SPEC: the noise its clean images get")
    if manifest.get("clean_only"):
        raise TrainError(
            f"--synthetic-data mixes synthesized pairs into real ones, but {cfg.data} holds clean images "
            "only: give the clean sets together as --data instead"
        )
    if not (math.isfinite(cfg.synthetic_share) and 0 < cfg.synthetic_share < 1):
        raise TrainError(
            f"--synthetic-share must be between 0 and 1 (the share of patches synthesized), "
            f"not {cfg.synthetic_share}"
        )
    if cfg.in_memory == "no":
        raise TrainError("--synthetic-data trains from memory: leave out --in-memory no")
    try:
        extra = read_manifest(cfg.synthetic_data or "", cfg.s3_endpoint)
    except (DatasetError, StorageError) as exc:
        raise TrainError(f"--synthetic-data: {exc}") from None
    if extra["counts"].get("train", 0) == 0:
        raise TrainError(f"--synthetic-data {cfg.synthetic_data}: the train split is empty")


def _check_resources(cfg: TrainConfig, streaming: bool) -> None:
    import ray

    resources = ray.cluster_resources()
    assert cfg.cpus_per_worker is not None  # chosen before the checks
    if streaming and cfg.cpus_per_worker * cfg.num_workers > resources.get("CPU", 0) - 0.5:
        raise TrainError(
            f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPUs leave no CPU of the cluster's "
            f"{resources.get('CPU', 0):g} for the streaming data pipeline; lower --cpus-per-worker or --num-workers"
        )
    if not streaming and cfg.cpus_per_worker * cfg.num_workers > resources.get("CPU", 0):
        raise TrainError(
            f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPUs: the cluster has "
            f"{resources.get('CPU', 0):g}; lower --cpus-per-worker or --num-workers"
        )
    if cfg.use_gpu and resources.get("GPU", 0) < cfg.num_workers:
        raise TrainError(
            f"--use-gpu with {cfg.num_workers} workers needs {cfg.num_workers} GPUs; the cluster has "
            f"{int(resources.get('GPU', 0))}"
        )


def _check_resume(cfg: TrainConfig, storage: Store) -> None:
    """A run name that already has checkpoints is resumed: refuse, with both settings named,
    when its model or width differ from this command's (the weights would not fit)."""
    import json

    from ...models.artifacts import CONFIG

    run = open_store(storage.uri(cfg.name), cfg.s3_endpoint)
    try:
        keys = run.list_keys()
    except StorageError:
        return  # a new run
    configs = sorted(
        k
        for k in keys
        if k.startswith("checkpoint_") and k.endswith("/" + CONFIG) and k.count("/") == 1
    )
    if not configs:
        return
    try:
        old = json.loads(run.read_bytes(configs[-1]))
        old_model, old_width = old["model"], old.get("width") or DEFAULT_WIDTH
    except Exception:
        return  # unreadable: Ray Train's own restore decides
    if (old_model, old_width) != (cfg.model, cfg.width or DEFAULT_WIDTH):
        raise TrainError(
            f"run {run.root} was trained as --model {old_model} --width {old_width}; this command asks for --model "
            f"{cfg.model} --width {cfg.width or DEFAULT_WIDTH}. Re-running a name resumes it: use the same model, or a new --name"
        )
