"""The outline every job follows (run_job), and the estimate every dry run makes (Estimate).

A job is checked before anything is written or Ray starts (arguments, stores, data set, model),
so a mistake is reported in about a second; then either its dry run, or: prepare (list, plan,
lock) -> join Ray -> check that every node sees the local paths as the driver does -> the work;
its clean-up runs however it ends. The seconds each phase took go into the job's record
(Phases.record).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..console import duration, plural
from ..session import StartRay, check_shared_paths, ensure_ray

R = TypeVar("R")

DRY_RUN_SAMPLE = 3  # items a dry run processes here, on one CPU, to estimate the job's time


@dataclass
class Phases:
    """Where the time to the first result goes: the checks (arguments, listing, plan, model),
    joining Ray, then the work's start (actors, imports, model load) to its first result."""

    t_start: float
    check_s: float = 0.0
    ray_init_s: float = 0.0

    def record(self, first: str, first_s: float | None) -> dict[str, float | None]:
        """The job's ``phases`` record; ``first``: the name of its first result's time (seconds
        since the job started, None when there was none)."""
        return {
            "check_s": round(self.check_s, 3),
            "ray_init_s": round(self.ray_init_s, 3),
            first: round(first_s, 3) if first_s else None,
        }


class Job(ABC, Generic[R]):
    """One run of a job; :func:`run_job` calls its steps in the outline's order. ``error`` is
    the job's user-mistake error class (a RaydenoiseError), raised with the message of a
    shared-path problem."""

    error: type[Exception]

    @abstractmethod
    def check(self) -> None:
        """Arguments, stores, data set and model, before anything is written."""

    def dry_run(self, phases: Phases) -> R:
        """What the job would do, without Ray and without writing."""
        raise self.error("this command has no --dry-run")

    def prepare(self) -> bool:
        """List, plan and lock what the work needs; True when there is work for Ray."""
        return True

    @abstractmethod
    def shared_paths(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """({flag: path read}, {flag: path written}): every node must see them as the driver does."""

    def abandon(self) -> None:
        """Undo what prepare wrote when the work cannot start (a path the nodes do not share)."""

    @abstractmethod
    def work(self, phases: Phases) -> R:
        """The work on Ray (or none, when prepare found nothing for Ray), and the job's record."""

    def close(self) -> None:
        """Clean-up that runs however the job ends (locks, temporary plans, empty folders)."""


def run_job(job: Job[R], dry_run: bool = False, start_ray: StartRay | None = None) -> R:
    """Run ``job`` through the outline; ``start_ray`` (default :func:`ensure_ray`) joins Ray,
    only when the plan has work for it."""
    phases = Phases(time.time())
    try:
        job.check()
        if dry_run:
            return job.dry_run(phases)
        has_work = job.prepare()
        phases.check_s = time.time() - phases.t_start
        if has_work:
            phases.ray_init_s = (start_ray or ensure_ray)() or 0.0
            problem = check_shared_paths(*job.shared_paths())
            if problem:
                job.abandon()
                raise job.error(problem)
        return job.work(phases)
    finally:
        job.close()


@dataclass
class Estimate:
    """A dry run's time estimate: a few items (DRY_RUN_SAMPLE) processed here, timed, and their
    seconds per unit (pair, megapixel) scaled to the whole job. An item that cannot be processed
    (it would fail in the job) is no measure and is not counted."""

    seconds: float = 0.0
    units: float = 0.0
    sampled: int = 0

    def time(self, process: Callable[[], float | None]) -> None:
        """Time ``process()``, which returns the units it did (None or an exception: unusable)."""
        t0 = time.perf_counter()
        try:
            units = process()
        except Exception:
            return
        if units is not None:
            self.add(time.perf_counter() - t0, units)

    def add(self, seconds: float, units: float) -> None:
        """One sampled item that took ``seconds`` for ``units``."""
        self.seconds += seconds
        self.units += units
        self.sampled += 1

    def per_unit(self) -> float | None:
        return self.seconds / self.units if self.units else None

    def cpu_seconds(self, units: float) -> float | None:
        per = self.per_unit()
        return None if per is None else per * units

    def line(self, job: str, what: str, unit: str, units: float) -> str | None:
        """The dry run's estimate as one line (None: no item could be measured)."""
        per, total = self.per_unit(), self.cpu_seconds(units)
        if per is None or total is None:
            return None
        return (
            f"{job} --dry-run: estimate: {per:.3f} s per {unit} ({plural(self.sampled, what)} "
            f"sampled): about {duration(total)} on one CPU, divided by the CPUs of the cluster "
            "that runs it"
        )
