"""``raydenoise ingest``: stream paired images into Parquet shards with Ray Data.

The driver only lists keys and pairs them (no pixels), as a merge of the two listings sorted by
id (pairing.iter_pairs; each listing streamed and sorted SORT_ROWS keys at a time, the rest in
sorted runs on local disk). Pairs are cut into shard specs of at most ``rows_per_shard``
pairs, per split, in natural id order, written to ``OUT/.ingest-<run>/`` as they come (a spec
is a range of positions there); Ray Data runs one task per shard spec, and each task reads its
pairs, then reads, validates, normalizes and writes its own shard in small row groups, so
memory per task stays bounded however large the data set. Tasks return only small records
(row counts and rejected files), which the driver turns into ``manifest.json``.

Layout of OUT::

    manifest.json                     arguments, counts, shard list, schema, rejected inputs
    train/<run>-00000.parquet ...     at most rows_per_shard rows each
    val/<run>-00000.parquet ...
    test/<run>-00000.parquet ...

Re-running into the same OUT writes new shards under a new run name, then the new manifest,
then deletes the previous run's shards: readers of the manifest always see a consistent set.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .console import Progress, console, duration, plural
from .dataset import MANIFEST
from .images import ImageError, to_png_rgb8
from .pairing import SPLITS, Pair, Rejected, check_split, file_id, id_order, iter_pairs
from .parts import external_sort
from .runfiles import Positional, read_positions
from .session import StartRay, check_shared_paths, ensure_ray
from .storage import (
    StorageError,
    Store,
    cached_store,
    endpoint_from_env,
    is_partial,
    last_error_line,
    left_out_reason,
    object_error,
    open_store,
    storage_wide,
)

SCHEMA_VERSION = 2  # 2: low and low_file may be null (clean-only data sets)
ROW_GROUP_ROWS = 8  # pairs per Parquet row group: bounds a writer's memory to a few MB

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("low", pa.binary(), nullable=True),
        pa.field("high", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("low_file", pa.string(), nullable=True),
        pa.field("high_file", pa.string(), nullable=False),
    ],
    metadata={"raydenoise.schema_version": str(SCHEMA_VERSION)},
)
COLUMN_DOCS = {
    "id": "relative path without extension, shared by the pair",
    "split": "train, val or test (seeded hash of id)",
    "low": "PNG-encoded 8-bit RGB of the degraded image (null in a clean-only data set)",
    "high": "PNG-encoded 8-bit RGB of the clean image",
    "height": "pixels",
    "width": "pixels",
    "low_file": "source key of low, relative to --low (null in a clean-only data set)",
    "high_file": "source key of high, relative to --high",
}


class IngestError(Exception):
    """A user-facing failure of the whole ingest (bad arguments, nothing valid, storage)."""


class _StorageFailed(Exception):
    """A shard task met a failure of the storage itself (its message names the object)."""


@dataclass(frozen=True)
class IngestConfig:
    low: str | None  # None: a clean-only data set (train it with --degrade)
    high: str
    out: str
    rows_per_shard: int = 128
    seed: int = 42
    split: tuple[float, float, float] = (0.7, 0.2, 0.1)
    s3_endpoint: str | None = None
    include_hidden: bool = False  # files and folders whose names start with '.'
    dry_run: bool = (
        False  # list and pair only: counts per split, rejections, an estimate; nothing written
    )


@dataclass(frozen=True)
class IngestResult:
    manifest: dict  # empty for a dry run
    out: str
    plan: dict | None = None  # a dry run's summary


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


SAMPLE = 3  # pairs read and converted on the driver by --dry-run to estimate the time


def _dry_run(
    cfg: IngestConfig,
    plan: _ShardPlan,
    rejected: list[dict],
    low: Store | None,
    high: Store,
    out: Store,
    log: Callable[[str], None],
    t_start: float,
) -> dict:
    """What an ingest would do, without Ray and without writing: the pairs per split, the shards,
    every rejection known from the listing (by reason, with an example), and the time per pair
    of reading and converting a few pairs here (decoding can reject more when the job runs)."""
    splits = plan.splits
    shards = len(plan.specs)
    reasons: Counter = Counter()
    examples: dict[str, str] = {}
    for r in rejected:
        why = r["reason"].split(":")[0]
        reasons[why] += 1
        examples.setdefault(why, r["file"])
    seconds, sampled = 0.0, 0
    for p in plan.sample:
        t0 = time.perf_counter()
        try:
            hd, _ = _read(high, p.high_key)
            ld, _ = _read(low, p.low_key or "") if low is not None else (hd, None)
            if hd is None or ld is None or process_pair(ld, hd)[0] is None:
                continue
        except Exception:
            continue
        seconds += time.perf_counter() - t0
        sampled += 1
    per_pair = seconds / sampled if sampled else None
    summary = {
        "dry_run": True,
        "pairs": plan.n,
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "shards": shards,
        "rejected": len(rejected),
        "rejected_by_reason": dict(reasons),
        "rejected_examples": examples,
        "sampled": sampled,
        "seconds_per_pair": per_pair,
        "cpu_seconds": per_pair * plan.n if per_pair is not None else None,
        "plan_s": round(time.time() - t_start, 3),
    }
    log(
        f"ingest --dry-run: {plural(plan.n, 'pair')} ("
        + ", ".join(f"{splits.get(s, 0):,} {s}" for s in SPLITS)
        + f") in {plural(shards, 'shard')} of up to "
        f"{cfg.rows_per_shard} rows -> {out.root}; {plural(len(rejected), 'file')} rejected"
        + (
            " ("
            + "; ".join(f"{n:,} {why}, e.g. {examples[why]}" for why, n in reasons.items())
            + ")"
            if reasons
            else ""
        )
    )
    if per_pair is not None:
        log(
            f"ingest --dry-run: estimate: {per_pair:.3f} s per pair to read, check and convert ({sampled} sampled): "
            f"about {duration(per_pair * plan.n)} on one CPU, divided by the CPUs of the cluster that runs it"
        )
    log("ingest --dry-run: nothing was written")
    return summary


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


SORT_ROWS = 5_000  # keys sorted in memory at a time while pairing (more go to sorted runs on disk)
PAIRS_SCHEMA = pa.schema([("id", pa.string()), ("low_key", pa.string()), ("high_key", pa.string())])
SORT_SCHEMA = pa.schema([("id", pa.string()), ("key", pa.string())])


class _ShardPlan:
    """Pairs (in id order) into shards of up to ``rows_per_shard`` pairs of one split each. The
    pairs go to the data set's plan files (runfiles.Positional) and a shard spec holds only its
    range of positions, so the driver holds one shard's pairs per split, never the listing.
    Without a store (a dry run) pairs are only counted."""

    def __init__(self, store: Store | None, prefix: str, rows_per_shard: int, run: str):
        self.pairs = Positional(store, prefix, PAIRS_SCHEMA) if store is not None else None
        self.rows_per_shard, self.run = rows_per_shard, run
        self.buf: dict[str, list[Pair]] = {s: [] for s in SPLITS}
        self.specs: list[dict] = []
        self.shards: Counter = Counter()  # shards per split so far (numbers the next one)
        self.splits: Counter = Counter()
        self.sample: list[Pair] = []
        self.n = 0

    def add(self, pair: Pair) -> None:
        self.n += 1
        self.splits[pair.split] += 1
        if len(self.sample) < SAMPLE:
            self.sample.append(pair)
        self.buf[pair.split].append(pair)
        if len(self.buf[pair.split]) == self.rows_per_shard:
            self._spec(pair.split)

    def _spec(self, split: str) -> None:
        chunk, self.buf[split] = self.buf[split], []
        if not chunk:
            return
        n = self.shards[split]
        self.shards[split] += 1
        start = self.pairs.n if self.pairs is not None else 0
        if self.pairs is not None:
            for p in chunk:
                self.pairs.add({"id": p.id, "low_key": p.low_key, "high_key": p.high_key})
        self.specs.append(
            {
                "shard": f"{split}/{self.run}-{n:05d}.parquet",
                "split": split,
                "start": start,
                "stop": start + len(chunk),
            }
        )

    def close(self, *exc) -> None:
        if not exc or exc[0] is None:
            for split in SPLITS:
                self._spec(split)
        if self.pairs is not None:
            self.pairs.close(*exc)


def summarize_rejected(rejected: list[dict]) -> str:
    """``3 files (2 no partner, 1 corrupt or truncated image data)``."""
    kinds = Counter(r["reason"].split(":")[0].split(" (")[0] for r in rejected)
    parts = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    return f"{len(rejected)} file{'s' * (len(rejected) != 1)} ({parts})"


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


def _pair(
    cfg: IngestConfig, low: Store | None, high: Store, out: Store | None, plan_prefix: str, run: str
):
    """Pair the two listings as sorted streams (each sorted by id, SORT_ROWS keys at a time in
    memory, the rest in sorted runs in a local temporary folder) into a _ShardPlan; returns it,
    the rejected files and how many files each side listed."""
    rejected: list[dict] = []
    listed: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="raydenoise-ingest-") as tmp:
        scratch = open_store(tmp)

        def side(store: Store, name: str):
            def rows():
                for e in store.iter_entries():
                    listed[name] += 1
                    why = left_out_reason(e.key, cfg.include_hidden)
                    if why:
                        rejected.append(
                            Rejected(store.uri(e.key), name, file_id(e.key), why).as_dict()
                        )
                    else:
                        yield {"id": file_id(e.key), "key": e.key}

            ordered = external_sort(
                rows(),
                lambda r: (id_order(r["id"]), r["key"]),
                scratch,
                f"{name}-",
                SORT_SCHEMA,
                SORT_ROWS,
            )
            return ((r["id"], r["key"]) for r in ordered)

        plan = _ShardPlan(out, plan_prefix, cfg.rows_per_shard, run)
        try:
            for x in iter_pairs(
                side(low, "low") if low is not None else None,
                side(high, "high"),
                seed=cfg.seed,
                fractions=cfg.split,
                low_uri=low.uri if low else None,
                high_uri=high.uri,
            ):
                if isinstance(x, Pair):
                    plan.add(x)
                else:
                    rejected.append(x.as_dict())
        except BaseException as exc:
            plan.close(type(exc), exc, exc.__traceback__)
            raise
        plan.close()
    return plan, rejected, listed


def _remove_plan(out: Store, plan_prefix: str) -> None:
    out.remove_folder(plan_prefix.split("/")[0])


def _write(
    cfg, plan, rejected, low, high, out, endpoint, run, plan_prefix, log, t_start, start_ray
) -> IngestResult:
    """The Ray part: one task per shard spec (largest first, so the last tasks to start are the
    short ones), then the manifest."""
    specs = sorted(plan.specs, key=lambda s: -(s["stop"] - s["start"]))
    shards: list[dict] = []
    check_s = time.time() - t_start
    ray_s = (start_ray or ensure_ray)() or 0.0
    import ray

    not_shared = check_shared_paths(
        reads={"--low": low.root if low else None, "--high": high.root}, writes={"--out": out.root}
    )
    if not_shared:
        raise IngestError(not_shared)
    t0, first_shard_s = time.time(), None
    if specs:
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
            raise IngestError(
                f"writing shards to {out.root} failed: {last_error_line(exc)}"
            ) from exc
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
