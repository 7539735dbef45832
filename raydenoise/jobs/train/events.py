"""Progress from the workers to the driver: rank 0 puts epoch events on a Ray queue, the driver
prints them as they come.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .config import TrainConfig


def _emit(config: dict, line: str | None, **data: Any) -> None:
    """A progress line (None: data only) from a worker to the driver (which shows it), through
    the run's event queue; printed (to the worker's log) when there is none."""
    events = config.get("events")
    if events is None:
        if line:
            print(f"[raydenoise] {line}", flush=True)
    else:
        events.put.remote({"line": line, **data})


class EventQueue:
    """A Ray actor (zero CPUs) that carries workers' progress events to the driver: workers
    ``put`` without waiting, the driver ``take``s what has arrived."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def put(self, event: dict) -> None:
        self.events.append(event)

    def take(self) -> list[dict]:
        out, self.events = self.events, []
        return out


class _EventPump:
    """Driver side: a thread that takes workers' events every ``period`` seconds and shows them
    (epoch lines, a progress display over the epochs)."""

    def __init__(self, queue, cfg: TrainConfig, log: Callable[[str], None], period: float = 1.0):
        import threading

        from ...console import Progress

        self.queue, self.log, self.period = queue, log, period
        self.progress = Progress("train", cfg.epochs, unit="epoch")
        self.first_epoch_s: float | None = None
        self.workers: list[
            dict
        ] = []  # every worker start: rank, node, ip, and the epoch it started from
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="raydenoise-train-events", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.pump()

    def pump(self) -> None:
        import ray

        try:
            events = ray.get(self.queue.take.remote(), timeout=30)
        except Exception:  # the queue is gone (Ray shutting down): nothing more to show
            return
        for e in events:
            if e.get("line"):
                self.log(f"train: {e['line']}")
            if "worker" in e:
                self.workers.append(e["worker"])
            if "resumed" in e:
                self.progress.update(e["resumed"] - self.progress.done)
            if "epoch" in e:
                if self.first_epoch_s is None:
                    self.first_epoch_s = time.time() - self.t0
                m = e.get("metrics", {})
                self.progress.update(
                    e["epoch"] - self.progress.done,
                    postfix=f"val {m['val_psnr']:.2f} dB"
                    if m.get("val_psnr") is not None
                    else None,
                )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pump()
        self.progress.close()
