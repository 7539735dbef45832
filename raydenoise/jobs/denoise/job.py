"""The denoise job: checks, lock, plan, Ray work, report (run_denoise)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...console import Progress, console, plural, rate
from ...imaging.noise_level import BLIND_SIGMA
from ...ledger import runfiles
from ...ledger.plan import (
    REPORT_DIR,
)
from ...ledger.report import NOT_DONE
from ...ledger.run import RunLedger
from ...ledger.runlock import LockHeld, RunLock
from ...session import StartRay
from ...storage.errors import StorageError, last_error_line, object_error
from ...storage.store import Store, endpoint_from_env, open_store
from ..outline import Job, Phases, run_job
from .config import DenoiseConfig, DenoiseError, check_config, made_by
from .dry_run import dry_run
from .outputs import _write_report
from .planning import _plan, _Planned, check_locations
from .stages import (
    FusedActor,
    ModelActor,
    model_spec,
    plan_workers,
    read_decode,
    write_score,
)


def run_denoise(
    cfg: DenoiseConfig, log: Callable[[str], None] = print, start_ray: StartRay | None = None
) -> dict[str, Any]:
    """Run the job; returns the summary (also written as summary.json).

    Arguments, locations and the model are checked before Ray starts (``start_ray``, default
    :func:`ensure_ray`), so a mistake is reported in about a second. Raises DenoiseError for
    user-facing failures of the whole job: bad arguments, model or locations (before any work),
    or a storage failure mid-run, after writing the report of what was done (a rerun resumes).
    Per-image failures are report rows, not exceptions.

    The driver's memory does not grow with the number of objects: the plan is written to the
    report folder while the listings are merged, the workers read their keys from it, report
    rows are written as parts while the job runs and the report is merged from them at the end
    (raydenoise.ledger.runfiles). A fully resumed job (every output vouched for) does not start Ray.
    """
    return run_job(_Run(cfg, log), cfg.dry_run, start_ray)


@dataclass
class _Outcome:
    """What the work on Ray came to: why it stopped (None: it finished), whether Ctrl-C ended
    it, (seconds, rows done) from the work's start to its first result, and its seconds."""

    stopped: str | None = None
    interrupted: bool = False
    first: tuple[float, int] | None = None
    seconds: float = 0.0


class _Run(Job[dict[str, Any]]):
    """One denoise run in the job outline: its stores, model, fingerprint and lock; check (open
    and check), prepare (lock, plan), the work on Ray, then the report and the last line."""

    error = DenoiseError

    def __init__(self, cfg: DenoiseConfig, log: Callable[[str], None]):
        self.cfg, self.log = cfg, log
        self.endpoint = endpoint_from_env(cfg.s3_endpoint)
        self.max_pixels = int(cfg.max_megapixels * 1e6) or None
        self.created: list[str] = []  # local folders this run made (removed if it writes nothing)
        self.lock: RunLock | None = None

    def check(self) -> None:
        check_config(self.cfg)
        self.open_and_check()

    def dry_run(self, phases: Phases) -> dict[str, Any]:
        return dry_run(
            self.cfg,
            self.inp,
            self.out,
            self.rep,
            self.spec,
            self.max_pixels,
            self.log,
            phases.t_start,
            self.stamp["made_by"],
        )

    def prepare(self) -> bool:
        assert self.lock is not None
        try:
            self.lock.acquire()
        except (LockHeld, StorageError) as exc:
            raise DenoiseError(str(exc)) from None
        self.planned = self.plan()
        return self.planned.plan.n_work > 0

    def shared_paths(self):
        from ...models.artifacts import BUILTIN

        reads = {
            "--input": self.inp.root,
            "--reference": self.ref.root if self.ref else None,
            "--model": None if self.spec.uri.startswith(BUILTIN) else self.spec.uri,
        }
        return reads, {"--output": self.out.root, "--report": self.rep.root}

    def abandon(self) -> None:
        self.ledger.abandon()

    def work(self, phases: Phases) -> dict[str, Any]:
        outcome, t0 = _Outcome(), time.time()
        if self.planned.plan.n_work:
            outcome.stopped, outcome.interrupted, outcome.first, t0 = _run_work(self)
        outcome.seconds = time.time() - t0  # the work's time: the summary's and the last line's
        first_s = t0 - phases.t_start + outcome.first[0] if outcome.first else None
        summary = self.report(outcome, phases.record("first_result_s", first_s))
        return self.conclude(summary, outcome)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
        _remove_empty(self.created)

    def open_and_check(self) -> None:
        """Stores, locations and the model, checked before anything is written (a dry run stops
        after the locations); DenoiseError says what is wrong."""
        from ...models.artifacts import ArtifactError, resolve_model_uri, takes_level
        from ...models.engines import EngineError

        cfg, endpoint = self.cfg, self.endpoint
        try:
            self.inp, self.out = open_store(cfg.input, endpoint), open_store(cfg.output, endpoint)
            self.rep = open_store(cfg.report or self.out.uri(REPORT_DIR), endpoint)
            self.ref = open_store(cfg.reference, endpoint) if cfg.reference else None
            check_locations(self.inp, self.out, self.ref, self.rep)
            if not cfg.dry_run:
                # a missing or unlistable input is reported before anything is written
                next(self.inp.iter_entries(), None)
                self.created += [
                    s.path
                    for s in (self.out, self.rep)
                    if not s.is_s3 and not os.path.lexists(s.path)
                ]
                self.out.check_writable()
                self.rep.check_writable()
            # resolved (actors may run elsewhere), loaded and checked before any actor starts
            self.spec = model_spec(cfg, resolve_model_uri(cfg.model, endpoint), endpoint)
            if cfg.sigma is not None and not takes_level(self.spec.uri, endpoint):
                raise DenoiseError(BLIND_SIGMA.format(model=cfg.model))
            self.stamp = made_by(cfg, self.spec)
        except (StorageError, ArtifactError, EngineError) as exc:
            raise DenoiseError(str(exc)) from None
        self.ledger = RunLedger(self.rep)
        self.lock = RunLock(self.rep, self.ledger.run_id, self.out.root)

    def plan(self) -> _Planned:
        """The run's plan (planning._plan), refused when another model's outputs are in the way
        (--other-model refuse) or nothing is left to denoise; the counts are announced."""
        cfg, out = self.cfg, self.out
        try:
            planned = _plan(cfg, self.inp, out, self.ledger, self.stamp)
        except StorageError as exc:
            self.ledger.abandon()
            raise DenoiseError(str(exc)) from None
        inputs = planned.to_do + planned.existing + planned.trusted + planned.redo
        if not inputs or planned.refused:
            self.ledger.abandon()
        if planned.refused and planned.refused_example:
            key, other = planned.refused_example
            raise DenoiseError(
                f"{plural(planned.refused, 'output')} in {out.root} were made by another model or options "
                f"(e.g. {out.uri(key)}: {other}); this run uses {self.stamp['model']}"
                f"{'' if cfg.strength == 1 and cfg.sigma is None else ' with other options'}: nothing "
                "was written. Pass --other-model redo to replace them, or choose another --output"
            )
        if not inputs:
            ex = planned.example
            raise DenoiseError(
                f"{self.inp.root}: no files to denoise"
                + (f" ({planned.excluded} excluded: {ex[0]}: {ex[1]} ...)" if ex else "")
            )
        _announce(planned, inputs, self.inp.root, self.ref is not None, self.log)
        return planned

    def report(self, outcome: _Outcome, phases: dict) -> dict:
        """Assemble the report from the plan and the parts (the ledger), then summary.json and
        report.html; returns the summary."""
        planned, stopped, first, seconds = (
            self.planned,
            outcome.stopped,
            outcome.first,
            outcome.seconds,
        )
        rep, plan = self.rep, planned.plan
        try:
            summary = self.ledger.assemble(
                plan,
                f"not processed: job stopped ({stopped})"
                if stopped
                else "not processed: no result came back from the cluster; rerun to do it",
                seconds,
            )
            summary.update(
                stopped=stopped,
                run=self.ledger.run_id,
                trusted=planned.trusted,
                engine=self.spec.engine,
            )
            if first and seconds > first[0] and not stopped:
                # Throughput once the actors are up (start-up = actor processes, imports, model load).
                summary["startup_s"] = round(first[0], 3)
                summary["steady_images_per_s"] = (plan.n_work - first[1]) / (seconds - first[0])
            summary["phases"] = phases
            summary["report"] = rep.root
            _write_report(summary, self.cfg, self.inp, self.out, self.ref, rep)
        except Exception as exc:
            raise DenoiseError(
                f"{'stopped: ' + stopped + '; ' if stopped else ''}the report could not be written to "
                f"{rep.root} ({object_error(exc)}); the outputs written are complete and the report "
                f"parts written so far are in {rep.uri(self.ledger.dir)}; rerun to resume"
            ) from None
        self.ledger.close()
        return summary

    def conclude(self, summary: dict, outcome: _Outcome) -> dict:
        """The last line: done, or stopped (DenoiseError) or interrupted (KeyboardInterrupt)
        with the report of what was done."""
        planned, stopped, seconds = self.planned, outcome.stopped, outcome.seconds
        done, rep, n_work = summary["ok"], self.rep, planned.plan.n_work
        if outcome.interrupted:
            self.log(
                f"denoise: interrupted; {done} written; report of what was done in {rep.root}; rerun to resume"
            )
            raise KeyboardInterrupt
        if stopped:
            raise DenoiseError(
                f"stopped: {stopped}. {done} images written, {summary['not_done']} not done; "
                f"report in {rep.root}; rerun the same command to resume"
            )
        self.log(
            f"denoise: {summary['ok']:,} written, {summary['skipped']:,} skipped, {summary['failures']:,} failed"
            f"{f', {planned.excluded:,} excluded' if planned.excluded else ''} in {seconds:.1f} s"
            f"{f' ({rate(n_work, seconds)})' if n_work else ''} -> {self.out.root}; report in {rep.root}"
        )
        return summary


def _announce(planned: _Planned, inputs: int, root: str, scored: bool, log) -> None:
    """What the plan found: inputs to do, to redo, to verify, vouched for, and excluded."""
    log(
        f"denoise: {plural(inputs, 'input')} in {root}; {planned.to_do:,} to do"
        + (
            f", {planned.redo:,} to redo (an output of another model or options, of a changed input, or that no "
            "earlier report vouches for)"
            if planned.redo
            else ""
        )
        + (
            f", {planned.existing:,} with an output already (verified, skipped if complete"
            f"{', scored again' if scored else ''})"
            if planned.existing
            else ""
        )
        + (
            f", {planned.trusted:,} with an output the earlier report vouches for (same size and tag; kept, not read)"
            if planned.trusted
            else ""
        )
    )
    if planned.excluded and planned.example:
        log(
            f"denoise: {plural(planned.excluded, 'file')} excluded (listed in the report): {planned.example[0]}: "
            f"{planned.example[1]}" + (" ..." if planned.excluded > 1 else "")
        )


def _remove_empty(folders: list[str]) -> None:
    """Remove the local folders this run created when they are still empty (a run that stopped
    before writing anything leaves no empty output or report folder behind)."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _run_work(run: _Run):
    """The Ray part of a run: the plan's work through the model actors, report rows into parts."""
    import ray

    cfg, plan, spec, ref = run.cfg, run.planned.plan, run.spec, run.ref
    staged, workers, cpus = _workers(cfg, run.ledger, run.log, plan.n_work)
    store_kwargs = {
        "input_uri": run.inp.root,
        "output_uri": run.out.root,
        "reference_uri": ref.root if ref else None,
        "endpoint": spec.endpoint,
        "max_pixels": run.max_pixels,
        "report_uri": run.rep.root,
        "run_dir": plan.dir,
        "stamp": run.stamp,
        "quality": cfg.quality,
        "fmt": cfg.format,
    }
    actor_kwargs = {
        "spec": spec,
        "use_gpu": cfg.num_gpus_per_worker > 0,
        "cpu_share": cpus,
        "gpu_share": cfg.num_gpus_per_worker,
    }
    # The dataset is slices of the plan (positions, not keys): whoever reads an image reads its key.
    n_slices, size = runfiles.slicing(plan.n_work)
    ds: Any = ray.data.from_items(
        [{"start": i * size, "stop": min(plan.n_work, (i + 1) * size)} for i in range(n_slices)],
        override_num_blocks=n_slices,
    )
    pool = (
        ray.data.ActorPoolStrategy(min_size=1, max_size=None)
        if workers == 0  # none can run yet: the pool grows as the autoscaler adds nodes
        else ray.data.ActorPoolStrategy(size=workers)
    )
    if staged:
        ds = ds.map_batches(read_decode, batch_size=1, num_cpus=0.5, fn_kwargs=store_kwargs)
        ds = ds.map_batches(
            ModelActor,
            batch_size=cfg.batch_size,
            num_gpus=cfg.num_gpus_per_worker or None,
            num_cpus=cpus,
            compute=pool,
            fn_constructor_kwargs=actor_kwargs,
        )
        ds = ds.map_batches(
            write_score, batch_size=cfg.batch_size, num_cpus=0.5, fn_kwargs=store_kwargs
        )
    else:
        ds = ds.map_batches(
            FusedActor,
            batch_size=max(1, cfg.batch_size // size),
            num_cpus=cpus,
            compute=pool,
            fn_constructor_kwargs={**actor_kwargs, "store_kwargs": store_kwargs},
        )
    return _collect(ds, plan.n_work, run.ledger, run.inp)


def _workers(cfg: DenoiseConfig, ledger: RunLedger, log, n_work: int) -> tuple[bool, int, float]:
    """(staged?, model actors, CPUs each) on the cluster as it is now (plan_workers), never more
    actors than pieces of work (an idle actor costs a process, imports and a model load); 0
    actors: none can run yet, the pool grows as the autoscaler adds nodes. Too few GPUs:
    DenoiseError."""
    import ray

    cluster = ray.cluster_resources()
    staged, workers, cpus = plan_workers(cfg, cluster)
    # fused: an actor takes a slice of the plan at a time; staged: an image at a time
    workers = min(workers, n_work if staged else runfiles.slicing(n_work)[0])
    autoscale = workers == 0  # nothing to run on yet: the pool grows as the autoscaler adds nodes
    if autoscale:
        log(
            f"denoise: the cluster has no {'GPUs' if cfg.num_gpus_per_worker else 'CPUs'} for work yet (its head "
            "runs none): waiting for the autoscaler to add worker nodes; the model actors grow with them"
        )
    elif cfg.num_gpus_per_worker and cluster.get("GPU", 0) < cfg.num_gpus_per_worker * workers:
        ledger.abandon()
        raise DenoiseError(
            f"{workers} workers x {cfg.num_gpus_per_worker:g} GPUs: the cluster has "
            f"{cluster.get('GPU', 0):g}"
        )
    log(
        f"denoise: {'model actors as nodes come' if autoscale else plural(workers, 'model actor')} "
        f"({'GPU, ' if cfg.num_gpus_per_worker else ''}{cpus:g} CPU each, {'staged' if staged else 'fused'})"
    )
    return staged, workers, cpus


def _collect(ds, total: int, ledger: RunLedger, inp: Store):
    """Stream report rows from the dataset into report parts, showing progress and errors. Stops
    at the first storage failure (a ``not-done`` row from a worker), at Ctrl-C, or when Ray
    itself fails; returns (stop reason or None, interrupted?, (seconds, rows) to the first
    result, t0). Holds no rows beyond the part being filled."""
    import pyarrow.compute as pc

    stopped, interrupted, first = None, False, None
    t0 = time.time()
    with Progress("denoise", total) as progress:
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                first = first or (time.time() - t0, block.num_rows)
                ledger.add(block)
                status = block.column("status")
                for i in pc.indices_nonzero(
                    pc.fill_null(pc.equal(status, "error"), False)
                ).to_pylist():
                    console().error(
                        f"denoise: {inp.uri(block['key'][i].as_py())}: {block['error'][i].as_py()}"
                    )
                if not stopped:
                    for i in pc.indices_nonzero(
                        pc.fill_null(pc.equal(status, NOT_DONE), False)
                    ).to_pylist()[:1]:
                        stopped = (block["note"][i].as_py() or "storage failed").removeprefix(
                            "not written: "
                        )
                progress.update(block.num_rows)
                if stopped:
                    break
        except KeyboardInterrupt:
            stopped, interrupted = "interrupted", True
        except Exception as exc:
            stopped = f"the job failed: {last_error_line(exc)}"
    return stopped, interrupted, first, t0
