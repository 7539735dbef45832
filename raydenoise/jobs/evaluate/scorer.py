"""The Ray Data actor that scores the model and the baselines on each pair, and the running sums
the driver keeps of its rows.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ...imaging.metrics import METRIC_NAMES, all_metrics
from ...storage.dataset import iter_shard_rows
from ...storage.errors import object_error
from ...storage.store import open_store
from .baselines import BASELINE_FNS
from .config import BASELINES, DEFAULT_BASELINES


class Scorer:
    """Ray Data actor: shard paths in, one metric row per (pair, method) out.

    A pair that cannot be decoded or scored, and a shard that cannot be read (damaged, or
    deleted by a re-ingest while this ran), become rows with ``error`` set; the rest go on.
    """

    def __init__(
        self,
        data_uri: str,
        model_uri: str,
        endpoint: str | None,
        tile: int | None,
        baselines: tuple[str, ...] = DEFAULT_BASELINES,
        strength: float = 1.0,
        sigma: float | None = None,
        engine: str = "torch",
        graph: bytes | None = None,
        tta: bool = False,
        threads: int | None = None,
    ):
        from ...models.engines import make_engine
        from ...models.inference import Denoiser

        self.denoiser = Denoiser(
            make_engine(model_uri, endpoint, engine, graph, threads=threads),
            tile=tile,
            strength=strength,
            sigma=sigma,
            tta=tta,
        )
        self.methods = [("model", self.denoiser)] + [
            (BASELINES[b], BASELINE_FNS[b]) for b in baselines
        ]
        self.store = open_store(data_uri, endpoint)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows: dict[str, list] = {k: [] for k in _ROW_KEYS}
        for path in batch["path"]:
            try:
                for shard_rows in iter_shard_rows(self.store, str(path), ("id", "low", "high"), 4):
                    for pid, lb, hb in shard_rows:
                        self._score_pair(str(pid), lb, hb, rows)
            except Exception as exc:
                reason = (
                    "shard not found (was the data set re-ingested while evaluate ran?)"
                    if isinstance(exc, FileNotFoundError)
                    else f"cannot read the shard: {object_error(exc)}"
                )
                _add(rows, id=str(path), method="", error=f"{self.store.uri(str(path))}: {reason}")
        return {
            k: np.array(v, dtype=str if k in ("id", "method", "error") else np.float64)
            for k, v in rows.items()
        }

    def _score_pair(self, pid: str, lb: bytes, hb: bytes, rows: dict[str, list]) -> None:
        from ...imaging.images import ImageError, decode_rgb8

        try:
            low, high = decode_rgb8(lb, max_pixels=None), decode_rgb8(hb, max_pixels=None)
        except ImageError as exc:
            _add(rows, id=pid, method="", error=f"pair {pid}: not a usable image: {exc}")
            return
        ref = high.astype(np.float32) / 255
        for method, fn in self.methods:
            t0 = time.perf_counter()
            try:
                out = fn(low)
            except Exception as exc:
                _add(rows, id=pid, method=method, error=f"pair {pid}: {method} failed: {exc}")
                continue
            seconds = time.perf_counter() - t0
            _add(
                rows,
                id=pid,
                method=method,
                seconds=seconds,
                **all_metrics(out.astype(np.float32) / 255, ref),
            )


_ROW_KEYS = ("id", "method", "seconds", *METRIC_NAMES, "error")


def _add(rows: dict[str, list], **values: Any) -> None:
    for k in _ROW_KEYS:
        v = values.get(k)
        rows[k].append(
            ("" if v is None else v)
            if k in ("id", "method", "error")
            else (math.nan if v is None else v)
        )


PER_IMAGE = ("id", "method", "seconds", *METRIC_NAMES)  # per_image.csv's columns


MAX_ERRORS = 1000  # distinct error messages kept for table.json (all are counted)


def _batch_rows(batch: dict[str, np.ndarray]):
    for i in range(len(batch["id"])):
        yield {
            k: (v.item() if isinstance(v, np.generic) else v)
            for k, v in ((k, batch[k][i]) for k in _ROW_KEYS)
        }


class _Sums:
    """Running means of one method's rows (finite values only, like _mean)."""

    def __init__(self):
        self.images = 0
        self.total = {k: 0.0 for k in (*METRIC_NAMES, "seconds")}
        self.n = dict.fromkeys(self.total, 0)

    def add(self, r: dict[str, Any]) -> None:
        self.images += 1
        for k in self.total:
            v = r.get(k)
            if v is not None and math.isfinite(v):
                self.total[k] += float(v)
                self.n[k] += 1

    def table(self) -> dict[str, Any]:
        return {
            **{k: (self.total[k] / self.n[k] if self.n[k] else None) for k in self.total},
            "images": self.images,
        }


class _Counter:
    """Distinct pair ids scored: rows of one pair come together (one actor scores a pair's methods
    in a row), so counting changes of id is exact without holding the ids."""

    def __init__(self):
        self.count, self._last = 0, None

    def add(self, pid: str) -> None:
        if pid != self._last:
            self.count, self._last = self.count + 1, pid
