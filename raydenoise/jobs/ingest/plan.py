"""Pairing the two listings as sorted streams (SORT_ROWS keys in memory, the rest in sorted runs on
local disk) and cutting the pairs into shard specs.
"""

from __future__ import annotations

import tempfile
from collections import Counter

import pyarrow as pa

from ...imaging.pairing import SPLITS, Pair, Rejected, file_id, id_order, iter_pairs
from ...ledger.runfiles import Positional
from ...storage.names import left_out_reason
from ...storage.parts import external_sort
from ...storage.store import Store, open_store
from ..outline import DRY_RUN_SAMPLE
from .config import IngestConfig

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
        if len(self.sample) < DRY_RUN_SAMPLE:
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
