"""The training loop each Ray Train worker runs, read as a training script: _setup (network, EMA,
optimizer, restored from a checkpoint), _load_data, then per epoch _train_epoch, _epoch_metrics
(val) and _save_checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ...models.artifacts import unwrap
from .config import TrainConfig
from .data import _stream_batches, share_of, to_tensors, val_items
from .events import _emit
from .scoring import _all_reduce_sum, _update_ema, evaluate, format_metrics, loss_fn, lr_at


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


def autocast_bf16(precision: str, device_type: str) -> bool:
    """Whether the forward pass runs under bfloat16 autocast (--precision): on GPUs unless fp32,
    on CPUs only when asked (bf16; the CPU's bfloat16 units were checked before)."""
    return precision == "bf16" or (precision == "auto" and device_type == "cuda")


def _restore(checkpoint, cfg: TrainConfig, model, ema) -> str:
    """Load a Ray Train checkpoint's weights into ``model`` (and the EMA copy); returns the
    local copy's folder (the optimizer state is read from it next)."""
    from safetensors.torch import load_file

    from ...models.artifacts import RAW_WEIGHTS, WEIGHTS, check_state

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
    criterion: Any  # the training loss (scoring.loss_fn(cfg.loss)), also what val scores


@dataclass
class _Data:
    """Where a worker's batches and val pairs come from."""

    memory: Any  # patches.MemoryPatches, or None when streaming
    shard: Any  # the Ray Data shard when streaming
    val: Callable[[], Any]  # this rank's val pairs (a list in memory, else a fresh stream)
    baseline: dict  # the noisy input's own val scores
    steps: int  # batches per epoch
    # --synthetic-data's val split with its inputs synthesized (seeded), and the input's scores
    synthetic_val: list = field(default_factory=list)
    synthetic_baseline: dict = field(default_factory=dict)


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

    from ...imaging.noise import parse_degrade
    from ...models.architectures import build_model, is_conditioned
    from ...models.artifacts import load_train_state

    cfg = TrainConfig(**config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # the model gets every CPU this worker reserved
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker or 1)))
        if cfg.precision == "bf16":  # this worker's CPU, which may not be the driver's
            from ...models.engines import check_bf16_cpu

            check_bf16_cpu("--precision bf16", "--precision auto")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.width)
    if cfg.init:
        load_init(model, cfg)
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
                   context, history, start_epoch, elapsed_before, loss_fn(cfg.loss))  # fmt: skip


def load_init(model, cfg: TrainConfig) -> None:
    """--init's weights into ``model``: a blind swift may start a conditioned one (the level
    plane at zero) or be the local network of a global one (the global path at zero), and a
    network may start a deeper one (its new blocks the identity)."""
    from ...models.architectures import (
        deepen_state,
        expand_state_for_levels,
        is_conditioned,
        local_state_for_global,
    )
    from ...models.artifacts import load_model_uri

    state = load_model_uri(cfg.init or "", cfg.s3_endpoint)[0].state_dict()
    if is_conditioned(model) and state["head.weight"].shape[1] == 12:
        state = expand_state_for_levels(state)
    if getattr(model, "context", 0):
        local = local_state_for_global(state)
        if local is not None:
            state = {**model.state_dict(), **local}
    deeper = deepen_state(state, model)
    model.load_state_dict(state if deeper is None else deeper)


def _load_data(w: _Worker) -> _Data:
    """This worker's share of the data: decoded into memory (with --synthetic-data's clean
    images) or the streaming shard, its val pairs and the noisy input's own scores."""
    import ray.train

    from ...imaging.patches import MemoryPatches, steps_per_epoch

    cfg, config = w.cfg, w.config
    synthetic_shards = config.get("synthetic_shards") or []
    paired = config["paired"] and (not w.specs or bool(synthetic_shards))
    steps = steps_per_epoch(config["train_images"], config["patches_per_image"], w.world,
                            cfg.batch_size)  # fmt: skip
    memory = None
    extra = replace(cfg, data=cfg.synthetic_data or cfg.data) if synthetic_shards else cfg
    if config["mode"] == "memory":
        t0 = time.time()
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

    criterion = w.criterion
    # The noisy input's own scores: the reference line in curves.png and the summary.
    baseline = evaluate(None, val(), criterion, w.device) if shards else {}
    shard = ray.train.get_dataset_shard("train") if memory is None else None
    data = _Data(memory, shard, val, baseline, steps)
    if config.get("synthetic_val_shards"):
        # The clean set's val split, its inputs made by --degrade with a seed per image: the
        # domain the real pairs do not show (ordinary photos made dark), scored every epoch too.
        data.synthetic_val = list(
            val_items(extra, config["synthetic_val_shards"], w.rank, w.world, False, w.specs)
        )
        data.synthetic_baseline = evaluate(None, data.synthetic_val, criterion, w.device)
    return data


def _train_epoch(w: _Worker, data: _Data, epoch: int, t_start: float):
    """One epoch of steps: (patches seen, loss sum, pixels, seconds, stop?) on this rank; stop
    when --time-limit ran out (rank 0's clock decides for every rank, as DDP needs)."""
    import torch

    from ...imaging.patches import prefetch

    cfg, device, model, optimizer, criterion = w.cfg, w.device, w.model, w.optimizer, w.criterion
    use_amp = autocast_bf16(cfg.precision, device.type)
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
        loss = criterion(pred.float(), high)
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
    val_metrics = evaluate(scored, data.val(), w.criterion, w.device)
    train_loss = total_loss / max(n, 1)
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"training diverged at epoch {epoch + 1}: the loss is {train_loss} "
            f"(try a lower --lr than {cfg.lr:g}); the checkpoints of the epochs before it are kept"
        )
    # what keeps the best checkpoint: val loss, or train loss when there is no val split
    select = val_metrics["val_loss"] if val_metrics["val_loss"] is not None else train_loss
    synthetic: dict[str, Any] = {}
    if data.synthetic_baseline:
        scores = evaluate(scored, data.synthetic_val, w.criterion, w.device)
        synthetic = {k.replace("val_", "synthetic_val_"): v for k, v in scores.items()}
        synthetic["synthetic_input_psnr"] = data.synthetic_baseline.get("val_psnr")
        if scores["val_loss"] is not None:  # both domains, weighted as training mixes them
            share = cfg.synthetic_share
            real = val_metrics["val_loss"]
            select = (
                scores["val_loss"]
                if real is None
                else (1 - share) * real + share * scores["val_loss"]
            )
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        **val_metrics,
        **synthetic,
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

    from ...models.architectures import count_parameters
    from ...models.artifacts import RAW_WEIGHTS, model_state, save_model_dir, save_optimizer

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
