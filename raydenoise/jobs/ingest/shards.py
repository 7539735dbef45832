"""The Ray Data tasks: each reads a shard's pairs, converts them to PNG bytes and writes one
Parquet shard.
"""

from __future__ import annotations

import contextlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from ...imaging.encode import to_png_rgb8
from ...imaging.images import ImageError
from ...imaging.pairing import Rejected
from ...ledger.runfiles import read_positions
from ...storage.errors import object_error, storage_wide
from ...storage.store import Store, cached_store
from .config import ROW_GROUP_ROWS, SCHEMA
from .plan import PAIRS_SCHEMA


def _read(store: Store, key: str) -> tuple[bytes | None, str | None]:
    """The object's bytes, or a rejection reason for an object that is gone or forbidden.

    Failures of the storage itself (network, full disk: ``storage_wide``) propagate: they are
    about the store, not the file, so the whole ingest stops with that reason instead of
    rejecting every input.
    """
    try:
        return store.read_bytes(key), None
    except Exception as exc:
        if storage_wide(exc):
            raise
        return None, f"cannot read ({object_error(exc)})"


def process_pair(
    low_data: bytes, high_data: bytes
) -> tuple[tuple[bytes, bytes, int, int] | None, str | None, str | None]:
    """Validate and normalize one pair.

    Returns ((low_png, high_png, height, width), None, None) when usable, else
    (None, low_reason, high_reason) where a reason is None for a side that was fine by itself.
    """
    low_out = high_out = None
    low_err = high_err = None
    try:
        low_out = to_png_rgb8(low_data)
    except ImageError as exc:
        low_err = str(exc)
    except Exception as exc:  # never let one file abort its shard
        low_err = f"cannot process ({type(exc).__name__}: {exc})"
    try:
        high_out = to_png_rgb8(high_data)
    except ImageError as exc:
        high_err = str(exc)
    except Exception as exc:
        high_err = f"cannot process ({type(exc).__name__}: {exc})"
    if low_err or high_err or low_out is None or high_out is None:
        return None, low_err, high_err
    (lp, lh, lw), (hp, hh, hw) = low_out, high_out
    if (lh, lw) != (hh, hw):
        why = f"size mismatch: low is {lw}x{lh}, high is {hw}x{hh}"
        return None, why, why
    return (lp, hp, lh, lw), None, None


def _write_shard(
    spec: dict,
    *,
    low_uri: str | None,
    high_uri: str,
    out_uri: str,
    endpoint: str | None,
    plan_prefix: str,
) -> dict:
    """Ray Data task: one shard spec in, one shard file out, a small summary back.

    The shard is published under its name only once it is complete (Store.open_write). A pair
    whose files cannot be read or decoded is rejected with the reason; a failure of the storage
    itself (full disk, S3 unreachable) is returned as ``fatal`` so the driver stops the ingest
    with that one reason instead of rejecting every further file.
    """
    high, out = cached_store(high_uri, endpoint), cached_store(out_uri, endpoint)
    low = cached_store(low_uri, endpoint) if low_uri else None
    pairs = read_positions(
        out, plan_prefix, int(spec["start"]), int(spec["stop"]), PAIRS_SCHEMA
    ).to_pydict()
    spec = {
        **spec,
        "ids": pairs["id"],
        "low_keys": pairs["low_key"],
        "high_keys": pairs["high_key"],
    }
    rejected: list[dict] = []
    buf: dict[str, list] = {name: [] for name in SCHEMA.names}
    rows = 0
    try:
        rows = _fill_shard(spec, low, high, out, buf, rejected)
    except Exception as exc:
        if not storage_wide(exc):
            raise
        return {
            "shard": "",
            "split": spec["split"],
            "rows": 0,
            "pairs": len(spec["ids"]),
            "bytes": 0,
            "rejected": "[]",
            "fatal": f"{out.uri(spec['shard'])}: {object_error(exc)}",
            "node": "",
        }
    size = out.fs.size(out.key_path(spec["shard"])) if rows else 0
    import ray  # a Ray Data task: Ray is loaded

    return {
        "shard": spec["shard"] if rows else "",
        "split": spec["split"],
        "rows": rows,
        "pairs": len(spec["ids"]),
        "bytes": int(size),
        "rejected": json.dumps(rejected),
        "fatal": "",
        "node": ray.get_runtime_context().get_node_id(),
    }


def _fill_shard(
    spec: dict,
    low: Store | None,
    high: Store,
    out: Store,
    buf: dict[str, list],
    rejected: list[dict],
) -> int:
    """Read, validate and write one shard's pairs (clean images alone when ``low`` is None);
    returns the rows written."""
    rows = 0
    with contextlib.ExitStack() as stack:
        writer = None

        def flush() -> None:
            nonlocal writer
            if not buf["id"]:
                return
            table = pa.table(buf, schema=SCHEMA)
            if writer is None:
                sink = stack.enter_context(out.open_write(spec["shard"]))
                # PNG bytes do not compress further; the small columns get the default codec.
                writer = pq.ParquetWriter(
                    sink,
                    SCHEMA,
                    compression={
                        n: ("NONE" if n in ("low", "high") else "SNAPPY") for n in SCHEMA.names
                    },
                )
            writer.write_table(table)
            for v in buf.values():
                v.clear()

        for pid, lk, hk in zip(spec["ids"], spec["low_keys"], spec["high_keys"]):
            if low is None:
                if not _add_clean(pid, hk, high, spec["split"], buf, rejected):
                    continue
                rows += 1
                if len(buf["id"]) >= ROW_GROUP_ROWS:
                    flush()
                continue
            low_data, low_err = _read(low, lk)
            high_data, high_err = _read(high, hk)
            if low_data is not None and high_data is not None:
                ok, low_err, high_err = process_pair(low_data, high_data)
            else:
                ok = None
            if ok is None:
                for side, key, store, err, other_key, other_store, other_err in (
                    ("low", lk, low, low_err, hk, high, high_err),
                    ("high", hk, high, high_err, lk, low, low_err),
                ):
                    reason = err or f"partner {other_store.uri(other_key)} rejected: {other_err}"
                    rejected.append(Rejected(store.uri(key), side, pid, reason).as_dict())
                continue
            lp, hp, h, w = ok
            for name, value in zip(SCHEMA.names, (pid, spec["split"], lp, hp, h, w, lk, hk)):
                buf[name].append(value)
            rows += 1
            if len(buf["id"]) >= ROW_GROUP_ROWS:
                flush()
        flush()
        if writer is not None:
            writer.close()
    return rows


def _add_clean(
    pid: str, key: str, high: Store, split: str, buf: dict[str, list], rejected: list[dict]
) -> bool:
    """One clean image of a clean-only data set into ``buf``, or into ``rejected`` with the reason."""
    data, err = _read(high, key)
    if data is not None:
        try:
            png, h, w = to_png_rgb8(data)
        except ImageError as exc:
            err = str(exc)
        except Exception as exc:  # never let one file abort its shard
            err = f"cannot process ({type(exc).__name__}: {exc})"
    if err:
        rejected.append(Rejected(high.uri(key), "high", pid, err).as_dict())
        return False
    for name, value in zip(SCHEMA.names, (pid, split, None, png, h, w, None, key)):
        buf[name].append(value)
    return True
