"""``evaluate --dry-run``: the pairs a split holds and a time estimate from a few of them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...console import duration, plural
from ...storage.dataset import iter_shard_rows
from ...storage.errors import object_error
from ..outline import DRY_RUN_SAMPLE
from .config import EvaluateConfig, EvaluateError
from .scorer import _ROW_KEYS, Scorer
from .table import _mean


def dry_run(
    cfg: EvaluateConfig,
    manifest: dict,
    shards: list[str],
    methods: list[str],
    data_uri: str,
    model_uri: str,
    endpoint: str | None,
    out,
    log: Callable[[str], None],
    t_start: float,
    engine_graph: tuple[str, bytes | None] = ("torch", None),
) -> dict[str, Any]:
    """Check and plan only, without Ray and without writing: the pairs and shards of the split,
    the methods, and the time per pair of each method on a few pairs scored here."""
    from ...models.inference import one_thread

    expected = manifest["counts"].get(cfg.split, 0)
    with one_thread():
        scorer = Scorer(
            data_uri,
            model_uri,
            endpoint,
            cfg.tile,
            tuple(cfg.baselines),
            cfg.strength,
            cfg.sigma,
            engine_graph[0],
            engine_graph[1],
            cfg.tta,
            threads=1,
        )
        rows, sampled = _sample(scorer, shards[0])
    per_pair = {
        m: _mean(
            [
                s
                for s, mm, e in zip(rows["seconds"], rows["method"], rows["error"])
                if mm == m and not e
            ]
        )
        for m in methods
    }
    cpu_s = sum(v for v in per_pair.values() if v) * expected
    summary = {
        "dry_run": True,
        "split": cfg.split,
        "pairs": expected,
        "shards": len(shards),
        "methods": methods,
        "sampled": sampled,
        "seconds_per_pair": per_pair,
        "cpu_seconds": cpu_s,
        "out": out.root,
        "plan_s": round(time.time() - t_start, 3),
    }
    log(
        f"evaluate --dry-run: {plural(expected, cfg.split + ' pair')} in {plural(len(shards), 'shard')} of {data_uri} "
        f"x {plural(len(methods), 'method')} ({', '.join(methods)}); the tables would go to {out.root}"
    )
    if sampled:
        log(
            "evaluate --dry-run: estimate from "
            + plural(sampled, "pair")
            + " scored here: "
            + ", ".join(f"{m} {v:.3f} s/pair" for m, v in per_pair.items() if v is not None)
            + f"; about {duration(cpu_s)} on one CPU, divided by the CPUs of the cluster that runs it"
        )
    log("evaluate --dry-run: nothing was written")
    return summary


def _sample(scorer: Scorer, shard: str) -> tuple[dict[str, list], int]:
    """Score the first DRY_RUN_SAMPLE pairs of a shard here: (their rows, how many)."""
    rows: dict[str, list] = {k: [] for k in _ROW_KEYS}
    sampled = 0
    try:
        for shard_rows in iter_shard_rows(
            scorer.store, shard, ("id", "low", "high"), DRY_RUN_SAMPLE
        ):
            for pid, lb, hb in shard_rows[: DRY_RUN_SAMPLE - sampled]:
                scorer._score_pair(str(pid), lb, hb, rows)
                sampled += 1
            if sampled >= DRY_RUN_SAMPLE:
                break
    except Exception as exc:
        raise EvaluateError(
            f"{scorer.store.uri(shard)}: cannot read the shard: {object_error(exc)}"
        ) from None
    return rows, sampled
