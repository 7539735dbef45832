"""A denoise run's files in its report folder: the plan, the report parts, the final report. No Ray.

Nothing here holds one row per object in memory, so the driver of a job over millions of
objects stays small:

- the **plan** is written while the listings are merged (plan.py): ``planned.parquet`` holds
  the rows decided without work (excluded inputs, outputs an earlier report vouches for) and
  ``work-NNNNN.parquet`` the inputs to process, in key order, in row groups of GROUP rows that
  the workers read by position (Ray Data gets slice numbers, not keys);
- **report parts** ``part-NNNNNN.parquet`` (each sorted by key) are written every PART_ROWS
  rows or PART_SECONDS seconds while the job runs: a driver killed mid-job leaves them, and
  the next run reads them to trust the outputs they list without re-reading them;
- at the end the **report** (report.parquet and report.csv, one row per input) is assembled
  by merging the plan and the parts as sorted streams (parts.merged_files), then the run's
  folder is removed.

Layout: ``REPORT/.runs/<run id>/`` (a hidden folder: never read as input). Run ids sort by
start time; summary.json names the run whose report it is, so parts of older runs are ignored.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..storage.parts import (
    Writer,
    iter_batches,
    iter_rows,
    last_per_key,
    merge,
    merged_files,
    write_sorted,
)
from ..storage.store import Entry, Store
from . import report as rpt

RUNS = ".runs"
GROUP = 256  # work rows per row group: the unit a worker reads
FILE_ROWS = 256 * GROUP  # work rows per work file
PART_ROWS = (
    5000  # a report part is written every PART_ROWS rows or PART_SECONDS, whichever comes first
)
PART_SECONDS = float(os.environ.get("RAYDENOISE_REPORT_PART_SECONDS", "10"))
MAX_SLICES = 4096  # Ray Data blocks of work, at most
WORK_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("skip", pa.bool_()),
        ("listed_bytes", pa.int64()),
        ("listed_tag", pa.string()),
        ("expected_md5", pa.string()),
        ("input_tag", pa.string()),
        ("note", pa.string()),
    ]
)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _sub(store: Store, folder: str) -> Store:
    return Store(store.fs, store.uri(folder.rstrip("/")), store.key_path(folder.rstrip("/")))


def earlier_rows(rep: Store, scratch: str | None) -> Iterator[dict[str, Any]]:
    """The rows of earlier runs in this report folder, one per key, in key order: the last
    report (report.parquet) and the parts of the runs after it (drivers that were killed),
    later runs winning. Empty when there are none. ``scratch``: where to merge many parts in
    rounds (None: nothing may be written, all are merged at once)."""
    sources = []
    if rep.exists("report.parquet"):
        sources.append("report.parquet")
    last = ""
    with contextlib.suppress(Exception):
        last = json.loads(rep.read_bytes("summary.json")).get("run") or ""
    if rep.fs.exists(rep.key_path(RUNS)):
        sources += [
            f"{RUNS}/{k}"
            for k in _sub(rep, RUNS).iter_keys()
            if k.split("/", 1)[0] > last and k.rsplit("/", 1)[-1].startswith("part-")
        ]
    if not sources:
        return iter(())
    if scratch is None:
        return last_per_key(merge([iter_rows(rep, k) for k in sources]))
    return last_per_key(merged_files(rep, sources, scratch, rpt.SCHEMA))


class Positional:
    """Rows written in order to ``PREFIX00000.parquet``, ``PREFIX00001.parquet``, ... (FILE_ROWS
    rows each, row groups of GROUP rows), so that any range of positions can be read back by
    whoever needs it (read_positions) without an index: a plan handed out by slice numbers."""

    def __init__(self, store: Store, prefix: str, schema: pa.Schema):
        self.store, self.prefix, self.schema = store, prefix, schema
        self.files: list[str] = []
        self.n = 0
        self._writer: Writer | None = None

    def add(self, row: dict[str, Any]) -> None:
        if self.n % FILE_ROWS == 0:
            self.close()
            self.files.append(f"{self.prefix}{len(self.files):05d}.parquet")
            self._writer = Writer(self.store, self.files[-1], self.schema, row_group=GROUP)
        assert self._writer is not None
        self._writer.write(row)
        self.n += 1

    def close(self, *exc) -> None:
        if self._writer is not None:
            w, self._writer = self._writer, None
            w.__exit__(*(exc or (None, None, None)))


def read_positions(store: Store, prefix: str, start: int, stop: int, schema: pa.Schema) -> pa.Table:
    """Rows ``start`` to ``stop`` of a Positional's files, reading only their row groups."""
    tables = []
    i = start
    while i < stop:
        f = i // FILE_ROWS
        base = f * FILE_ROWS
        hi = min(stop, base + FILE_ROWS)
        with store.fs.open(store.key_path(f"{prefix}{f:05d}.parquet"), "rb") as fh:
            g0, g1 = (i - base) // GROUP, (hi - 1 - base) // GROUP
            t = pq.ParquetFile(fh).read_row_groups(list(range(g0, g1 + 1)))
        tables.append(t.slice(i - base - g0 * GROUP, hi - i))
        i = hi
    return pa.concat_tables(tables) if tables else schema.empty_table()


class Plan:
    """Writes a run's plan while the listings are merged: ``row`` for an input decided without
    work, ``work`` for one to process (in key order)."""

    def __init__(self, rep: Store, run_dir: str):
        self.rep, self.dir = rep, run_dir
        self.planned = Writer(rep, run_dir + "planned.parquet", rpt.SCHEMA)
        self._work = Positional(rep, run_dir + "work-", WORK_SCHEMA)

    @property
    def n_work(self) -> int:
        return self._work.n

    @property
    def work_files(self) -> list[str]:
        return self._work.files

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc) -> None:
        """Closes the files; on an exception they are discarded (nothing half-written stays)."""
        for close in (self._work.close, self.planned.__exit__):
            with contextlib.suppress(Exception) if exc[0] else contextlib.nullcontext():
                close(*exc)

    def row(self, row: dict[str, Any]) -> None:
        self.planned.write(row)

    def work(
        self,
        key: str,
        existing: Entry | None,
        expected_md5: str | None = None,
        input_tag: str | None = None,
        note: str | None = None,
    ) -> None:
        """``existing``: the output to verify and keep (None: make it). ``expected_md5``: the MD5
        an earlier report recorded for that output at the same size (a rewrite in place changed
        its tag): verification then compares it too. ``input_tag``: the input's listed tag (what
        the report records as what made the output); ``note``: why an existing output is redone."""
        self._work.add(
            {
                "key": key,
                "skip": existing is not None,
                "listed_bytes": existing.size if existing else None,
                "listed_tag": existing.tag if existing else None,
                "expected_md5": expected_md5,
                "input_tag": input_tag,
                "note": note,
            }
        )


def slicing(n_work: int) -> tuple[int, int]:
    """(slices, rows per slice): about 200 blocks for small jobs (work spreads over the actors),
    GROUP rows each for larger ones, at most MAX_SLICES."""
    if not n_work:
        return 0, 1
    blocks = max(min(n_work, 200), min(-(-n_work // GROUP), MAX_SLICES))
    size = -(-n_work // blocks)
    return -(-n_work // size), size


def read_work(rep: Store, run_dir: str, start: int, stop: int) -> pa.Table:
    """Work rows ``start`` to ``stop`` (positions in the plan)."""
    return read_positions(rep, run_dir + "work-", start, stop, WORK_SCHEMA)


class Parts:
    """Report rows from the workers, written as sorted parts every PART_ROWS rows or
    PART_SECONDS seconds (whichever comes first): memory holds one part at most."""

    def __init__(self, rep: Store, run_dir: str):
        self.rep, self.dir = rep, run_dir
        self.names: list[str] = []
        self._buf: list[pa.Table] = []
        self._rows, self._since = 0, time.monotonic()

    def add(self, t: pa.Table) -> None:
        self._buf.append(t)
        self._rows += t.num_rows
        if self._rows >= PART_ROWS or time.monotonic() - self._since >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            name = f"{self.dir}part-{len(self.names):06d}.parquet"
            write_sorted(self.rep, name, pa.concat_tables(self._buf), rpt.SCHEMA)
            self.names.append(name)
        self._buf, self._rows, self._since = [], 0, time.monotonic()


def assemble(rep: Store, plan: Plan, parts: Parts, not_done_note: str) -> None:
    """report.parquet and report.csv, one row per input in key order, merged from the plan
    (planned rows, work keys) and the parts (the last row of a key wins: Ray may run a batch
    twice after a node is lost); a work key with no row is ``not-done``."""

    def tagged(rows, source):
        return ((r["key"], source, r) for r in rows)

    streams = [
        tagged(iter_rows(rep, plan.dir + "planned.parquet"), 0),
        tagged((r for f in plan.work_files for r in iter_rows(rep, f, columns=["key"])), 1),
        tagged(last_per_key(merged_files(rep, parts.names, plan.dir + "merge-", rpt.SCHEMA)), 2),
    ]
    with Writer(rep, "report.parquet", rpt.SCHEMA) as table, rep.open_write("report.csv") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        rows = _one_per_key(heapq.merge(*streams, key=lambda x: x[0]), not_done_note)
        rpt.write_csv(_tee(rows, table.write), text)
        text.flush()
        text.detach()


def _one_per_key(merged, not_done_note: str) -> Iterator[dict[str, Any]]:
    for key, group in itertools.groupby(merged, key=lambda x: x[0]):
        got = {source: row for _, source, row in group}
        if 0 in got:
            yield got[0]
        elif 2 in got:
            yield got[2]
        else:
            yield rpt.blank_row(key, status=rpt.NOT_DONE, note=not_done_note)


def _tee(rows, sink):
    for row in rows:
        sink(row)
        yield row


def summarize(rep: Store, seconds: float) -> dict[str, Any]:
    """summary statistics of report.parquet, read a batch at a time (report.summarize_batches)."""
    return rpt.summarize_batches(
        lambda columns: iter_batches(rep, "report.parquet", columns, 8192), seconds
    )


def examples(rep: Store, n: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """The report's best and worst ``n`` rows by PSNR (a streaming top-k); without a reference,
    the ``n`` most and least changed (``change``, RMS of output - input); else its first ``n``
    written rows."""

    def written(metric: str | None) -> Iterator[dict[str, Any]]:
        for b in iter_batches(rep, "report.parquet", rpt.COLUMNS, 8192):
            keep = pc.fill_null(pc.equal(b.column("status"), "ok"), False)
            if metric:
                keep = pc.and_(keep, pc.is_valid(b.column(metric)))
            yield from b.filter(keep).to_pylist()

    for metric, high, low in (
        ("psnr", "best", "worst"),
        ("change", "most changed", "least changed"),
    ):
        top = heapq.nlargest(n, written(metric), key=lambda r: r[metric])
        if top:
            keys = {r["key"] for r in top}
            bottom = [
                r
                for r in heapq.nsmallest(n, written(metric), key=lambda r: r[metric])
                if r["key"] not in keys
            ]
            return [(high, r) for r in top] + [(low, r) for r in bottom]
    return [("example", r) for r in itertools.islice(written(None), n)]


def remove_run(rep: Store, run_dir: str) -> None:
    """Remove one run's folder (a run that stopped before any work)."""
    rep.remove_folder(run_dir.rstrip("/"))


def remove_runs(rep: Store, run_id: str) -> None:
    """After a report that includes them is written: remove this run's folder and those of
    earlier runs (drivers that were killed: their rows are in the report now). A later run's
    folder is never touched (the run lock keeps a second live run out; see runlock)."""
    if not rep.fs.exists(rep.key_path(RUNS)):
        return
    for name in {k.split("/", 1)[0] for k in _sub(rep, RUNS).iter_keys()}:
        if name <= run_id:
            rep.remove_folder(f"{RUNS}/{name}")
    with contextlib.suppress(OSError):
        if not rep.is_s3:
            os.rmdir(rep.key_path(RUNS))
