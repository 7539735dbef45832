"""Planning by merging sorted streams (pure: no Ray, no S3)."""

from raydenoise.plan import HIDDEN, PARTIAL, REPORT, Item, select, with_outputs
from raydenoise.storage import Entry


def entries(*keys):
    return [Entry(k, 1, "t") for k in sorted(keys)]


def test_select_leaves_out_hidden_partial_and_earlier_report_folders_with_the_reason():
    keys = [
        "a.png",
        ".x.png",
        "b/.raydenoise-tmp-1-c.png",
        "old/_report/report.parquet",
        "old/_report/summary.json",
        "old/_report/report.html",
        "old/_report/parts/p1.parquet",
        "not/_report/photo.png",
        "z.png",
    ]
    got = {i.key: i.excluded for i in select(entries(*keys), include_hidden=False)}
    assert got == {
        "a.png": "",
        ".x.png": HIDDEN,
        "b/.raydenoise-tmp-1-c.png": PARTIAL,
        "old/_report/report.parquet": REPORT,
        "old/_report/summary.json": REPORT,
        "old/_report/report.html": REPORT,
        "old/_report/parts/p1.parquet": REPORT,
        "not/_report/photo.png": "",  # a folder named _report without a report in it is input
        "z.png": "",
    }
    assert [i.key for i in select(entries(*keys), include_hidden=False)] == sorted(
        keys
    )  # order kept
    assert {i.key: i.excluded for i in select(entries(".x.png"), include_hidden=True)} == {
        ".x.png": ""
    }


def test_with_outputs_merges_two_sorted_listings():
    inputs = select(entries("a.png", "b.png", "c/d.png", "e.png", ".h.png"), include_hidden=False)
    outputs = entries("a.png", "c/d.png", "c/zz.png", "f.png", ".h.png")
    got = {
        i.key: (i.excluded, i.existing.key if i.existing else None)
        for i in with_outputs(inputs, outputs)
    }
    assert got == {
        "a.png": ("", "a.png"),
        "b.png": ("", None),
        "c/d.png": ("", "c/d.png"),
        "e.png": ("", None),
        ".h.png": (HIDDEN, None),
    }
    assert [i.key for i in with_outputs(iter([Item("a")]), None)] == ["a"]
