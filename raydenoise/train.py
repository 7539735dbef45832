"""``raydenoise train``: distributed PyTorch training with Ray Train (V2) on ingested Parquet.

Flow: the driver checks everything a user can get wrong (manifest, splits, model name, storage,
cluster resources) before any worker starts, then runs a ``TorchTrainer``. Each worker streams
its share of the train split from Ray Data (decode + random crop + flips in Ray Data tasks),
trains with DDP, evaluates its share of the val split on full images, and rank 0 reports a
checkpoint every epoch. Ray Train keeps the best checkpoint by val loss and the latest one;
re-running with the same storage path and name resumes from the latest, and ``max_failures``
restarts a crashed worker group from it. At the end the driver writes ``RUN/model/`` (best),
``RUN/metrics.csv`` and ``RUN/curves.png``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .images import object_column
from .report import json_safe, to_json
from .ingest import IngestError, iter_shard_rows, read_manifest
from .storage import StorageError, Store, cached_store, endpoint_from_env, last_error_line, open_store

MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # The seed notebook: BCE, Adam 1e-3, batch 2, 10 epochs, full images, no augmentation.
    "seed-ae": dict(epochs=10, batch_size=2, patch_size=None, lr=1e-3, loss="bce", schedule="constant"),
    "unet": dict(epochs=20, batch_size=8, patch_size=128, lr=1e-3, loss="charbonnier", schedule="cosine"),
}
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
    loss: str  # "bce" | "l1" | "charbonnier"
    schedule: str  # "constant" | "cosine" (per epoch)
    width: int | None = None
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # None: 1, less if the data pipeline would get no CPU
    max_failures: int = 0
    seed: int = 0
    max_steps_per_epoch: int | None = None
    time_limit_s: float | None = None  # stop (after a final eval + checkpoint) once exceeded
    amp: bool = True  # bf16 autocast, only ever on GPU
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


# ----------------------------------------------------------------------------- data


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # a writable copy, for torch


def augment_pair(low: np.ndarray, high: np.ndarray, patch: int | None, rng: np.random.Generator):
    """Random crop to patch x patch (reflect-padding images smaller than that) plus random
    flips and 90-degree rotations; with patch None, only portrait -> landscape transposition."""
    if patch is None:
        if low.shape[0] > low.shape[1]:
            low, high = low.transpose(1, 0, 2), high.transpose(1, 0, 2)
        return low, high
    h, w = low.shape[:2]
    if h < patch or w < patch:
        pad = ((0, max(0, patch - h)), (0, max(0, patch - w)), (0, 0))
        low, high = np.pad(low, pad, mode="reflect"), np.pad(high, pad, mode="reflect")
        h, w = low.shape[:2]
    top, left = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
    low, high = low[top : top + patch, left : left + patch], high[top : top + patch, left : left + patch]
    if rng.random() < 0.5:
        low, high = low[:, ::-1], high[:, ::-1]
    if rng.random() < 0.5:
        low, high = low[::-1], high[::-1]
    k = int(rng.integers(0, 4))
    return np.rot90(low, k), np.rot90(high, k)


def read_decode_augment(items: dict[str, np.ndarray], *, data_uri: str, endpoint: str | None,
                        patch: int | None, rows_per_batch: int = 8):
    """Ray Data generator UDF: shard paths in, batches of augmented uint8 (H, W, 3) pairs out.

    Streams each shard by row groups, so a task holds a few pairs at a time, not a shard.
    """
    store = cached_store(data_uri, endpoint)
    rng = np.random.default_rng()
    for path in items["path"]:
        for rows in iter_shard_rows(store, str(path), ("low", "high"), rows_per_batch):
            lows, highs = [], []
            for lb, hb in rows:
                low, high = augment_pair(decode_png(lb), decode_png(hb), patch, rng)
                lows.append(np.ascontiguousarray(low))
                highs.append(np.ascontiguousarray(high))
            yield _stack_or_ragged(lows, highs)


def _stack_or_ragged(lows: list[np.ndarray], highs: list[np.ndarray]) -> dict[str, np.ndarray]:
    if len({a.shape for a in lows}) == 1:
        return {"low": np.stack(lows), "high": np.stack(highs)}
    return {"low": object_column(lows), "high": object_column(highs)}


def collate(batch: dict[str, np.ndarray]):
    """uint8 arrays (possibly of different sizes) -> float32 NCHW tensors in [0, 1], cropped to
    the smallest height and width in the batch (a no-op when all images share a size)."""
    import torch

    lows, highs = list(batch["low"]), list(batch["high"])
    h = min(a.shape[0] for a in lows)
    w = min(a.shape[1] for a in lows)
    low = np.stack([a[:h, :w] for a in lows])
    high = np.stack([a[:h, :w] for a in highs])

    def to_tensor(x: np.ndarray):
        return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)

    return to_tensor(low), to_tensor(high)


def _collate_class():
    from ray.data.collate_fn import NumpyBatchCollateFn

    class Collate(NumpyBatchCollateFn):
        def __call__(self, batch):
            return collate(batch)

    return Collate


def pyarrow_filesystem(store: Store):
    """The pyarrow filesystem Ray Data / Ray Train need, and the path to use with it."""
    import pyarrow.fs as pafs

    if store.is_s3:
        # A private s3fs instance without a listings cache: the shared one may hold a listing of
        # the run folder from before Ray Train wrote its checkpoints (stale "path not found").
        fs = type(store.fs)(**store.fs.storage_options, skip_instance_cache=True, use_listings_cache=False)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), store.path
    return None, store.path


# ----------------------------------------------------------------------------- per worker


def _loss_fn(name: str):
    import torch
    import torch.nn.functional as F

    if name == "bce":
        return lambda pred, target: F.binary_cross_entropy(pred.clamp(1e-7, 1 - 1e-7), target)
    if name == "l1":
        return F.l1_loss
    if name == "charbonnier":
        return lambda pred, target: torch.sqrt((pred - target) ** 2 + 1e-6).mean()
    raise ValueError(f"unknown loss {name!r}")


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def evaluate(model, cfg: TrainConfig, val_shards: list[str], rank: int, world: int, device) -> dict[str, float]:
    """Loss, PSNR, MSE, MAE and SSIM over the val split on full images, each rank taking every
    world-th image, summed across ranks (exact means, no image dropped or counted twice).
    ``model=None`` scores the noisy input itself (the baseline every model must beat)."""
    import torch

    from .metrics import all_metrics

    store = cached_store(cfg.data, cfg.s3_endpoint)
    loss_fn = _loss_fn(cfg.loss)
    sums = np.zeros(6)  # count, loss, psnr, mse, mae, ssim
    index = 0
    if model is not None:
        model.eval()
    with torch.no_grad():
        for shard in val_shards:
            for rows in iter_shard_rows(store, shard, ("low", "high"), 4):
                for lb, hb in rows:
                    index += 1
                    if (index - 1) % world != rank:
                        continue
                    low, high = decode_png(lb), decode_png(hb)
                    x = torch.from_numpy(low).permute(2, 0, 1)[None].float().div(255).to(device)
                    y = torch.from_numpy(high).permute(2, 0, 1)[None].float().div(255).to(device)
                    pred = x if model is None else model(x).clamp(0, 1)
                    loss = float(loss_fn(pred, y))
                    p = pred[0].permute(1, 2, 0).float().cpu().numpy()
                    m = all_metrics(p, high.astype(np.float32) / 255.0)
                    sums += [1, loss, min(m["psnr"], 100.0), m["mse"], m["mae"], m["ssim"]]
    total = _all_reduce_sum(sums.tolist(), device)
    keys = ("val_loss", "val_psnr", "val_mse", "val_mae", "val_ssim")
    if total[0] == 0:  # no val images: no metric (None), never a 0 that reads as a score
        return {k: None for k in keys} | {"val_images": 0}
    return {k: v / total[0] for k, v in zip(keys, total[1:])} | {"val_images": int(total[0])}


def _num(value, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def format_metrics(m: dict) -> str:
    """One line of an epoch's metrics; val metrics show '-' when there is no val split."""
    return (f"train_loss {_num(m.get('train_loss'), '.4f')}  val_loss {_num(m.get('val_loss'), '.4f')}  "
            f"val_psnr {_num(m.get('val_psnr'), '.2f', ' dB')}  val_ssim {_num(m.get('val_ssim'), '.3f')}")


def _maybe_crash(spec: str | None, epoch: int, rank: int) -> None:
    """Test hook: hard-kill this worker once, at the start of EPOCH on RANK (marker file = once)."""
    if not spec:
        return
    at_epoch, at_rank, marker = spec.split(":", 2)
    if int(at_epoch) == epoch and int(at_rank) == rank and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(f"crashed rank {rank} at epoch {epoch}\n")
        print(f"[raydenoise] injected crash: rank {rank}, epoch {epoch}", flush=True)
        os._exit(1)


def train_fn_per_worker(config: dict) -> None:
    """The Ray Train loop. ``config`` holds the TrainConfig as a dict, the val shard list and
    the data manifest reference."""
    import ray.train
    import ray.train.torch
    import torch

    from safetensors.torch import load_file

    from .artifacts import WEIGHTS, check_state, load_train_state, save_model_dir, save_optimizer, unwrap
    from .models import build_model, count_parameters

    cfg = TrainConfig(**config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.width)
    history: list[dict] = []
    start_epoch, elapsed_before = 0, 0.0
    restored = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a re-run of the same storage path + name, or a restart after a failure
        restored = tempfile.mkdtemp(prefix="raydenoise-restore-")
        with checkpoint.as_directory() as d:
            shutil.copytree(d, restored, dirs_exist_ok=True)
        state = load_file(os.path.join(restored, WEIGHTS))
        check_state(state, model, f"the checkpoint of run {cfg.name!r}")  # a clear message, not a cut one
        model.load_state_dict(state)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1), eta_min=cfg.lr * 0.01)
        if cfg.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    )
    if restored:
        state = load_train_state(restored, optimizer)
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        elapsed_before = state.get("elapsed_s", 0.0)
        shutil.rmtree(restored, ignore_errors=True)
        if rank == 0:
            print(f"[raydenoise] resuming {cfg.name} after epoch {start_epoch}", flush=True)
    use_amp = cfg.amp and device.type == "cuda"
    loss_fn = _loss_fn(cfg.loss)
    shard = ray.train.get_dataset_shard("train")
    # The noisy input's own scores: the reference line in curves.png and the summary.
    baseline = evaluate(None, cfg, config["val_shards"], rank, world, device) if config.get("has_val") else {}
    t_start = time.time() - elapsed_before
    stop = False
    for epoch in range(start_epoch, cfg.epochs):
        _maybe_crash(cfg.inject_crash, epoch, rank)
        model.train()
        t0 = time.time()
        loss_sum, seen, steps, pixels = 0.0, 0, 0, 0
        for low, high in shard.iter_torch_batches(
            batch_size=cfg.batch_size, collate_fn=_collate_class()(), local_shuffle_buffer_size=4 * cfg.batch_size,
            prefetch_batches=2, drop_last=False,
        ):
            low, high = low.to(device, non_blocking=True), high.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = model(low)
            loss = loss_fn(pred.float(), high)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * low.shape[0]
            seen += low.shape[0]
            pixels += low.shape[0] * low.shape[2] * low.shape[3]
            steps += 1
            if cfg.max_steps_per_epoch and steps >= cfg.max_steps_per_epoch:
                break
            if cfg.time_limit_s is not None:
                # Every rank must stop at the same step (DDP), so rank 0's clock decides.
                over = time.time() - t_start > cfg.time_limit_s if rank == 0 else False
                if _all_reduce_sum([float(over)], device)[0] > 0:
                    stop = True
                    break
        train_seconds = time.time() - t0
        n, total_loss, pixels = _all_reduce_sum([seen, loss_sum, pixels], device)
        val = evaluate(unwrap(model), cfg, config["val_shards"], rank, world, device)
        scheduler.step()
        train_loss = total_loss / max(n, 1)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **val,
            # what keeps the best checkpoint: val loss, or train loss when there is no val split
            "select_loss": val["val_loss"] if val["val_loss"] is not None else train_loss,
            "input_psnr": baseline.get("val_psnr"),
            "input_ssim": baseline.get("val_ssim"),
            "lr": optimizer.param_groups[0]["lr"],
            "train_pairs": int(n),
            "train_seconds": train_seconds,
            "pairs_per_s": n / max(train_seconds, 1e-9),
            "megapixels_per_s": pixels / 1e6 / max(train_seconds, 1e-9),
            "elapsed_s": time.time() - t_start,
        }
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1}: the loss is {train_loss} "
                                     f"(try a lower --lr than {cfg.lr:g}); the checkpoints of the epochs before it are kept")
        history.append(metrics)
        if rank == 0:
            print(f"[raydenoise] epoch {epoch + 1}/{cfg.epochs}  {format_metrics(metrics)}  "
                  f"{metrics['pairs_per_s']:.1f} pairs/s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                params = count_parameters(unwrap(model))
                save_model_dir(tmp, model, {
                    "model": cfg.model, "width": cfg.width, "parameters": params,
                    "input": "float32 RGB in [0, 1], NCHW, any size", "output": "same as input",
                    "train_config": {k: v for k, v in asdict(cfg).items() if k != "inject_crash"},
                    "data": config["data_ref"], "epoch": epoch + 1, "metrics": metrics,
                })
                save_optimizer(tmp, optimizer, {
                    "epoch": epoch + 1, "history": history, "scheduler": scheduler.state_dict(),
                    "elapsed_s": metrics["elapsed_s"],
                })
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
        if stop:
            break


# ----------------------------------------------------------------------------- driver


def _preflight(cfg: TrainConfig) -> tuple[dict, Store, Store]:
    import ray

    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.num_workers < 1 or cfg.max_failures < 0:
        raise TrainError("--epochs, --batch-size and --num-workers must be at least 1, --max-failures at least 0")
    for name, value in (("--lr", cfg.lr), ("--time-limit", cfg.time_limit_s), ("--cpus-per-worker", cfg.cpus_per_worker)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise TrainError(f"{name} must be a finite number greater than 0, not {value}")
    if cfg.width is not None and not 1 <= cfg.width <= 1024:
        raise TrainError(f"--width must be from 1 to 1024, not {cfg.width}")
    if cfg.patch_size is not None and cfg.patch_size < 8:
        raise TrainError("--patch-size must be at least 8 (or 0 for full images)")
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        raise TrainError(f"--name {cfg.name!r}: use a plain name without '/'")
    try:
        manifest = read_manifest(cfg.data, cfg.s3_endpoint)
    except (IngestError, StorageError) as exc:
        raise TrainError(str(exc)) from None
    if manifest["counts"].get("train", 0) == 0:
        raise TrainError(f"{cfg.data}: the train split is empty; re-run ingest with more data or another --split")
    data = open_store(cfg.data, cfg.s3_endpoint)
    try:
        storage = open_store(cfg.storage_path, cfg.s3_endpoint)
        storage.check_writable()
    except StorageError as exc:
        raise TrainError(f"--storage-path: {exc}") from None
    _check_resume(cfg, storage)
    resources = ray.cluster_resources()
    workers = max(cfg.num_workers, 1)
    if cfg.num_workers and cfg.cpus_per_worker * cfg.num_workers > resources.get("CPU", 0) - 0.5:
        raise TrainError(
            f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPUs leave no CPU of the cluster's "
            f"{resources.get('CPU', 0):g} for the data pipeline; lower --cpus-per-worker or --num-workers"
        )
    if cfg.use_gpu and resources.get("GPU", 0) < workers:
        raise TrainError(f"--use-gpu with {workers} workers needs {workers} GPUs; the cluster has {int(resources.get('GPU', 0))}")
    return manifest, data, storage


def _check_resume(cfg: TrainConfig, storage: Store) -> None:
    """A run name that already has checkpoints is resumed: refuse, with both settings named,
    when its model or width differ from this command's (the weights would not fit)."""
    import json

    from .artifacts import CONFIG

    run = open_store(storage.uri(cfg.name), cfg.s3_endpoint)
    try:
        keys = run.list_keys()
    except StorageError:
        return  # a new run
    configs = sorted(k for k in keys if k.startswith("checkpoint_") and k.endswith("/" + CONFIG) and k.count("/") == 1)
    if not configs:
        return
    try:
        old = json.loads(run.read_bytes(configs[-1]))
        old_model, old_width = old["model"], old.get("width") or 32
    except Exception:
        return  # unreadable: Ray Train's own restore decides
    if (old_model, old_width) != (cfg.model, cfg.width or 32):
        raise TrainError(
            f"run {run.root} was trained as --model {old_model} --width {old_width}; this command asks for --model "
            f"{cfg.model} --width {cfg.width or 32}. Re-running a name resumes it: use the same model, or a new --name"
        )


def auto_cpus_per_worker(cfg: TrainConfig, cluster_cpus: float) -> float:
    """1 CPU per worker, unless that would leave the Ray Data pipeline (read + decode) less than
    one CPU: Ray Data only uses what the training workers do not reserve, and would wait forever
    with nothing. On GPU workers CPUs matter less, so they get 1 whatever the cluster."""
    if cfg.use_gpu or cfg.num_workers < 1:
        return 1.0
    spare = (cluster_cpus - 1.0) / cfg.num_workers
    return max(0.25, min(1.0, math.floor(spare * 4) / 4))


def run_train(cfg: TrainConfig, log=print) -> dict:
    """Train; returns a summary (best metrics, paths). Raises TrainError for user-facing failures."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = replace(cfg, s3_endpoint=endpoint_from_env(cfg.s3_endpoint), inject_crash=cfg.inject_crash or os.environ.get(CRASH_ENV))
    if cfg.cpus_per_worker is None:
        cfg = replace(cfg, cpus_per_worker=auto_cpus_per_worker(cfg, ray.cluster_resources().get("CPU", 0)))
    manifest, data, storage = _preflight(cfg)
    # Workers run in their own directories: give them resolved URIs, never relative paths.
    cfg = replace(cfg, data=data.root, storage_path=storage.root)
    val_shards = [s["path"] for s in manifest["shards"] if s["split"] == "val"]
    # The manifest already lists the shards, so no Parquet listing task is needed (Ray Data's
    # reader would ask for a whole CPU, which a small cluster busy with training may not have).
    train_ds = ray.data.from_items(
        [{"path": s["path"]} for s in manifest["shards"] if s["split"] == "train"]
    ).randomize_block_order().map_batches(
        read_decode_augment, batch_size=1, num_cpus=0.5,
        fn_kwargs={"data_uri": data.root, "endpoint": cfg.s3_endpoint, "patch": cfg.patch_size},
    )
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
        num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
        resources_per_worker=None if cfg.use_gpu else {"CPU": cfg.cpus_per_worker},
    )
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "cfg": asdict(cfg), "val_shards": val_shards, "has_val": bool(val_shards),
            "data_ref": {"uri": data.root, "manifest": data.uri("manifest.json"), "run": manifest["run"],
                         "counts": manifest["counts"]},
        },
        scaling_config=scaling,
        run_config=run_config,
        datasets={"train": train_ds},
    )
    if not val_shards:
        log(f"train: {cfg.data} has no val split: val metrics stay empty and the best checkpoint is chosen by "
            "train loss (ingest with a val fraction in --split to measure generalization)")
    log(f"train: {cfg.model} on {manifest['counts']['train']} train / {manifest['counts']['val']} val pairs, "
        f"{max(cfg.num_workers, 1)} worker(s), {'GPU' if cfg.use_gpu else 'CPU'} -> {storage.uri(cfg.name)}")
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError carries the worker's traceback
        raise TrainError(f"training failed: {last_error_line(exc)}") from exc
    if result.error:
        raise TrainError(f"training failed: {last_error_line(result.error)}")
    return _finalize(cfg, storage, result, log)


def _finalize(cfg: TrainConfig, storage: Store, result, log) -> dict:
    """Copy the best checkpoint to RUN/model/ and write metrics.csv + curves.png from history."""
    import json

    from .artifacts import CONFIG, TRAIN_STATE, WEIGHTS

    latest = result.checkpoint
    if latest is None:
        raise TrainError("training reported no checkpoint")
    best_pairs = sorted(result.best_checkpoints or [],
                        key=lambda cm: _or_inf(cm[1].get("select_loss", cm[1].get("val_loss"))))
    best = best_pairs[0][0] if best_pairs else latest
    with latest.as_directory() as d:
        history = json.loads(open(os.path.join(d, TRAIN_STATE)).read())["history"]
    with best.as_directory() as d:
        for name in (CONFIG, WEIGHTS):
            with open(os.path.join(d, name), "rb") as f:
                storage.write_bytes(f"{cfg.name}/model/{name}", f.read())
        best_config = json.loads(open(os.path.join(d, CONFIG)).read())
    storage.write_bytes(f"{cfg.name}/metrics.csv", metrics_csv(history).encode())
    storage.write_bytes(f"{cfg.name}/summary.json", to_json({"best_epoch": best_config["epoch"],
                                                              "best_metrics": best_config["metrics"],
                                                              "epochs": len(history), "config": asdict(cfg)}))
    storage.write_bytes(f"{cfg.name}/curves.png", curves_png(history, f"{cfg.name} ({cfg.model})"))
    summary = {
        "run": storage.uri(cfg.name),
        "model_dir": storage.uri(f"{cfg.name}/model"),
        "epochs": len(history),
        "best_epoch": best_config["epoch"],
        "best_metrics": best_config["metrics"],
    }
    m = best_config["metrics"]
    log(f"train: done, {len(history)} epochs; best epoch {best_config['epoch']}: {format_metrics(m)} "
        f"(noisy input {_num(m.get('input_psnr'), '.2f', ' dB')}) -> {summary['model_dir']}")
    return summary


def _or_inf(value) -> float:
    return math.inf if value is None or not math.isfinite(value) else value


def metrics_csv(history: list[dict]) -> str:
    """One row per epoch; a metric with no value (no val split) is an empty cell, never NaN."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(json_safe(history))
    return buf.getvalue()


def _nan(value) -> float:
    return math.nan if value is None else value


def curves_png(history: list[dict], title: str) -> bytes:
    """Loss (train and val) and val PSNR per epoch, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    a.plot(epochs, [_nan(h.get("val_loss")) for h in history], "o-", label="val loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(epochs, [_nan(h.get("val_psnr")) for h in history], "o-", color="tab:green", label="model")
    if history and history[-1].get("input_psnr") is not None:
        b.axhline(history[-1]["input_psnr"], ls="--", color="gray", label="noisy input")
    if history and history[-1].get("val_psnr") is None:
        b.text(0.5, 0.5, "no val split", ha="center", va="center", transform=b.transAxes, color="gray")
    b.legend()
    b.set_xlabel("epoch")
    b.set_ylabel("val PSNR (dB)")
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
