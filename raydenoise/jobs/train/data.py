"""Training data on a worker: decoding and augmenting pairs, batches as tensors, the streamed
path's Ray Data batches, each worker's share.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...imaging.images import object_column
from ...imaging.patches import augment_pair
from ...storage.dataset import iter_shard_rows
from ...storage.store import (
    Store,
    cached_store,
)
from .config import TrainConfig


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
    from ...imaging.patches import val_input

    for image_id, low, high in share_of(cfg, shards, rank, world, paired and not specs):
        yield (val_input(image_id, high, specs) if specs else low), high


def _stream_batches(shard, cfg: TrainConfig, specs, epoch: int, rank: int, levels: bool):
    """The streaming data path's batches: Ray Data's patches, inputs synthesized here when
    training with --degrade; the levels only for a network that takes them."""
    from ...imaging.patches import batch_with_levels, epoch_rng

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
