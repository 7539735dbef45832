"""A run's books as one object (ledger/run.py): plan -> parts -> assembled report -> clean-up,
on a local report folder. No Ray."""

from __future__ import annotations

import csv

from raydenoise.ledger import report as rpt
from raydenoise.ledger.run import RunLedger
from raydenoise.storage.store import open_store


def test_plan_parts_and_assemble_give_one_row_per_input_then_the_run_folder_goes(tmp_path):
    rep = open_store(str(tmp_path / "report"))
    ledger = RunLedger(rep)
    with ledger.new_plan() as plan:
        plan.row(rpt.blank_row("a.png", status=rpt.EXCLUDED, note="hidden"))
        for key in ("b.png", "c.png", "d.png"):
            plan.work(key, None)
    assert plan.n_work == 3
    ledger.add(
        rpt.table(
            [
                rpt.blank_row("d.png", status="ok"),
                rpt.blank_row("b.png", status="error", error="bad"),
            ]
        )
    )
    summary = ledger.assemble(plan, "not processed: stopped", seconds=2.0)
    rows = list(csv.DictReader((tmp_path / "report" / "report.csv").open()))
    assert [(r["key"], r["status"]) for r in rows] == [
        ("a.png", "excluded"),
        ("b.png", "error"),
        ("c.png", rpt.NOT_DONE),  # work with no row back: not done, with the reason
        ("d.png", "ok"),
    ]
    assert rows[2]["note"] == "not processed: stopped"
    assert summary["count"] == 4 and summary["ok"] == 1 and summary["failures"] == 1
    assert (tmp_path / "report" / ledger.dir).is_dir()
    ledger.close()
    assert not (tmp_path / "report" / ledger.dir).exists()


def test_an_abandoned_run_leaves_no_folder_and_a_later_run_reads_the_earlier_report(tmp_path):
    rep = open_store(str(tmp_path / "report"))
    first = RunLedger(rep)
    with first.new_plan() as plan:
        plan.work("a.png", None)
    first.add(rpt.table([rpt.blank_row("a.png", status="ok", output_bytes=5, output_tag="t")]))
    first.assemble(plan, "not processed", seconds=1.0)
    first.close()
    second = RunLedger(rep)
    assert [r["key"] for r in second.earlier_rows()] == ["a.png"]
    with second.new_plan():
        pass
    second.abandon()
    assert not (tmp_path / "report" / second.dir).exists()
