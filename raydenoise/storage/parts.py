"""Rows on storage as sorted Parquet files, written as a job goes and merged as streams. No Ray.

A job over a bucket cannot hold one row per object: ``denoise`` writes its plan and its
per-image report rows as Parquet files (each sorted by key) under the report folder while it
runs, and assembles the report at the end by merging them as sorted streams. Many files are
merged in rounds of at most FAN_IN (an external merge sort), so memory is bounded by
FAN_IN x READ_BATCH rows whatever the number of rows or files.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

READ_BATCH = 512  # rows read at a time from one file
WRITE_BATCH = 1024  # rows buffered as dicts before they become Arrow columns
ROW_GROUP = 16384  # rows per Parquet row group (its metadata stays in memory while a file is open)
FAN_IN = 32  # files merged at once
SORT_ROW_GROUP = 1024  # rows per row group of external_sort's runs


class Writer:
    """Rows to one Parquet file on a Store, streamed (at most one row group in memory, as Arrow
    columns) and published atomically when the block ends without an exception
    (Store.open_write). Row groups of ``row_group`` rows: few enough that a file of millions of
    rows has a small footer, small enough to buffer."""

    def __init__(self, store, key: str, schema: pa.Schema, row_group: int = ROW_GROUP):
        self.schema, self.row_group, self.rows = schema, row_group, 0
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(store.open_write(key))
        self._writer = pq.ParquetWriter(self._file, schema)
        self._dicts: list[dict[str, Any]] = []
        self._tables: list[pa.Table] = []
        self._buffered = 0

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> bool | None:
        if exc[0] is None:
            self._flush(final=True)
            self._writer.close()
        else:
            with contextlib.suppress(Exception):
                self._writer.close()
        return self._stack.__exit__(*exc)

    def write(self, row: dict[str, Any]) -> None:
        self._dicts.append(row)
        if len(self._dicts) >= min(WRITE_BATCH, self.row_group):
            self._add(pa.Table.from_pylist(self._dicts, schema=self.schema))
            self._dicts.clear()

    def write_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def write_table(self, t: pa.Table) -> None:
        self._add(t.select(self.schema.names).cast(self.schema))

    def _add(self, t: pa.Table) -> None:
        self._tables.append(t)
        self._buffered += t.num_rows
        self._flush()

    def _flush(self, final: bool = False) -> None:
        if final and self._dicts:
            self._add(pa.Table.from_pylist(self._dicts, schema=self.schema))
            self._dicts.clear()
        while self._buffered >= self.row_group or (final and self._buffered):
            t = pa.concat_tables(self._tables)
            n = min(self.row_group, t.num_rows)
            self._writer.write_table(t.slice(0, n), row_group_size=n)
            self.rows += n
            rest = t.slice(n)
            self._tables, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows


def write_sorted(store, key: str, t: pa.Table, schema: pa.Schema) -> None:
    """One part: ``t`` sorted by key, written atomically."""
    with Writer(store, key, schema) as w:
        w.write_table(t.sort_by("key"))


def iter_batches(
    store, key: str, columns: list[str] | None = None, batch: int = READ_BATCH
) -> Iterator[pa.RecordBatch]:
    """Some columns (None: all) of a Parquet file, ``batch`` rows at a time, read one row group at
    a time (pyarrow's own iter_batches grows its memory with the number of row groups read).
    A requested column the file lacks (a report written by an older version) reads as nulls."""
    with store.fs.open(store.key_path(key), "rb") as f:
        pf = pq.ParquetFile(f)
        present = set(pf.schema_arrow.names)
        missing = [c for c in columns or [] if c not in present]
        for i in range(pf.num_row_groups):
            t = pf.read_row_group(
                i, columns=[c for c in columns if c in present] if columns else None
            )
            for name in missing:
                t = t.append_column(name, pa.nulls(t.num_rows))
            yield from (t.select(columns) if columns else t).to_batches(batch)


def iter_rows(store, key: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of one Parquet file as dicts, READ_BATCH at a time."""
    for batch in iter_batches(store, key, columns):
        yield from batch.to_pylist()


def _by_key(r: dict[str, Any]) -> str:
    return r["key"]


def merge(
    streams: list[Iterable[dict[str, Any]]], key: Callable[[dict], Any] = _by_key
) -> Iterator[dict[str, Any]]:
    """Sorted row streams as one, sorted by ``key`` (default the "key" column); rows with equal
    keys come in ``streams`` order."""
    return heapq.merge(*streams, key=key)


def last_per_key(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The last row of each run of equal keys (a sorted stream in, one row per key out)."""
    for _, group in itertools.groupby(rows, key=lambda r: r["key"]):
        yield collections.deque(group, maxlen=1)[0]


def merged_files(
    store,
    keys: list[str],
    scratch: str,
    schema: pa.Schema,
    key: Callable[[dict], Any] = _by_key,
    row_group: int = ROW_GROUP,
) -> Iterator[dict[str, Any]]:
    """The rows of the sorted files ``keys`` as one sorted stream (equal keys in ``keys`` order).
    More than FAN_IN files are first merged in groups into files under ``scratch`` (kept in
    order, so ties keep their order), round after round."""
    keys, level = list(keys), 0
    while len(keys) > FAN_IN:
        merged = []
        for i in range(0, len(keys), FAN_IN):
            name = f"{scratch}merge-{level:02d}-{i // FAN_IN:06d}.parquet"
            with Writer(store, name, schema, row_group) as w:
                w.write_all(merge([iter_rows(store, k) for k in keys[i : i + FAN_IN]], key))
            merged.append(name)
        keys, level = merged, level + 1
    return merge([iter_rows(store, k) for k in keys], key)


def external_sort(
    rows: Iterable[dict[str, Any]],
    key: Callable[[dict], Any],
    store,
    scratch: str,
    schema: pa.Schema,
    run_rows: int = 100_000,
) -> Iterator[dict[str, Any]]:
    """``rows`` sorted by ``key`` (stable), holding at most ``run_rows`` of them: runs of that
    many are sorted here and written under ``scratch`` on ``store``, then merged as streams. The
    runs have small row groups (a merge holds one row group of each file it reads)."""
    run: list[dict[str, Any]] = []
    names: list[str] = []
    for row in rows:
        run.append(row)
        if len(run) >= run_rows:
            run.sort(key=key)
            names.append(f"{scratch}run-{len(names):06d}.parquet")
            with Writer(store, names[-1], schema, SORT_ROW_GROUP) as w:
                w.write_all(run)
            run = []
    run.sort(key=key)
    if not names:
        return iter(run)
    return merge([merged_files(store, names, scratch, schema, key, SORT_ROW_GROUP), run], key)


def median(
    read: Callable[[], Iterable[np.ndarray]],
    count: int,
    lo: float,
    hi: float,
    collect: int = 200_000,
) -> float:
    """The exact median of ``count`` finite values that ``read()`` streams (as arrays; it is
    called once per pass, and non-finite values in it are ignored), between ``lo`` and ``hi``,
    without holding them: histogram passes narrow the range holding each middle rank until at
    most ``collect`` values lie in it, which are then sorted."""
    ranks = (count // 2,) if count % 2 else (count // 2 - 1, count // 2)
    return float(np.mean([_kth(read, k, lo, hi, collect) for k in ranks]))


def _kth(read, k: int, lo: float, hi: float, collect: int) -> float:
    below, last = 0, True  # values < lo; whether hi itself is in the range
    while True:

        def inside(v):
            v = v[np.isfinite(v)]
            return v[(v >= lo) & ((v <= hi) if last else (v < hi))]

        n = sum(inside(v).size for v in read())
        if n <= collect or lo == hi:
            if lo == hi:
                return lo
            vals = np.sort(np.concatenate([inside(v) for v in read()] or [np.zeros(0)]))
            return float(vals[k - below])
        edges = np.maximum.accumulate(np.linspace(lo, hi, 4097))  # monotonic even among subnormals
        edges = np.minimum(edges, hi)
        counts = np.zeros(4096, np.int64)
        for v in read():
            counts += np.histogram(inside(v), edges)[0]
        cum = np.cumsum(counts)
        b = int(np.searchsorted(cum, k - below, side="right"))
        below += int(cum[b - 1]) if b else 0
        new_lo, new_hi = float(edges[b]), float(edges[b + 1])
        last = last and b == 4095
        if (new_lo, new_hi) == (lo, hi):  # no narrower float range: collect what is left
            collect = n
        lo, hi = new_lo, new_hi
