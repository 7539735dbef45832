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
from ...session import StartRay
from ...storage.dataset import MANIFEST
from ...storage.errors import StorageError, last_error_line
from ...storage.names import is_partial
from ...storage.store import Store, endpoint_from_env, open_store
from ..outline import Job, Phases, run_job
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
    return run_job(_Ingest(cfg, log), cfg.dry_run, start_ray)


class _Ingest(Job[IngestResult]):
    """An ingest run in the job outline: check the stores, pair the listings (plan files in the
    output, removed at the end), one Ray task per shard, then manifest.json."""

    error = IngestError

    def __init__(self, cfg: IngestConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        self.run = (
            _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            + "-"
            + uuid.uuid4().hex[:6]
        )
        self.plan_prefix = f".ingest-{self.run}/pairs-"
        self.out: Store | None = None

    def check(self) -> None:
        cfg = self.cfg
        if cfg.rows_per_shard < 1:
            raise IngestError("--rows-per-shard must be at least 1")
        try:
            check_split(cfg.split)
        except ValueError as exc:
            raise IngestError(str(exc)) from None
        # Resolved here, once: Ray workers on other nodes do not see the driver's environment.
        self.endpoint = endpoint_from_env(cfg.s3_endpoint)
        try:
            self.high = open_store(cfg.high, self.endpoint)
            self.low = open_store(cfg.low, self.endpoint) if cfg.low is not None else None
            out = open_store(cfg.out, self.endpoint)
            for side, store in (("--low", self.low), ("--high", self.high)):
                if store is not None and store.contains(out):
                    raise IngestError(
                        f"--out {out.root} is inside {side} {store.root}: shards would be read back as inputs"
                    )
            for store in (self.low, self.high):
                if store is not None:
                    # a missing or unlistable input is reported before anything is written
                    next(store.iter_entries(), None)
            if not cfg.dry_run:
                out.check_writable()
            self.out = out
        except StorageError as exc:
            raise IngestError(str(exc)) from None

    def _pair(self, write_plan: bool) -> None:
        """List both sides and pair them (the plan's files are written to the output unless
        this is a dry run); the counts are announced."""
        assert self.out is not None
        try:
            self.plan, self.rejected, listed = _pair(
                self.cfg,
                self.low,
                self.high,
                self.out if write_plan else None,
                self.plan_prefix,
                self.run,
            )
        except StorageError as exc:
            raise IngestError(str(exc)) from None
        if self.low is None:
            self.log(
                f"ingest: {plural(listed['high'], 'clean file')}, no --low: a clean-only data set (train it with --degrade)"
            )
        else:
            self.log(
                f"ingest: {listed['low']:,} low and {plural(listed['high'], 'high file')}, "
                f"{plural(self.plan.n, 'candidate pair')}"
            )

    def dry_run(self, phases: Phases) -> IngestResult:
        assert self.out is not None
        self._pair(write_plan=False)
        summary = _dry_run(
            self.cfg, self.plan, self.rejected, self.low, self.high, self.out, self.log, phases
        )
        return IngestResult({}, self.out.root, summary)

    def prepare(self) -> bool:
        self._pair(write_plan=True)
        return True

    def shared_paths(self):
        assert self.out is not None
        return {"--low": self.low.root if self.low else None, "--high": self.high.root}, {
            "--out": self.out.root
        }

    def close(self) -> None:
        if self.out is not None and not self.cfg.dry_run:
            _remove_plan(self.out, self.plan_prefix)

    def _nothing_valid(self) -> IngestError:
        """No shard has a row: the error, the first rejections shown."""
        low, high, out, rejected = self.low, self.high, self.out, self.rejected
        assert out is not None
        for r in rejected[:20]:
            console().error(f"  {r['file']}: {r['reason']}")
        return IngestError(
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

    def work(self, phases: Phases) -> IngestResult:
        """One task per shard spec (largest first, so the last tasks to start are the short
        ones), then the manifest."""
        cfg, low, high, out, plan, rejected = (
            self.cfg,
            self.low,
            self.high,
            self.out,
            self.plan,
            self.rejected,
        )
        assert out is not None
        specs = sorted(plan.specs, key=lambda s: -(s["stop"] - s["start"]))
        shards: list[dict] = []
        t0 = time.time()
        first_shard_s = _run_shards(self, specs, shards, phases.t_start) if specs else None
        shards.sort(key=lambda s: s["path"])
        total = sum(s["rows"] for s in shards)
        if rejected:
            console().error(f"ingest: rejected {summarize_rejected(rejected)}")
        if total == 0:
            raise self._nothing_valid()
        counts = {s: sum(x["rows"] for x in shards if x["split"] == s) for s in SPLITS}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "format": "raydenoise-pairs",
            "raydenoise_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "run": self.run,
            "args": {
                **asdict(cfg),
                "split": list(cfg.split),
                "low": low.root if low else None,
                "high": high.root,
                "out": out.root,
                "s3_endpoint": self.endpoint,
            },
            "clean_only": low is None,
            "counts": {**counts, "total": total, "rejected_files": len(rejected)},
            "seconds": round(time.time() - t0, 3),
            "phases": phases.record("first_shard_s", first_shard_s),
            "columns": COLUMN_DOCS,
            "shards": shards,
            "rejected": sorted(rejected, key=lambda r: (r["id"], r["side"])),
        }
        out.write_bytes(MANIFEST, json.dumps(manifest, indent=2, allow_nan=False).encode())
        _remove_stale_shards(out, {s["path"] for s in shards})
        self.log(
            f"ingest: {plural(total, 'pair') if low else plural(total, 'clean image')} ({counts['train']:,} train, "
            f"{counts['val']:,} val, {counts['test']:,} test) in {plural(len(shards), 'shard')} -> {out.uri(MANIFEST)}"
        )
        return IngestResult(manifest=manifest, out=out.root)


def _run_shards(
    job: _Ingest, specs: list[dict], shards: list[dict], t_start: float
) -> float | None:
    """One Ray Data task per shard spec; each shard written is added to ``shards``, each file it
    rejected to the job's ``rejected``. Returns the seconds to the first shard. A storage failure
    removes this run's shards (the previous data set stays) and raises IngestError."""
    import ray

    low, high, out, plan, rejected = job.low, job.high, job.out, job.plan, job.rejected
    assert out is not None
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
        endpoint=job.endpoint,
        plan_prefix=job.plan_prefix,
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
        _remove_run_shards(out, job.run)
        raise IngestError(
            f"storage failed, ingest stopped (the previous data set in {out.root}, if any, is "
            f"unchanged; rerun when fixed): {exc}"
        ) from None
    except Exception as exc:
        _remove_run_shards(out, job.run)
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
