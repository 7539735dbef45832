"""The job outline (jobs/outline.py): the steps' order, what runs however a job ends, and the
dry-run estimate every job shares. No Ray: start_ray is a stand-in."""

from __future__ import annotations

import pytest

from raydenoise.jobs.outline import Estimate, Job, Phases, run_job


@pytest.fixture(autouse=True)
def one_node(monkeypatch):
    """Every node sees the paths (as on a one-node cluster), without asking Ray."""
    import raydenoise.jobs.outline as outline

    monkeypatch.setattr(outline, "check_shared_paths", lambda reads, writes: None)


class Oops(Exception):
    pass


class Recorder(Job[str]):
    error = Oops

    def __init__(self, fail_at: str = "", has_work: bool = True):
        self.calls: list[str] = []
        self.fail_at, self.has_work = fail_at, has_work

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_at:
            raise Oops(name)

    def check(self):
        self._step("check")

    def dry_run(self, phases):
        self._step("dry_run")
        return "planned"

    def prepare(self):
        self._step("prepare")
        return self.has_work

    def shared_paths(self):
        return {"--input": "/tmp"}, {}

    def abandon(self):
        self.calls.append("abandon")

    def work(self, phases: Phases):
        self._step("work")
        self.phases = phases
        return "done"

    def close(self):
        self.calls.append("close")


def test_the_steps_run_in_order_and_ray_starts_only_for_work(monkeypatch):
    started = []
    job = Recorder()
    assert run_job(job, start_ray=lambda: started.append(1) or 0.25) == "done"
    assert job.calls == ["check", "prepare", "work", "close"] and started == [1]
    assert job.phases.ray_init_s == 0.25 and job.phases.check_s >= 0
    record = job.phases.record("first_result_s", 1.23456)
    assert record["first_result_s"] == 1.235 and record["ray_init_s"] == 0.25

    idle = Recorder(has_work=False)  # nothing for Ray (a fully resumed job): Ray is not joined
    assert run_job(idle, start_ray=lambda: started.append(2)) == "done"
    assert started == [1] and idle.calls == ["check", "prepare", "work", "close"]


def test_a_dry_run_stops_after_the_checks_and_never_starts_ray():
    job = Recorder()
    assert run_job(job, dry_run=True, start_ray=lambda: pytest.fail("Ray started")) == "planned"
    assert job.calls == ["check", "dry_run", "close"]


@pytest.mark.parametrize("step", ["check", "prepare", "work"])
def test_close_runs_however_the_job_ends(step):
    job = Recorder(fail_at=step)
    with pytest.raises(Oops, match=step):
        run_job(job, start_ray=lambda: 0.0)
    assert job.calls[-1] == "close" and job.calls[-2] == step


def test_paths_the_nodes_do_not_share_abandon_the_plan_with_the_jobs_error(monkeypatch):
    import raydenoise.jobs.outline as outline

    monkeypatch.setattr(
        outline, "check_shared_paths", lambda reads, writes: f"{reads['--input']}: not on node 2"
    )
    job = Recorder()
    with pytest.raises(Oops, match="/tmp: not on node 2"):
        run_job(job, start_ray=lambda: 0.0)
    assert job.calls == ["check", "prepare", "abandon", "close"]


def test_a_job_without_a_dry_run_says_so():
    class NoDry(Recorder):
        dry_run = Job.dry_run

    with pytest.raises(Oops, match="no --dry-run"):
        run_job(NoDry(), dry_run=True)


def test_the_estimate_counts_only_items_that_could_be_processed():
    est = Estimate()
    assert est.per_unit() is None and est.line("ingest", "pair", "pair", 10) is None
    est.time(lambda: 2.0)
    est.time(lambda: None)  # would be rejected by the job: no measure
    est.time(lambda: 1 / 0)  # would fail in the job: no measure
    est.add(3.0, 1.0)
    assert est.sampled == 2 and est.units == 3.0
    assert est.per_unit() == pytest.approx((est.seconds) / 3.0)
    assert est.cpu_seconds(300) == pytest.approx(est.per_unit() * 300)
    line = est.line("ingest", "pair", "pair to convert", 300)
    assert "2 pairs sampled" in line and "on one CPU" in line
