"""The ingest job: checks, pairing, the shard tasks on Ray, then manifest.json (run_ingest)."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict

from ..._version import __version__
from ...console import Progress, console, plural
from ...imaging.pairing import SPLITS, check_split
from ...session import StartRay, check_shared_paths, ensure_ray
from ...storage.dataset import MANIFEST
from ...storage.errors import StorageError, last_error_line
from ...storage.names import is_partial
from ...storage.store import Store, endpoint_from_env, open_store
from .config import (
    COLUMN_DOCS,
    SCHEMA_VERSION,
    IngestConfig,
    IngestError,
    IngestResult,
    _StorageFailed,
)
from .dry_run import _dry_run
from .plan import _pair, _remove_plan, summarize_rejected
from .shards import _write_shard


def run_ingest(
    cfg: IngestConfig, log: Callable[[str], None] = print, start_ray: StartRay | None = None
) -> IngestResult:
    """Run the whole ingest; raises IngestError with a user-facing message on failure.
    Arguments and locations are checked and the inputs listed and paired before Ray starts
    (``start_ray``, default :func:`ensure_ray`)."""
    t_start = time.time()
    if cfg.rows_per_shard < 1:
        raise IngestError("--rows-per-shard must be at least 1")
    try:
        check_split(cfg.split)
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    # Resolved here, once: Ray workers on other nodes do not see the driver's environment.
    endpoint = endpoint_from_env(cfg.s3_endpoint)
    try:
        high = open_store(cfg.high, endpoint)
        low = open_store(cfg.low, endpoint) if cfg.low is not None else None
        out = open_store(cfg.out, endpoint)
        for side, store in (("--low", low), ("--high", high)):
            if store is not None and store.contains(out):
                raise IngestError(
                    f"--out {out.root} is inside {side} {store.root}: shards would be read back as inputs"
                )
        for store in (low, high):
            if store is not None:
                next(
                    store.iter_entries(), None
                )  # a missing or unlistable input is reported before anything is written
        if not cfg.dry_run:
            out.check_writable()
    except StorageError as exc:
        raise IngestError(str(exc)) from None
    run = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    plan_prefix = f".ingest-{run}/pairs-"
    try:
        plan, rejected, listed = _pair(
            cfg, low, high, None if cfg.dry_run else out, plan_prefix, run
        )
    except StorageError as exc:
        _remove_plan(out, plan_prefix)
        raise IngestError(str(exc)) from None
    if low is None:
        log(
            f"ingest: {plural(listed['high'], 'clean file')}, no --low: a clean-only data set (train it with --degrade)"
        )
    else:
        log(
            f"ingest: {listed['low']:,} low and {plural(listed['high'], 'high file')}, "
            f"{plural(plan.n, 'candidate pair')}"
        )
    if cfg.dry_run:
        return IngestResult(
            {}, out.root, _dry_run(cfg, plan, rejected, low, high, out, log, t_start)
        )
    try:
        return _write(
            cfg, plan, rejected, low, high, out, endpoint, run, plan_prefix, log, t_start, start_ray
        )
    finally:
        _remove_plan(out, plan_prefix)


def _write(
    cfg, plan, rejected, low, high, out, endpoint, run, plan_prefix, log, t_start, start_ray
) -> IngestResult:
    """The Ray part: one task per shard spec (largest first, so the last tasks to start are the
    short ones), then the manifest."""
    specs = sorted(plan.specs, key=lambda s: -(s["stop"] - s["start"]))
    shards: list[dict] = []
    check_s = time.time() - t_start
    ray_s = (start_ray or ensure_ray)() or 0.0

    not_shared = check_shared_paths(
        reads={"--low": low.root if low else None, "--high": high.root}, writes={"--out": out.root}
    )
    if not_shared:
        raise IngestError(not_shared)
    t0 = time.time()
    first_shard_s = (
        _run_shards(
            specs, plan, rejected, low, high, out, endpoint, run, plan_prefix, shards, t_start
        )
        if specs
        else None
    )
    shards.sort(key=lambda s: s["path"])
    total = sum(s["rows"] for s in shards)
    if rejected:
        console().error(f"ingest: rejected {summarize_rejected(rejected)}")
    if total == 0:
        for r in rejected[:20]:
            console().error(f"  {r['file']}: {r['reason']}")
        raise IngestError(
            (
                f"no valid pairs in {low.root} and {high.root}"
                if low
                else f"no valid images in {high.root}"
            )
            + f"; nothing written to {out.root}"
            + (
                f" ({len(rejected)} files rejected, reasons above)"
                if rejected
                else " (no files found)"
            )
        )

    counts = {s: sum(x["rows"] for x in shards if x["split"] == s) for s in SPLITS}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": "raydenoise-pairs",
        "raydenoise_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": run,
        "args": {
            **asdict(cfg),
            "split": list(cfg.split),
            "low": low.root if low else None,
            "high": high.root,
            "out": out.root,
            "s3_endpoint": endpoint,
        },
        "clean_only": low is None,
        "counts": {**counts, "total": total, "rejected_files": len(rejected)},
        "seconds": round(time.time() - t0, 3),
        "phases": {
            "check_s": round(check_s, 3),
            "ray_init_s": round(ray_s, 3),
            "first_shard_s": round(first_shard_s, 3) if first_shard_s else None,
        },
        "columns": COLUMN_DOCS,
        "shards": shards,
        "rejected": sorted(rejected, key=lambda r: (r["id"], r["side"])),
    }
    out.write_bytes(MANIFEST, json.dumps(manifest, indent=2, allow_nan=False).encode())
    _remove_stale_shards(out, {s["path"] for s in shards})
    log(
        f"ingest: {plural(total, 'pair') if low else plural(total, 'clean image')} ({counts['train']:,} train, "
        f"{counts['val']:,} val, {counts['test']:,} test) in {plural(len(shards), 'shard')} -> {out.uri(MANIFEST)}"
    )
    return IngestResult(manifest=manifest, out=out.root)


def _run_shards(
    specs, plan, rejected, low, high, out, endpoint, run, plan_prefix, shards, t_start
) -> float | None:
    """One Ray Data task per shard spec; each shard written is added to ``shards``, each file it
    rejected to ``rejected``. Returns the seconds to the first shard. A storage failure removes
    this run's shards (the previous data set stays) and raises IngestError."""
    import ray

    first_shard_s = None
    # A single map operator needs no per-operator reservation; with it Ray Data keeps part
    # of a small cluster idle (measured: 2 CPUs, 20% slower). This job's context only.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = False
    ds = ray.data.from_items(specs, override_num_blocks=len(specs))
    write = functools.partial(
        _write_shard,
        low_uri=low.root if low else None,
        high_uri=high.root,
        out_uri=out.root,
        endpoint=endpoint,
        plan_prefix=plan_prefix,
    )
    try:
        with Progress("ingest", plan.n, unit="pair" if low else "image") as progress:
            for row in ds.map(write, num_cpus=1).iter_rows():
                if row["fatal"]:
                    raise _StorageFailed(row["fatal"])
                rejected.extend(json.loads(row["rejected"]))
                first_shard_s = first_shard_s or time.time() - t_start
                progress.update(int(row["pairs"]))
                if row["shard"]:
                    shards.append(
                        {
                            "path": row["shard"],
                            "split": row["split"],
                            "rows": int(row["rows"]),
                            "bytes": int(row["bytes"]),
                            "node": row["node"],
                        }
                    )
    except _StorageFailed as exc:
        _remove_run_shards(out, run)
        raise IngestError(
            f"storage failed, ingest stopped (the previous data set in {out.root}, if any, is "
            f"unchanged; rerun when fixed): {exc}"
        ) from None
    except Exception as exc:
        _remove_run_shards(out, run)
        raise IngestError(f"writing shards to {out.root} failed: {last_error_line(exc)}") from exc
    return first_shard_s


def _remove_stale_shards(out: Store, keep: set[str]) -> None:
    """Delete Parquet shards in the split folders that the new manifest does not list."""
    stale = [
        k
        for k in out.list_keys()
        if k.split("/")[0] in SPLITS and k not in keep and (k.endswith(".parquet") or is_partial(k))
    ]
    out.remove(stale)


def _remove_run_shards(out: Store, run: str) -> None:
    """Best-effort removal of the shards a failed run wrote (the previous manifest stays valid)."""
    try:
        out.remove([k for k in out.list_keys() if k.split("/")[-1].startswith(run + "-")])
    except Exception:
        pass
