"""A run's books as one object (RunLedger): the plan written while the listings merge, the report
parts written while the work runs, the report assembled from both at the end, and the clean-up
of the run's files. The files and their formats are runfiles'."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ..storage.store import Store
from . import runfiles


class RunLedger:
    """One run's books in the report folder ``rep``: its id and folder (``runs/RUN/``), then
    ``new_plan`` -> ``parts`` (``add`` rows as they come) -> ``assemble`` (report.parquet,
    report.csv and the summary's figures), and ``abandon`` (a run that did no work: its folder)
    or ``close`` (once the report holds their rows: this run's and earlier runs' folders)."""

    def __init__(self, rep: Store):
        self.rep = rep
        self.run_id = runfiles.new_run_id()
        self.dir = f"{runfiles.RUNS}/{self.run_id}/"
        self.parts = runfiles.Parts(rep, self.dir)

    def earlier_rows(self) -> Iterator[dict[str, Any]]:
        """The rows of the report earlier runs left (and of their unmerged parts), in key order."""
        return runfiles.earlier_rows(self.rep, self.dir + "earlier-")

    def new_plan(self) -> runfiles.Plan:
        """The plan's writer (planned rows, work rows); a context manager."""
        return runfiles.Plan(self.rep, self.dir)

    def add(self, rows: pa.Table) -> None:
        """Report rows from the workers (written as sorted parts)."""
        self.parts.add(rows)

    def assemble(self, plan: runfiles.Plan, not_done_note: str, seconds: float) -> dict[str, Any]:
        """report.parquet and report.csv from the plan and the parts (a work key with no row is
        ``not-done`` with ``not_done_note``); returns their summary figures."""
        self.parts.flush()
        runfiles.assemble(self.rep, plan, self.parts, not_done_note)
        return runfiles.summarize(self.rep, seconds)

    def abandon(self) -> None:
        """Remove this run's folder (a run that stopped before any work)."""
        runfiles.remove_run(self.rep, self.dir)

    def close(self) -> None:
        """Remove this run's folder and earlier runs' (their rows are in the report now)."""
        runfiles.remove_runs(self.rep, self.run_id)
