"""``raydenoise train``: distributed PyTorch training with Ray Train (V2) on ingested Parquet.

Flow: the driver checks everything a user can get wrong (manifest, splits, model name, --init,
--degrade, storage, cluster resources) before any worker starts, chooses the data path, then
runs a ``TorchTrainer``.

Data paths (``plan_data``):
- **memory** (default when the decoded images fit half the memory Ray offers, per worker):
  each worker decodes its share of the train split once, then cuts random patches (crop, flips,
  rotations) from memory in a background thread, so the model gets every CPU the worker holds;
- **stream** (larger data sets, or ``--in-memory no``): Ray Data tasks read and decode shards
  every epoch beside the training and cut several patches from each decoded image.
With ``--degrade SPEC`` only the clean side is used: each patch's noisy input is synthesized on
the worker at every step (fresh noise every step and epoch, reproducible from ``--seed``), and
the val split is degraded once per image with a fixed seed, so val PSNR compares across epochs
and runs.

Each worker trains with DDP, evaluates its share of the val split on full images, and rank 0
reports a checkpoint every epoch. Ray Train keeps the best checkpoint by val loss and the latest
one; re-running with the same storage path and name resumes from the latest, and
``max_failures`` restarts a crashed worker group from it. At the end the driver writes
``RUN/model/`` (best), ``RUN/metrics.csv``, ``RUN/summary.json`` and ``RUN/curves.png``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .artifacts import unwrap
from .console import console
from .dataset import DatasetError, iter_shard_rows, read_manifest
from .images import object_column
from .networks import DEFAULT_WIDTH, NETWORKS
from .patches import augment_pair
from .report import json_safe, to_json
from .session import StartRay, check_shared_paths, ensure_ray, work_nodes
from .storage import (
    StorageError,
    Store,
    cached_store,
    endpoint_from_env,
    last_error_line,
    open_store,
)

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
    loss: str  # "bce" | "l1" | "charbonnier"
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


# ----------------------------------------------------------------------------- data


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # a writable copy, for torch


def read_decode_augment(
    items: dict[str, np.ndarray],
    *,
    data_uri: str,
    endpoint: str | None,
    patch: int | None,
    patches_per_image: int = 1,
    clean_only: bool = False,
    rows_per_batch: int = 8,
) -> Iterator[Any]:
    """Ray Data generator UDF (the streaming data path): shard paths in, batches of augmented
    uint8 (H, W, 3) patches out, ``patches_per_image`` random patches from every decoded image.
    With ``clean_only`` only the clean side is read: the worker synthesizes the inputs.

    Streams each shard by row groups, so a task holds a few pairs at a time, not a shard.
    """
    store = cached_store(data_uri, endpoint)
    rng = np.random.default_rng()
    columns = ("high",) if clean_only else ("low", "high")
    for path in items["path"]:
        for rows in iter_shard_rows(store, str(path), columns, rows_per_batch):
            lows, highs = [], []
            for row in rows:
                high = decode_png(row[-1])
                low = None if clean_only else decode_png(row[0])
                for _ in range(patches_per_image if patch else 1):
                    lo, hi = augment_pair(low, high, patch, rng)
                    highs.append(hi)
                    if lo is not None:
                        lows.append(lo)
            yield _stack_or_ragged({"high": highs} | ({} if clean_only else {"low": lows}))


def _stack_or_ragged(columns: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    if len({a.shape for a in columns["high"]}) == 1:
        return {k: np.stack(v) for k, v in columns.items()}
    return {k: object_column(v) for k, v in columns.items()}


def to_tensors(low: np.ndarray, high: np.ndarray):
    """uint8 (N, H, W, 3) arrays -> float32 NCHW tensors in [0, 1]."""
    import torch

    def one(x: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)

    return one(low), one(high)


def decoded_bytes(data: Store, shards: list[str], paired: bool, limit: float = math.inf) -> int:
    """Bytes the decoded images of these shards take in memory, from their size columns only;
    stops counting once past ``limit``."""
    total = 0
    for shard in shards:
        for rows in iter_shard_rows(data, shard, ("height", "width"), 4096):
            total += sum(h * w * 3 for h, w in rows) * (2 if paired else 1)
            if total > limit:
                return total
    return total


def pyarrow_filesystem(store: Store):
    """The pyarrow filesystem Ray Data / Ray Train need, and the path to use with it."""
    import pyarrow.fs as pafs

    if store.is_s3:
        # A private s3fs instance without a listings cache: the shared one may hold a listing of
        # the run folder from before Ray Train wrote its checkpoints (stale "path not found").
        fs = type(store.fs)(
            **store.fs.storage_options, skip_instance_cache=True, use_listings_cache=False
        )
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


def evaluate(model, items, loss_fn, device) -> dict[str, float | None]:
    """Loss, PSNR, MSE, MAE and SSIM over this rank's share of the val split (``items``: its
    (low, high) uint8 images) on full images, summed across ranks (exact means, no image
    dropped or counted twice). A network conditioned on the noise level gets the level
    estimated from each input, as ``denoise`` gives it by default. ``model=None`` scores the noisy input itself (the baseline every
    model must beat)."""
    import torch

    from .metrics import all_metrics
    from .models import is_conditioned
    from .noise_level import estimate_sigma

    sums = np.zeros(6)  # count, loss, psnr, mse, mae, ssim
    if model is not None:
        model.eval()
    with torch.no_grad():
        for low, high in items:
            x, y = (t.to(device) for t in to_tensors(low[None], high[None]))
            if model is None:
                pred = x
            elif is_conditioned(
                model
            ):  # blind, as users run it: the level estimated from the input
                pred = model(x, torch.tensor([estimate_sigma(low)], device=device)).clamp(0, 1)
            else:
                pred = model(x).clamp(0, 1)
            loss = float(loss_fn(pred, y))
            p = pred[0].permute(1, 2, 0).float().cpu().numpy()
            m = all_metrics(p, high.astype(np.float32) / 255.0)
            sums += [1, loss, min(m["psnr"], 100.0), m["mse"], m["mae"], m["ssim"]]
    total = _all_reduce_sum(sums.tolist(), device)
    keys = ("val_loss", "val_psnr", "val_mse", "val_mae", "val_ssim")
    out: dict[str, float | None] = {"val_images": int(total[0])}
    for k, v in zip(
        keys, total[1:]
    ):  # no val images: no metric (None), never a 0 that reads as a score
        out[k] = v / total[0] if total[0] else None
    return out


def share_of(cfg: TrainConfig, shards: list[str], rank: int, world: int, paired: bool):
    """This rank's rows of ``shards`` (every world-th, in manifest order), decoded:
    (id, low or None, high) — only the clean side unless ``paired``."""
    store = cached_store(cfg.data, cfg.s3_endpoint)
    columns = ("id", "low", "high") if paired else ("id", "high")
    index = 0
    for shard in shards:
        for rows in iter_shard_rows(store, shard, columns, 8):
            for row in rows:
                index += 1
                if (index - 1) % world == rank:
                    yield row[0], decode_png(row[1]) if paired else None, decode_png(row[-1])


def val_items(cfg: TrainConfig, shards: list[str], rank: int, world: int, paired: bool, specs):
    """This rank's val pairs; with ``specs`` (``--degrade``) the input is synthesized from the
    clean image with a seed of its own (VAL_SEED, id): the same noise every epoch and run."""
    from .patches import val_input

    for image_id, low, high in share_of(cfg, shards, rank, world, paired and not specs):
        yield (val_input(image_id, high, specs) if specs else low), high


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0..1 of the run): constant, or cosine down to 1%."""
    if cfg.schedule != "cosine":
        return cfg.lr
    low = cfg.lr * 0.01
    return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _num(value, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def format_metrics(m: dict) -> str:
    """One line of an epoch's metrics; val metrics show '-' when there is no val split."""
    return (
        f"train_loss {_num(m.get('train_loss'), '.4f')}  val_loss {_num(m.get('val_loss'), '.4f')}  "
        f"val_psnr {_num(m.get('val_psnr'), '.2f', ' dB')}  val_ssim {_num(m.get('val_ssim'), '.3f')}"
    )


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


def _stream_batches(shard, cfg: TrainConfig, specs, epoch: int, rank: int, levels: bool):
    """The streaming data path's batches: Ray Data's patches, inputs synthesized here when
    training with --degrade; the levels only for a network that takes them."""
    from .patches import batch_with_levels, epoch_rng

    noise_rng = epoch_rng(cfg.seed, epoch, rank, 1)
    for batch in shard.iter_batches(
        batch_size=cfg.batch_size,
        batch_format="numpy",
        prefetch_batches=2,
        local_shuffle_buffer_size=4 * cfg.batch_size,
        drop_last=False,
    ):
        highs = list(batch["high"])
        lows: list[np.ndarray | None] = [None] * len(highs) if specs else list(batch["low"])
        yield batch_with_levels(lows, highs, specs, noise_rng, levels)


def _restore(checkpoint, cfg: TrainConfig, model, ema) -> str:
    """Load a Ray Train checkpoint's weights into ``model`` (and the EMA copy); returns the
    local copy's folder (the optimizer state is read from it next)."""
    from safetensors.torch import load_file

    from .artifacts import RAW_WEIGHTS, WEIGHTS, check_state

    restored = tempfile.mkdtemp(prefix="raydenoise-restore-")
    with checkpoint.as_directory() as d:
        shutil.copytree(d, restored, dirs_exist_ok=True)
    saved = load_file(os.path.join(restored, WEIGHTS))
    check_state(
        saved, model, f"the checkpoint of run {cfg.name!r}"
    )  # a clear message, not a cut one
    raw_path = os.path.join(restored, RAW_WEIGHTS)
    # With --ema the model file holds the average and RAW_WEIGHTS the weights being trained.
    model.load_state_dict(load_file(raw_path) if os.path.exists(raw_path) else saved)
    if ema is not None:
        ema.load_state_dict(saved)
    return restored


def _update_ema(ema, model, decay: float) -> None:
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


@dataclass
class _Worker:
    """One training worker's state: its configuration, place in the group, network, EMA copy,
    optimizer and history (restored from a checkpoint when there is one)."""

    config: dict  # the TrainConfig as a dict and the data plan (train_fn_per_worker's argument)
    cfg: TrainConfig
    specs: Any  # parsed --degrade, or None
    rank: int
    world: int
    device: Any
    model: Any  # DDP-prepared
    ema: Any  # the EMA copy, or None
    optimizer: Any
    conditioned: bool
    context: int
    history: list[dict]
    start_epoch: int
    elapsed_before: float


@dataclass
class _Data:
    """Where a worker's batches and val pairs come from."""

    memory: Any  # patches.MemoryPatches, or None when streaming
    shard: Any  # the Ray Data shard when streaming
    val: Callable[[], Any]  # this rank's val pairs (a list in memory, else a fresh stream)
    baseline: dict  # the noisy input's own val scores
    steps: int  # batches per epoch


def train_fn_per_worker(config: dict) -> None:
    """The Ray Train loop. ``config`` holds the TrainConfig as a dict and the data plan: shard
    lists, whether the data set is paired, and the data path (memory or stream)."""
    w = _setup(config)
    data = _load_data(w)
    t_start = time.time() - w.elapsed_before
    for epoch in range(w.start_epoch, w.cfg.epochs):
        _maybe_crash(w.cfg.inject_crash, epoch, w.rank)
        seen, loss_sum, pixels, seconds, stop = _train_epoch(w, data, epoch, t_start)
        n, total_loss, pixels = _all_reduce_sum([seen, loss_sum, pixels], w.device)
        if stop and n == 0:
            break  # the time limit fell between epochs: the previous epoch's checkpoint is the last
        scored = w.ema if w.ema is not None else unwrap(w.model)
        metrics = _epoch_metrics(w, data, scored, epoch, n, total_loss, pixels, seconds, t_start)
        w.history.append(metrics)
        if w.rank == 0:
            _emit(
                config,
                f"epoch {epoch + 1}/{w.cfg.epochs}  {format_metrics(metrics)}  "
                f"{metrics['pairs_per_s']:.1f} patches/s",
                epoch=epoch + 1,
                metrics=metrics,
            )
        _save_checkpoint(w, scored, epoch, metrics)
        if stop:
            break


def _setup(config: dict) -> _Worker:
    """Build (or restore) the network, its EMA copy and the optimizer on this worker."""
    import copy

    import ray.train
    import ray.train.torch
    import torch

    from .artifacts import load_train_state
    from .models import build_model, is_conditioned
    from .noise import parse_degrade

    cfg = TrainConfig(**config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # the model gets every CPU this worker reserved
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker or 1)))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.width)
    if cfg.init:
        _load_init(model, cfg)
    ema = copy.deepcopy(model) if cfg.ema else None
    history: list[dict] = []
    start_epoch, elapsed_before = 0, 0.0
    checkpoint = ray.train.get_checkpoint()
    # A re-run of the same storage path + name, or a restart after a failure, continues from
    # the checkpoint (which wins over --init).
    restored = _restore(checkpoint, cfg, model, ema) if checkpoint else None
    conditioned, context = is_conditioned(model), getattr(model, "context", 0)
    model = ray.train.torch.prepare_model(model)
    if ema is not None:
        ema.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if restored:
        state = load_train_state(restored, optimizer)
        start_epoch, history = state["epoch"], state["history"]
        elapsed_before = state.get("elapsed_s", 0.0)
        shutil.rmtree(restored, ignore_errors=True)
        if rank == 0:
            _emit(config, f"resuming {cfg.name} after epoch {start_epoch}", resumed=start_epoch)
    # Where each worker runs (summary.json "workers"): one entry per worker and (re)start.
    worker = {"rank": rank, "world": world, "node": ray.get_runtime_context().get_node_id(),
              "ip": ray.util.get_node_ip_address(), "from_epoch": start_epoch}  # fmt: skip
    _emit(config, None, worker=worker)
    specs = parse_degrade(cfg.degrade) if cfg.degrade else None
    return _Worker(config, cfg, specs, rank, world, device, model, ema, optimizer, conditioned,
                   context, history, start_epoch, elapsed_before)  # fmt: skip


def _load_init(model, cfg: TrainConfig) -> None:
    """--init's weights into ``model``: a blind swift may start a conditioned one (the level
    plane at zero) or be the local network of a global one (the global path at zero)."""
    from .artifacts import load_model_uri
    from .models import expand_state_for_levels, is_conditioned, local_state_for_global

    state = load_model_uri(cfg.init or "", cfg.s3_endpoint)[0].state_dict()
    if is_conditioned(model) and state["head.weight"].shape[1] == 12:
        state = expand_state_for_levels(state)
    if getattr(model, "context", 0):
        local = local_state_for_global(state)
        if local is not None:
            state = {**model.state_dict(), **local}
    model.load_state_dict(state)


def _load_data(w: _Worker) -> _Data:
    """This worker's share of the data: decoded into memory (with --synthetic-data's clean
    images) or the streaming shard, its val pairs and the noisy input's own scores."""
    import ray.train

    from .patches import MemoryPatches, steps_per_epoch

    cfg, config = w.cfg, w.config
    synthetic_shards = config.get("synthetic_shards") or []
    paired = config["paired"] and (not w.specs or bool(synthetic_shards))
    steps = steps_per_epoch(config["train_images"], config["patches_per_image"], w.world,
                            cfg.batch_size)  # fmt: skip
    memory = None
    if config["mode"] == "memory":
        t0 = time.time()
        extra = replace(cfg, data=cfg.synthetic_data or cfg.data) if synthetic_shards else cfg
        shards = config["train_shards"]
        pairs = [(low, high) for _, low, high in share_of(cfg, shards, w.rank, w.world, paired)]
        clean = [high for _, _, high in share_of(extra, synthetic_shards, w.rank, w.world, False)]
        memory = MemoryPatches(pairs, clean, cfg.synthetic_share)
        if w.rank == 0:
            _emit(
                config,
                f"decoded {len(memory.images) + len(memory.synthetic)} train images into memory "
                f"({memory.nbytes / 1e6:.0f} MB) in {time.time() - t0:.1f} s",
            )
    # With --synthetic-data the val split is the real pairs' (what the model is for).
    val_specs = None if synthetic_shards else w.specs
    shards, real = config["val_shards"], config["paired"]

    def stream():
        return val_items(cfg, shards, w.rank, w.world, real, val_specs)

    kept = list(stream()) if memory is not None else None

    def val():
        return kept if kept is not None else stream()

    loss_fn = _loss_fn(cfg.loss)
    # The noisy input's own scores: the reference line in curves.png and the summary.
    baseline = evaluate(None, val(), loss_fn, w.device) if shards else {}
    shard = ray.train.get_dataset_shard("train") if memory is None else None
    return _Data(memory, shard, val, baseline, steps)


def _train_epoch(w: _Worker, data: _Data, epoch: int, t_start: float):
    """One epoch of steps: (patches seen, loss sum, pixels, seconds, stop?) on this rank; stop
    when --time-limit ran out (rank 0's clock decides for every rank, as DDP needs)."""
    import torch

    from .patches import prefetch

    cfg, device, model, optimizer = w.cfg, w.device, w.model, w.optimizer
    loss_fn = _loss_fn(cfg.loss)
    use_amp = cfg.amp and device.type == "cuda"
    model.train()
    t0 = time.time()
    loss_sum, seen, step, pixels, stop = 0.0, 0, 0, 0.0, False
    if data.memory is not None:
        batches = data.memory.batches(
            steps=data.steps, batch_size=cfg.batch_size, patch=cfg.patch_size, seed=cfg.seed,
            epoch=epoch, rank=w.rank, specs=w.specs, levels=w.conditioned, context=w.context,
        )  # fmt: skip
    else:
        batches = _stream_batches(data.shard, cfg, w.specs, epoch, w.rank, w.conditioned)
    for low, high, levels in prefetch(batches):
        low, high = (t.to(device, non_blocking=True) for t in to_tensors(low, high))
        aux = [torch.from_numpy(levels).to(device)] if w.conditioned or w.context else []
        progress = (epoch + min(step / data.steps, 1.0)) / cfg.epochs
        if cfg.time_limit_s is not None:
            elapsed = _all_reduce_sum([time.time() - t_start if w.rank == 0 else 0.0], device)[0]
            if elapsed > cfg.time_limit_s:
                stop = True
                break
            progress = max(progress, elapsed / cfg.time_limit_s)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, progress)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = model(low, *aux)
        loss = loss_fn(pred.float(), high)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if w.ema is not None and cfg.ema is not None:
            _update_ema(w.ema, unwrap(model), cfg.ema)
        loss_sum += loss.item() * low.shape[0]
        seen += low.shape[0]
        pixels += low.shape[0] * low.shape[2] * low.shape[3]
        step += 1  # noqa: SIM113  (counted where a step completes; the loop may stop early)
        if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
            break
    return seen, loss_sum, pixels, time.time() - t0, stop


def _epoch_metrics(w: _Worker, data: _Data, scored, epoch: int, n: float, total_loss: float,
                   pixels: float, seconds: float, t_start: float) -> dict[str, Any]:  # fmt: skip
    """The epoch's metrics: val scores of ``scored`` (the EMA copy or the network), the train
    loss over all ranks, throughput; FloatingPointError when the loss diverged."""
    cfg = w.cfg
    val_metrics = evaluate(scored, data.val(), _loss_fn(cfg.loss), w.device)
    train_loss = total_loss / max(n, 1)
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"training diverged at epoch {epoch + 1}: the loss is {train_loss} "
            f"(try a lower --lr than {cfg.lr:g}); the checkpoints of the epochs before it are kept"
        )
    # what keeps the best checkpoint: val loss, or train loss when there is no val split
    select = val_metrics["val_loss"] if val_metrics["val_loss"] is not None else train_loss
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        **val_metrics,
        "select_loss": select,
        "input_psnr": data.baseline.get("val_psnr"),
        "input_loss": data.baseline.get("val_loss"),
        "input_ssim": data.baseline.get("val_ssim"),
        "lr": w.optimizer.param_groups[0]["lr"],
        "train_pairs": int(n),
        "train_seconds": seconds,
        "pairs_per_s": n / max(seconds, 1e-9),
        "megapixels_per_s": pixels / 1e6 / max(seconds, 1e-9),
        "elapsed_s": time.time() - t_start,
    }


def _save_checkpoint(w: _Worker, scored, epoch: int, metrics: dict[str, Any]) -> None:
    """Report the epoch to Ray Train with a checkpoint written by rank 0: the model folder
    (``scored``'s weights), the raw weights beside an EMA, the optimizer state and history."""
    import ray.train
    from safetensors.torch import save_file

    from .artifacts import RAW_WEIGHTS, model_state, save_model_dir, save_optimizer
    from .models import count_parameters

    cfg = w.cfg
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if w.rank == 0:
            card = {
                "model": cfg.model,
                "width": cfg.width,
                "parameters": count_parameters(scored),
                "input": "float32 RGB in [0, 1], NCHW, any size",
                "output": "same as input",
                "train_config": {k: v for k, v in asdict(cfg).items() if k != "inject_crash"},
                "data": w.config["data_ref"],
                "epoch": epoch + 1,
                "metrics": metrics,
                "weights": "exponential moving average" if w.ema is not None else "last step",
            }
            save_model_dir(tmp, scored, card)
            if w.ema is not None:
                save_file(model_state(w.model), os.path.join(tmp, RAW_WEIGHTS))
            state = {"epoch": epoch + 1, "history": w.history, "elapsed_s": metrics["elapsed_s"]}
            save_optimizer(tmp, w.optimizer, state)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)


def _emit(config: dict, line: str | None, **data: Any) -> None:
    """A progress line (None: data only) from a worker to the driver (which shows it), through
    the run's event queue; printed (to the worker's log) when there is none."""
    events = config.get("events")
    if events is None:
        if line:
            print(f"[raydenoise] {line}", flush=True)
    else:
        events.put.remote({"line": line, **data})


class EventQueue:
    """A Ray actor (zero CPUs) that carries workers' progress events to the driver: workers
    ``put`` without waiting, the driver ``take``s what has arrived."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def put(self, event: dict) -> None:
        self.events.append(event)

    def take(self) -> list[dict]:
        out, self.events = self.events, []
        return out


class _EventPump:
    """Driver side: a thread that takes workers' events every ``period`` seconds and shows them
    (epoch lines, a progress display over the epochs)."""

    def __init__(self, queue, cfg: TrainConfig, log: Callable[[str], None], period: float = 1.0):
        import threading

        from .console import Progress

        self.queue, self.log, self.period = queue, log, period
        self.progress = Progress("train", cfg.epochs, unit="epoch")
        self.first_epoch_s: float | None = None
        self.workers: list[
            dict
        ] = []  # every worker start: rank, node, ip, and the epoch it started from
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="raydenoise-train-events", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.pump()

    def pump(self) -> None:
        import ray

        try:
            events = ray.get(self.queue.take.remote(), timeout=30)
        except Exception:  # the queue is gone (Ray shutting down): nothing more to show
            return
        for e in events:
            if e.get("line"):
                self.log(f"train: {e['line']}")
            if "worker" in e:
                self.workers.append(e["worker"])
            if "resumed" in e:
                self.progress.update(e["resumed"] - self.progress.done)
            if "epoch" in e:
                if self.first_epoch_s is None:
                    self.first_epoch_s = time.time() - self.t0
                m = e.get("metrics", {})
                self.progress.update(
                    e["epoch"] - self.progress.done,
                    postfix=f"val {m['val_psnr']:.2f} dB"
                    if m.get("val_psnr") is not None
                    else None,
                )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pump()
        self.progress.close()


# ----------------------------------------------------------------------------- driver


def init_model_config(uri: str, s3_endpoint: str | None = None) -> dict:
    """The config of the model ``--init`` names, after checking the folder loads (config,
    weights, shapes, finite values); TrainError says what is wrong."""
    from .artifacts import ArtifactError, load_model_uri

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
    from .artifacts import resolve_model_uri

    # Workers run in their own directories: a relative --init becomes an absolute URI here.
    return replace(cfg, width=width, init=resolve_model_uri(cfg.init, cfg.s3_endpoint))


def _preflight(cfg: TrainConfig) -> tuple[dict, Store, Store]:
    from .noise import NoiseSpecError, parse_degrade

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

    from .artifacts import CONFIG

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


def node_cpus() -> list[float]:
    """The CPUs of each alive node that advertises any (where workers can be placed)."""
    return [n["Resources"]["CPU"] for n in work_nodes()[1] if n["Resources"].get("CPU", 0) > 0]


def auto_cpus_per_worker(cfg: TrainConfig, nodes: list[float], streaming: bool) -> float:
    """CPUs per worker when --cpus-per-worker is not given (``nodes``: the CPUs of each node).

    In memory the data path is a thread of the worker, so the workers share all the cluster's
    CPUs: the largest whole number (a quarter below one) such that every worker fits on some
    node (torch runs one thread per reserved CPU). Streaming, the Ray Data pipeline (read +
    decode) runs beside them and must keep at least one CPU, or it would wait forever: 1 CPU
    per worker, less when that would leave none; GPU workers 1. No nodes yet (autoscaling from
    zero): 1."""
    cluster_cpus = sum(nodes)
    if not nodes:
        return 1.0
    if not streaming:
        share = cluster_cpus / max(cfg.num_workers, 1)
        if share < 1:
            return max(0.25, math.floor(share * 4) / 4)
        per = math.floor(share)
        while per > 1 and sum(math.floor(n / per) for n in nodes) < cfg.num_workers:
            per -= 1  # a worker cannot span nodes
        return float(per)
    if cfg.use_gpu:
        return 1.0
    spare = (cluster_cpus - 1.0) / cfg.num_workers
    return max(0.25, min(1.0, math.floor(spare * 4) / 4))


def memory_budget(num_workers: int) -> float:
    """Bytes of decoded images a worker may hold: half the memory Ray offers tasks in the
    cluster, split between the workers."""
    import ray

    return 0.5 * ray.cluster_resources().get("memory", 4 * 2**30) / max(num_workers, 1)


def plan_data(cfg: TrainConfig, manifest: dict, data: Store, log) -> dict:
    """Choose the data path: ``memory`` (every worker decodes its share of the train and val
    splits once and cuts patches from memory) when it fits ``memory_budget`` or --in-memory yes;
    else ``stream`` (Ray Data reads and decodes shards every epoch beside the training)."""
    train = [s["path"] for s in manifest["shards"] if s["split"] == "train"]
    val = [s["path"] for s in manifest["shards"] if s["split"] == "val"]
    paired = not manifest.get("clean_only")
    synthetic: list[str] = []
    if cfg.synthetic_data is not None:
        extra = read_manifest(cfg.synthetic_data, cfg.s3_endpoint)
        synthetic = [s["path"] for s in extra["shards"] if s["split"] == "train"]
    mode, why = "stream", "--in-memory no"
    if cfg.in_memory != "no":
        budget = memory_budget(cfg.num_workers)
        need = (
            decoded_bytes(
                data,
                train,
                paired and not (cfg.degrade and not synthetic),
                budget * cfg.num_workers,
            )
            + decoded_bytes(data, val, True, budget * cfg.num_workers)
        ) / cfg.num_workers
        if synthetic:
            need += decoded_bytes(
                open_store(cfg.synthetic_data or "", cfg.s3_endpoint), synthetic, False, budget
            )
        if synthetic and need > budget:
            raise TrainError(
                f"--synthetic-data trains from memory, and the decoded images would need "
                f"{need / 1e6:,.0f} MB per worker (over {budget / 1e6:,.0f} MB): use smaller data sets"
            )
        if cfg.in_memory == "yes" or need <= budget:
            mode, why = "memory", f"{need / 1e6:,.0f} MB of decoded images per worker"
        else:
            why = f"the decoded images would need more than {budget / 1e6:,.0f} MB per worker"
    if mode == "stream" and cfg.model == "swift-global":
        raise TrainError(
            f"swift-global trains from memory (each patch needs its whole image's context), and {why}: "
            "use a smaller data set or --in-memory yes"
        )
    if mode == "memory" and cfg.num_workers > manifest["counts"]["train"]:
        raise TrainError(
            f"{cfg.num_workers} workers for {manifest['counts']['train']} train images: every worker "
            "needs at least one; lower --num-workers"
        )
    ppi = (
        (cfg.patches_per_image or PATCHES_PER_IMAGE) if cfg.patch_size else 1
    )  # full images: one per image
    if synthetic:
        made = (
            f"; {cfg.synthetic_share:.0%} of the patches from {len(synthetic)} shard(s) of {cfg.synthetic_data} "
            f"with inputs synthesized on the fly: {cfg.degrade}"
        )
    else:
        made = f"; inputs synthesized on the fly: {cfg.degrade}" if cfg.degrade else ""
    log(
        f"train: data path: {mode} ({why}); {ppi} patch{'es' * (ppi > 1)} per image per epoch"
        + made
    )
    return {
        "mode": mode,
        "train_shards": train,
        "val_shards": val,
        "paired": paired,
        "synthetic_shards": synthetic,
        "train_images": manifest["counts"]["train"],
        "patches_per_image": ppi,
    }


def run_train(
    cfg: TrainConfig, log: Callable[[str], None] = print, start_ray: StartRay | None = None
) -> dict:
    """Train; returns a summary (best metrics, paths). Raises TrainError for user-facing failures.
    The configuration, data set, ``--init`` model and storage are checked before Ray starts
    (``start_ray``, default :func:`ensure_ray`)."""
    t_start = time.time()
    cfg = replace(
        cfg,
        s3_endpoint=endpoint_from_env(cfg.s3_endpoint),
        inject_crash=cfg.inject_crash or os.environ.get(CRASH_ENV),
    )
    cfg = _apply_init(cfg)
    manifest, data, storage = _preflight(cfg)
    check_s = time.time() - t_start
    ray_s = (start_ray or ensure_ray)() or 0.0
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    not_shared = check_shared_paths(
        reads={
            "--data": data.root,
            "--synthetic-data": cfg.synthetic_data
            and open_store(cfg.synthetic_data, cfg.s3_endpoint).root,
            "--init": None if (cfg.init or "").startswith("builtin:") else cfg.init,
        },
        writes={"--storage-path": storage.root},
    )
    if not_shared:
        raise TrainError(not_shared)
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
        synthetic_data=cfg.synthetic_data and open_store(cfg.synthetic_data, cfg.s3_endpoint).root,
    )
    datasets: dict[str, Any] = {}
    if streaming:
        # The manifest already lists the shards, so no Parquet listing task is needed (Ray Data's
        # reader would ask for a whole CPU, which a small cluster busy with training may not have).
        datasets["train"] = (
            ray.data.from_items([{"path": p} for p in plan["train_shards"]])
            .randomize_block_order()
            .map_batches(
                read_decode_augment,  # type: ignore[arg-type]
                batch_size=1,
                num_cpus=0.5,
                fn_kwargs={
                    "data_uri": data.root,
                    "endpoint": cfg.s3_endpoint,
                    "patch": cfg.patch_size,
                    "patches_per_image": plan["patches_per_image"],
                    "clean_only": bool(cfg.degrade),
                },
            )
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
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker={"CPU": cfg.cpus_per_worker},
        placement_strategy=cfg.placement.upper(),
    )
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
    pump = _EventPump(events, cfg, log)
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError carries the worker's traceback
        raise TrainError(f"training failed: {last_error_line(exc)}") from exc
    finally:
        pump.close()
    if result.error:
        raise TrainError(f"training failed: {last_error_line(result.error)}")
    phases = {
        "check_s": round(check_s, 3),
        "ray_init_s": round(ray_s, 3),
        "first_epoch_s": round(pump.t0 - t_start + pump.first_epoch_s, 3)
        if pump.first_epoch_s
        else None,
    }
    return _finalize(cfg, storage, result, log, phases, pump.workers)


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

    from .artifacts import CONFIG, TRAIN_STATE, WEIGHTS

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


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


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
    b.plot(
        epochs, [_nan(h.get("val_psnr")) for h in history], "o-", color="tab:green", label="model"
    )
    if history and history[-1].get("input_psnr") is not None:
        b.axhline(history[-1]["input_psnr"], ls="--", color="gray", label="noisy input")
    if history and history[-1].get("val_psnr") is None:
        b.text(
            0.5, 0.5, "no val split", ha="center", va="center", transform=b.transAxes, color="gray"
        )
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
