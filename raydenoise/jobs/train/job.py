"""The train job: checks, plan, TorchTrainer, then the best model folder, curves and summary
(run_train).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from ...console import console
from ...session import StartRay
from ...storage.errors import last_error_line
from ...storage.jsonfile import to_json
from ...storage.store import Store, endpoint_from_env, open_store
from ..outline import Job, Phases, run_job
from .checks import _check_resources, _preflight
from .config import CRASH_ENV, TrainConfig, TrainError, _apply_init
from .data import pyarrow_filesystem, read_decode_augment
from .events import EventQueue, _EventPump
from .outputs import _finite, _or_inf, curves_png, metrics_csv
from .planning import auto_cpus_per_worker, node_cpus, plan_data
from .scoring import _num, format_metrics
from .worker import train_fn_per_worker


def run_train(
    cfg: TrainConfig, log: Callable[[str], None] = print, start_ray: StartRay | None = None
) -> dict:
    """Train; returns a summary (best metrics, paths). Raises TrainError for user-facing failures.
    The configuration, data set, ``--init`` model and storage are checked before Ray starts
    (``start_ray``, default :func:`ensure_ray`)."""
    return run_job(_Train(cfg, log), False, start_ray)


class _Train(Job[dict]):
    """A training run in the job outline: check the configuration, data set, ``--init`` model
    and storage; then the TorchTrainer on Ray, and the best model, curves and summary."""

    error = TrainError

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log

    def check(self) -> None:
        cfg = replace(
            self.cfg,
            s3_endpoint=endpoint_from_env(self.cfg.s3_endpoint),
            inject_crash=self.cfg.inject_crash or os.environ.get(CRASH_ENV),
        )
        self.cfg = _apply_init(cfg)
        self.manifest, self.data, self.storage = _preflight(self.cfg)
        # resolved once: every node must read it, and workers get the resolved URI
        self.synthetic_root = (
            cfg.synthetic_data and open_store(cfg.synthetic_data, cfg.s3_endpoint).root
        )

    def shared_paths(self):
        """Every node must read the data and --init and write the storage path."""
        cfg = self.cfg
        reads = {
            "--data": self.data.root,
            "--synthetic-data": self.synthetic_root,
            "--init": None if (cfg.init or "").startswith("builtin:") else cfg.init,
        }
        return reads, {"--storage-path": self.storage.root}

    def work(self, phases: Phases) -> dict:
        import ray

        cfg, manifest, data, storage, log = (
            self.cfg,
            self.manifest,
            self.data,
            self.storage,
            self.log,
        )
        plan = plan_data(cfg, manifest, data, log)
        streaming = plan["mode"] == "stream"
        nodes = node_cpus()
        if cfg.cpus_per_worker is None:
            cfg = replace(cfg, cpus_per_worker=auto_cpus_per_worker(cfg, nodes, streaming))
        if nodes or ray.cluster_resources().get("GPU", 0):
            _check_resources(cfg, streaming)
        else:
            log(
                "train: the cluster has no CPUs or GPUs for work yet (its head runs none): waiting for the autoscaler "
                "to add worker nodes"
            )
        # Workers run in their own directories: give them resolved URIs, never relative paths.
        cfg = replace(
            cfg,
            data=data.root,
            storage_path=storage.root,
            synthetic_data=self.synthetic_root,
        )
        datasets = _stream_dataset(cfg, plan, data.root) if streaming else {}
        events = _event_queue()
        trainer = _trainer(cfg, plan, manifest, data, storage, datasets, events)
        _announce(cfg, manifest, plan, storage, log)
        pump = _EventPump(events, cfg, log)
        try:
            result = trainer.fit()
        except Exception as exc:  # TrainingFailedError carries the worker's traceback
            raise TrainError(f"training failed: {last_error_line(exc)}") from exc
        finally:
            pump.close()
        if result.error:
            raise TrainError(f"training failed: {last_error_line(result.error)}")
        first_s = pump.t0 - phases.t_start + pump.first_epoch_s if pump.first_epoch_s else None
        return _finalize(
            cfg, storage, result, log, phases.record("first_epoch_s", first_s), pump.workers
        )


def _announce(cfg: TrainConfig, manifest: dict, plan: dict, storage: Store, log) -> None:
    if not plan["val_shards"]:
        log(
            f"train: {cfg.data} has no val split: val metrics stay empty and the best checkpoint is chosen by "
            "train loss (ingest with a val fraction in --split to measure generalization)"
        )
    log(
        f"train: {cfg.model} on {manifest['counts']['train']} train / {manifest['counts']['val']} val images, "
        f"{cfg.num_workers} worker(s) x {cfg.cpus_per_worker:g} CPU{'s' * (cfg.cpus_per_worker != 1)}"
        f"{', 1 GPU each' if cfg.use_gpu else ''}"
        + (f", from {cfg.init}" if cfg.init else "")
        + f" -> {storage.uri(cfg.name)}"
    )


def _stream_dataset(cfg: TrainConfig, plan: dict, data_uri: str) -> dict[str, Any]:
    """The streamed data path's train dataset: Ray Data tasks read, decode and cut patches."""
    import ray

    # The manifest already lists the shards, so no Parquet listing task is needed (Ray Data's
    # reader would ask for a whole CPU, which a small cluster busy with training may not have).
    return {
        "train": ray.data.from_items([{"path": p} for p in plan["train_shards"]])
        .randomize_block_order()
        .map_batches(
            read_decode_augment,  # type: ignore[arg-type]
            batch_size=1,
            num_cpus=0.5,
            fn_kwargs={
                "data_uri": data_uri,
                "endpoint": cfg.s3_endpoint,
                "patch": cfg.patch_size,
                "patches_per_image": plan["patches_per_image"],
                "clean_only": bool(cfg.degrade),
            },
        )
    }


def _event_queue():
    """The actor the workers put their epoch events on (see events.EventQueue)."""
    import ray

    # On the driver's node: the queue must outlive any worker node that dies.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    events = (
        ray.remote(num_cpus=0)(EventQueue)
        .options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False
            )
        )
        .remote()
    )
    return events


def _trainer(cfg: TrainConfig, plan: dict, manifest: dict, data, storage, datasets, events):
    """The TorchTrainer: run, failure and checkpoint configs, workers and their loop's config."""
    import ray.train
    from ray.train.torch import TorchTrainer

    storage_fs, storage_path = pyarrow_filesystem(storage)
    run_config = ray.train.RunConfig(
        name=cfg.name,
        storage_path=storage_path,
        storage_filesystem=storage_fs,
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute="select_loss", checkpoint_score_order="min"
        ),  # keeps the best by val loss (train loss without val); Ray Train always keeps the latest too
    )
    scaling = ray.train.ScalingConfig(
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker={"CPU": cfg.cpus_per_worker},
        placement_strategy=cfg.placement.upper(),
    )
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "cfg": asdict(cfg),
            **plan,
            "events": events,
            "data_ref": {
                "uri": data.root,
                "manifest": data.uri("manifest.json"),
                "run": manifest["run"],
                "counts": manifest["counts"],
            },
        },
        scaling_config=scaling,
        run_config=run_config,
        datasets=datasets,
    )
    return trainer


def _finalize(
    cfg: TrainConfig,
    storage: Store,
    result,
    log,
    phases: dict | None = None,
    workers: list[dict] | None = None,
) -> dict:
    """Copy the best checkpoint to RUN/model/ and write metrics.csv + curves.png from history."""
    import json

    from ...models.artifacts import CONFIG, TRAIN_STATE, WEIGHTS

    latest = result.checkpoint
    if latest is None:
        raise TrainError("training reported no checkpoint")
    best_pairs = sorted(
        result.best_checkpoints or [],
        key=lambda cm: _or_inf(cm[1].get("select_loss", cm[1].get("val_loss"))),
    )
    best = best_pairs[0][0] if best_pairs else latest
    with latest.as_directory() as d:
        history = json.loads(open(os.path.join(d, TRAIN_STATE)).read())["history"]
    with best.as_directory() as d:
        for name in (CONFIG, WEIGHTS):
            with open(os.path.join(d, name), "rb") as f:
                storage.write_bytes(f"{cfg.name}/model/{name}", f.read())
        best_config = json.loads(open(os.path.join(d, CONFIG)).read())
    m = best_config["metrics"]
    warning = below_input_warning(m)
    storage.write_bytes(f"{cfg.name}/metrics.csv", metrics_csv(history).encode())
    storage.write_bytes(
        f"{cfg.name}/summary.json",
        to_json(
            {
                "best_epoch": best_config["epoch"],
                "best_metrics": best_config["metrics"],
                "epochs": len(history),
                "phases": phases,
                "workers": workers or [],
                "config": asdict(cfg),
                "warnings": [warning] if warning else [],
            }
        ),
    )
    storage.write_bytes(f"{cfg.name}/curves.png", curves_png(history, f"{cfg.name} ({cfg.model})"))
    summary = {
        "run": storage.uri(cfg.name),
        "model_dir": storage.uri(f"{cfg.name}/model"),
        "epochs": len(history),
        "best_epoch": best_config["epoch"],
        "best_metrics": best_config["metrics"],
        "phases": phases,
        "workers": workers or [],
        "warnings": [warning] if warning else [],
    }
    log(
        f"train: done, {len(history)} epochs; best epoch {best_config['epoch']}: {format_metrics(m)} "
        f"(noisy input {_num(m.get('input_psnr'), '.2f', ' dB')}) -> {summary['model_dir']}"
    )
    if warning:
        console().error(f"train: warning: {warning}")
    return summary


def below_input_warning(metrics: dict) -> str | None:
    """A warning when the best epoch does worse than the noisy input on val (the model makes
    images worse than doing nothing), else None. Judged by the loss, a mean over images in which
    a clean val image weighs like the others (its input PSNR is infinite, which would make a mean
    PSNR unfair to any model); by PSNR where the input's loss is not known."""
    loss, base_loss = metrics.get("val_loss"), metrics.get("input_loss")
    psnr, base = metrics.get("val_psnr"), metrics.get("input_psnr")
    if loss is not None and base_loss is not None and _finite(loss, base_loss):
        if loss <= base_loss:
            return None
        return (
            f"the best epoch's val loss {loss:.4f} is above the noisy input's {base_loss:.4f}: this model makes "
            "images worse than leaving them alone (train longer, lower --lr, or check the data)"
        )
    if psnr is None or base is None or not _finite(psnr, base) or psnr >= base:
        return None
    return (
        f"the best epoch scores {psnr:.2f} dB on val, below the noisy input's {base:.2f} dB: this model makes "
        "images worse than leaving them alone (train longer, lower --lr, or check the data)"
    )
