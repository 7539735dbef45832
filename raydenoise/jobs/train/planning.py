"""CPUs and memory per worker, and the data path (in memory or streamed)."""

from __future__ import annotations

import math

from ...session import work_nodes
from ...storage.dataset import read_manifest
from ...storage.store import (
    Store,
    open_store,
)
from .config import PATCHES_PER_IMAGE, TrainConfig, TrainError
from .data import decoded_bytes


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


def _describe_mix(cfg: TrainConfig, synthetic: list[str], synthetic_val: list[str]) -> str:
    """The data line's tail: where the synthetic patches come from and what chooses the model."""
    if not synthetic:
        return f"; inputs synthesized on the fly: {cfg.degrade}" if cfg.degrade else ""
    share = cfg.synthetic_share
    made = (
        f"; {share:.0%} of the patches from {len(synthetic)} shard(s) of {cfg.synthetic_data} "
        f"with inputs synthesized on the fly: {cfg.degrade}"
    )
    if synthetic_val:
        made += (
            f"; val: {len(synthetic_val)} shard(s) of its val split besides the real pairs' "
            f"(checkpoint chosen on both, weighted {1 - share:.0%}/{share:.0%})"
        )
    return made


def plan_data(cfg: TrainConfig, manifest: dict, data: Store, log) -> dict:
    """Choose the data path: ``memory`` (every worker decodes its share of the train and val
    splits once and cuts patches from memory) when it fits ``memory_budget`` or --in-memory yes;
    else ``stream`` (Ray Data reads and decodes shards every epoch beside the training)."""
    train = [s["path"] for s in manifest["shards"] if s["split"] == "train"]
    val = [s["path"] for s in manifest["shards"] if s["split"] == "val"]
    paired = not manifest.get("clean_only")
    synthetic: list[str] = []
    synthetic_val: list[str] = []
    if cfg.synthetic_data is not None:
        extra = read_manifest(cfg.synthetic_data, cfg.s3_endpoint)
        synthetic = [s["path"] for s in extra["shards"] if s["split"] == "train"]
        synthetic_val = [s["path"] for s in extra["shards"] if s["split"] == "val"]
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
                open_store(cfg.synthetic_data or "", cfg.s3_endpoint),
                synthetic + synthetic_val,
                False,
                budget,
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
    made = _describe_mix(cfg, synthetic, synthetic_val)
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
        "synthetic_val_shards": synthetic_val,
        "train_images": manifest["counts"]["train"],
        "patches_per_image": ppi,
    }
