"""``ingest --dry-run``: the pairs, splits and rejected files, and an estimate of the output size
from a few pairs.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable

from ...console import plural
from ...imaging.pairing import SPLITS
from ...storage.store import (
    Store,
)
from ..outline import Estimate, Phases
from .config import IngestConfig
from .plan import _ShardPlan
from .shards import _read, process_pair


def _dry_run(
    cfg: IngestConfig,
    plan: _ShardPlan,
    rejected: list[dict],
    low: Store | None,
    high: Store,
    out: Store,
    log: Callable[[str], None],
    phases: Phases,
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
    estimate = Estimate()
    for p in plan.sample:
        estimate.time(functools.partial(_convert_one, p, low, high))
    summary = {
        "dry_run": True,
        "pairs": plan.n,
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "shards": shards,
        "rejected": len(rejected),
        "rejected_by_reason": dict(reasons),
        "rejected_examples": examples,
        "sampled": estimate.sampled,
        "seconds_per_pair": estimate.per_unit(),
        "cpu_seconds": estimate.cpu_seconds(plan.n),
        "plan_s": round(time.time() - phases.t_start, 3),
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
    line = estimate.line("ingest", "pair", "pair to read, check and convert", plan.n)
    if line:
        log(line)
    log("ingest --dry-run: nothing was written")
    return summary


def _convert_one(p, low: Store | None, high: Store) -> float | None:
    """Read, check and convert one pair as the job would: 1 (a pair), or None when it would be
    rejected."""
    hd, _ = _read(high, p.high_key)
    ld, _ = _read(low, p.low_key or "") if low is not None else (hd, None)
    if hd is None or ld is None or process_pair(ld, hd)[0] is None:
        return None
    return 1
