"""Rows on storage (parts.py) and a denoise run's files (runfiles.py): sorted Parquet files
merged as streams, exact streaming medians, the plan's work read back by position. No Ray."""

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from raydenoise.ledger import report as rpt
from raydenoise.ledger import runfiles
from raydenoise.ledger.plan import OTHER_MODEL_WHY, Item, other_maker, trusted, with_earlier
from raydenoise.storage import parts
from raydenoise.storage.store import Entry, open_store


def rows_of(keys, **values):
    return [rpt.blank_row(k, **values) for k in keys]


def test_writer_is_atomic_and_round_trips(tmp_path):
    store = open_store(str(tmp_path))
    with parts.Writer(store, "a/x.parquet", rpt.SCHEMA, row_group=3) as w:
        w.write_all(rows_of([f"k{i:02d}" for i in range(10)], status="ok", width=4))
    assert [r["key"] for r in parts.iter_rows(store, "a/x.parquet")] == [
        f"k{i:02d}" for i in range(10)
    ]
    assert pq.ParquetFile(tmp_path / "a/x.parquet").metadata.num_row_groups == 4
    with pytest.raises(RuntimeError), parts.Writer(store, "a/y.parquet", rpt.SCHEMA) as w:
        w.write_all(rows_of(["a"]))
        raise RuntimeError("stop")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "x.parquet"
    ]  # nothing half-written


@pytest.mark.parametrize("fan_in", [2, 3, 32])
def test_merged_files_sorts_many_parts_in_rounds_and_later_parts_win(tmp_path, monkeypatch, fan_in):
    monkeypatch.setattr(parts, "FAN_IN", fan_in)
    monkeypatch.setattr(parts, "READ_BATCH", 4)
    store = open_store(str(tmp_path))
    rng = random.Random(fan_in)
    keys = [f"img{i:04d}.png" for i in range(300)]
    names, latest = [], {}
    for p in range(11):  # 11 parts, overlapping keys (a batch run twice), each sorted
        chosen = rng.sample(keys, 40)
        t = rpt.table(rows_of(chosen, status="ok", seconds=float(p)))
        name = f"part-{p:03d}.parquet"
        parts.write_sorted(store, name, t, rpt.SCHEMA)
        names.append(name)
        latest.update({k: float(p) for k in chosen})
    merged = list(parts.last_per_key(parts.merged_files(store, names, "scratch/", rpt.SCHEMA)))
    assert [r["key"] for r in merged] == sorted(latest)
    assert {r["key"]: r["seconds"] for r in merged} == latest
    if fan_in < 11:
        assert (tmp_path / "scratch").is_dir() or any(
            p.name.startswith("scratchmerge") for p in tmp_path.iterdir()
        )


def test_streaming_median_is_exact():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 1001, 200_000):
        v = rng.normal(size=n)
        v[::5] = np.round(v[::5])  # ties
        chunks = np.array_split(v, 7)
        assert parts.median(lambda: iter(chunks), n, v.min(), v.max(), collect=50) == np.median(v)
    same = np.full(1000, 3.5)
    assert parts.median(lambda: [same], 1000, 3.5, 3.5, collect=10) == 3.5
    tiny = np.concatenate(
        [np.zeros(600), np.nextafter(0, 1) * np.arange(400)]
    )  # no narrower float range
    assert parts.median(lambda: [tiny], 1000, 0.0, tiny.max(), collect=10) == np.median(tiny)


def test_summary_of_a_report_file_matches_the_in_memory_one(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(3000):
        status = ["ok", "skipped", "error", "excluded", "not-done"][i % 5]
        psnr = (
            float("inf")
            if i == 10
            else float(rng.normal(25, 3))
            if status in ("ok", "skipped")
            else None
        )
        rows.append(
            rpt.blank_row(
                f"k{i:05d}",
                status=status,
                psnr=psnr,
                width=8,
                height=4,
                node="n1" if i % 2 else "n2",
            )
        )
    store = open_store(str(tmp_path))
    parts.write_sorted(store, "report.parquet", rpt.table(rows), rpt.SCHEMA)
    a = runfiles.summarize(store, 2.0)
    b = rpt.summarize(rows, 2.0)
    assert a == b
    finite = [r["psnr"] for r in rows if r["psnr"] is not None and np.isfinite(r["psnr"])]
    assert (
        a["metrics"]["psnr"]["median"] == np.median(finite)
        and a["metrics"]["psnr"]["infinite"] == 1
    )
    assert a["count"] == 3000 and a["ok"] == 600 and a["not_done"] == 600
    assert a["nodes"] == {"n1": 900, "n2": 900}


def test_work_is_read_back_by_position_across_row_groups_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "GROUP", 8)
    monkeypatch.setattr(runfiles, "FILE_ROWS", 32)
    store = open_store(str(tmp_path))
    keys = [f"k{i:04d}" for i in range(203)]
    with runfiles.Plan(store, "run/") as plan:
        for i, k in enumerate(keys):
            plan.work(
                k, Entry(k, i, f"t{i}") if i % 3 == 0 else None, f"md5-{i}" if i % 6 == 0 else None
            )
    assert plan.n_work == 203 and len(plan.work_files) == 7
    for n in (1, 5, 203):
        slices, size = runfiles.slicing(n)
        got = [
            r
            for s in range(slices)
            for r in runfiles.read_work(store, "run/", s * size, min(n, (s + 1) * size)).to_pylist()
        ]
        assert [r["key"] for r in got] == keys[:n]
    row = runfiles.read_work(store, "run/", 30, 34).to_pylist()
    assert [r["key"] for r in row] == keys[30:34] and row[0] == {
        "key": "k0030",
        "skip": True,
        "listed_bytes": 30,
        "listed_tag": "t30",
        "expected_md5": "md5-30",
        "input_tag": None,
        "note": None,
    }
    assert runfiles.slicing(10) == (10, 1) and runfiles.slicing(1_000_000)[0] <= runfiles.MAX_SLICES


def test_earlier_rows_take_the_report_and_newer_killed_runs_parts(tmp_path):
    store = open_store(str(tmp_path))
    parts.write_sorted(
        store,
        "report.parquet",
        rpt.table(rows_of(["a", "b", "c"], status="ok", note="report")),
        rpt.SCHEMA,
    )
    store.write_bytes("summary.json", json.dumps({"run": "20260101T000000Z-bbbbbb"}).encode())
    old = f"{runfiles.RUNS}/20260101T000000Z-aaaaaa/part-000000.parquet"  # included in the report already
    new = f"{runfiles.RUNS}/20260102T000000Z-cccccc/part-000000.parquet"  # a driver killed after it
    parts.write_sorted(
        store, old, rpt.table(rows_of(["a", "z"], status="error", note="old")), rpt.SCHEMA
    )
    parts.write_sorted(
        store, new, rpt.table(rows_of(["b", "d"], status="ok", note="new")), rpt.SCHEMA
    )
    for scratch in ("scratch-", None):
        got = {r["key"]: r["note"] for r in runfiles.earlier_rows(store, scratch)}
        assert got == {"a": "report", "b": "new", "c": "report", "d": "new"}


def test_an_output_is_trusted_only_when_its_size_and_tag_match_a_completion_row():
    row = rpt.blank_row(
        "a",
        status="ok",
        output_bytes=10,
        output_tag="t1",
        input_bytes=5,
        input_tag="i1",
        model="m",
        made_by="fp1",
    )
    items = [
        Item("a", existing=Entry("a", 10, "t1"), size=5, tag="i1"),
        Item("b", existing=Entry("b", 10, "t1")),
        Item("c"),
    ]
    got = list(
        with_earlier(items, [row, rpt.blank_row("c", status="ok", output_bytes=1, output_tag="x")])
    )
    assert [trusted(i, "fp1") for i in got] == [True, False, False]
    for changed in (Entry("a", 11, "t1"), Entry("a", 10, "t2")):
        assert not trusted(Item("a", existing=changed, earlier=row, size=5, tag="i1"), "fp1")
    for status in ("error", "not-done"):
        assert not trusted(
            Item(
                "a",
                existing=Entry("a", 10, "t1"),
                earlier={**row, "status": status},
                size=5,
                tag="i1",
            ),
            "fp1",
        )
    assert not trusted(
        Item("a", existing=Entry("a", 10, ""), earlier={**row, "output_tag": ""}, size=5, tag="i1"),
        "fp1",
    )


def test_an_output_is_kept_only_when_the_same_input_was_made_into_it_by_the_same_model():
    """plan.other_maker: another model or options, a changed input (size or tag), a row that does
    not record its maker (an older report) or no row at all: the output is not this run's."""
    row = rpt.blank_row(
        "a",
        status="ok",
        output_bytes=10,
        output_tag="t1",
        input_bytes=5,
        input_tag="i1",
        model="builtin:denoise",
        made_by="fp1",
    )
    out = Entry("a", 10, "t1")
    assert other_maker(Item("a", existing=out, earlier=row, size=5, tag="i1"), "fp1") == ""
    why = other_maker(Item("a", existing=out, earlier=row, size=5, tag="i1"), "fp2")
    assert why.startswith(OTHER_MODEL_WHY) and "builtin:denoise" in why
    assert not trusted(Item("a", existing=out, earlier=row, size=5, tag="i1"), "fp2")
    for size, tag in ((6, "i1"), (5, "i2")):  # the input was replaced
        assert "input changed" in other_maker(
            Item("a", existing=out, earlier=row, size=size, tag=tag), "fp1"
        )
    assert "does not record" in other_maker(
        Item("a", existing=out, earlier={**row, "made_by": None}, size=5, tag="i1"), "fp1"
    )
    assert "no earlier report" in other_maker(Item("a", existing=out, size=5, tag="i1"), "fp1")


def test_external_sort_spills_sorted_runs_and_merges_them_stably(tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.setattr(parts, "FAN_IN", 3)
    store = open_store(str(tmp_path))
    schema = pa.schema([("id", pa.string()), ("key", pa.string())])
    rng = random.Random(3)
    rows = [{"id": f"img{rng.randrange(40)}", "key": f"k{i:03d}"} for i in range(100)]

    def key(r):
        return int(r["id"][3:])  # ties: stable, in input order

    got = list(parts.external_sort(iter(rows), key, store, "sort/", schema, run_rows=7))
    assert got == sorted(rows, key=key)
    assert (
        len(list((tmp_path / "sort").glob("run-*.parquet"))) == 14
    )  # 100 rows, 7 at a time in memory
    assert (
        list(parts.external_sort(iter(rows[:5]), key, store, "small/", schema, run_rows=7))
        == sorted(rows[:5], key=key)
        and not (tmp_path / "small").exists()
    )
