"""Planning by merging sorted streams (pure: no Ray, no S3)."""

from raydenoise.ledger.plan import HIDDEN, PARTIAL, REPORT, Item, select, with_outputs
from raydenoise.storage.store import Entry


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


def test_output_key_gives_the_formats_extension():
    from raydenoise.ledger.plan import output_key

    assert output_key("a/b.bmp", "keep") == "a/b.bmp"
    assert output_key("a/b.bmp", "png") == "a/b.png"
    assert output_key("a/B.JPEG", "jpeg") == "a/B.JPEG"  # already one of the format's extensions
    assert output_key("c.tar.gz", "tiff") == "c.tar.tif"
    assert output_key("noext", "webp") == "noext.webp"
    assert output_key(".hidden", "png") == ".hidden.png"
    assert output_key("caf\\xe9.bmp", "png") == "caf\\xe9.png"  # escaped names stay escaped


def test_renamed_outputs_merge_in_output_order_and_refuse_shared_names(tmp_path):
    """--format png: a.bmp and a.tif would both make a.png (the first keeps it, the other is
    left out naming it); a.c.bmp's output a.c.png sorts before a.png although its input sorts
    after a.bmp; existing outputs are found under the new names; the inputs come back in key
    order, with an external sort that spills to disk (run_rows=2)."""
    from raydenoise.ledger.plan import with_renamed_outputs
    from raydenoise.storage.store import open_store

    keys = ("a.bmp", "a.c.bmp", "a.tif", "b.png", "d/e.jpg", ".h.bmp")
    outputs = entries("a.c.png", "a.png", "b.png", "zz.png")
    items = list(
        with_renamed_outputs(
            select(entries(*keys), include_hidden=False),
            outputs,
            "png",
            open_store(str(tmp_path)),
            run_rows=2,
        )
    )
    assert [i.key for i in items] == sorted(keys)
    got = {i.key: (i.excluded, i.existing.key if i.existing else None) for i in items}
    assert got[".h.bmp"] == (HIDDEN, None)
    assert got["a.bmp"] == ("", "a.png")
    assert got["a.c.bmp"] == ("", "a.c.png")
    assert got["b.png"] == ("", "b.png")
    assert got["d/e.jpg"] == ("", None)
    why, existing = got["a.tif"]
    assert existing is None and "a.png" in why and "a.bmp" in why and "rename" in why
    assert all(i.size == 1 and i.tag == "t" for i in items)


def test_matching_pairs_two_sorted_streams_in_one_pass():
    from raydenoise.ledger.plan import matching

    records = ["a", "b", "b", "d", "f"]
    others = [("b", 1), ("c", 2), ("d", 3), ("e", 4), ("g", 5)]
    got = list(matching(iter(records), str, iter(others), lambda o: o[0]))
    assert got == [("a", None), ("b", ("b", 1)), ("b", ("b", 1)), ("d", ("d", 3)), ("f", None)]
    assert list(matching(["a"], str, [], str)) == [("a", None)]
