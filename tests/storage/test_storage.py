"""Streaming listings in sorted key order: local folders, and S3 prefixes page by page."""

import os

import pytest

from raydenoise.storage.errors import StorageError
from raydenoise.storage.store import LIST_PAGE, LISTING_ENV, open_store

from conftest import PeakConcurrency

NAMES = [
    "a.png",
    "a/b.png",
    "a0.png",
    "a/c/d.png",
    "a-b/x",
    "b",
    ".h/x",
    "z/.y",
    "é.png",
    "a/c.png",
    "A",
    "a b/x",
]


def test_a_local_walk_yields_every_file_in_sorted_key_order(tmp_path):
    for n in NAMES:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "link")  # a link to a folder is a name, never followed
    keys = list(open_store(str(tmp_path)).iter_keys())
    assert keys == sorted([*NAMES, "link"])
    entry = next(e for e in open_store(str(tmp_path)).iter_entries() if e.key == "a/b.png")
    assert entry.size == 1 and entry.tag == str((tmp_path / "a/b.png").stat().st_mtime_ns)
    assert open_store(str(tmp_path / "empty")).list_keys() == []
    with pytest.raises(StorageError, match="no such file or folder"):
        list(open_store(str(tmp_path / "missing")).iter_keys())
    with pytest.raises(StorageError, match="is a file"):
        list(open_store(str(tmp_path / "b")).iter_keys())


def test_a_deep_and_wide_tree_streams_without_recursion(tmp_path):
    deep = tmp_path / "/".join(["d"] * 200)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    for i in range(1500):  # more sibling folders than Python's recursion limit
        (tmp_path / "w" / f"{i:04d}").mkdir(parents=True)
        (tmp_path / "w" / f"{i:04d}" / "f").write_bytes(b"")
    keys = list(open_store(str(tmp_path)).iter_keys())
    assert len(keys) == 1501 and keys == sorted(keys) and keys[0] == "/".join(["d"] * 200) + "/f"


def test_s3_listing_pages_through_more_keys_than_one_page(s3_server, monkeypatch):
    base = s3_server.prefix()
    fs = s3_server.fs()
    keys = [f"big/{i:05d}.png" for i in range(LIST_PAGE + 37)] + NAMES
    fs.pipe({f"{base[5:]}/{k}": b"x" for k in keys})
    fs.pipe(f"{base[5:]}-sibling/not-mine.png", b"x")  # a prefix that shares the name's start
    store = open_store(base, s3_server.endpoint)
    # SeaweedFS lists folder by folder ("a/b.png" before "a b/x"), not in S3's key order, so a
    # server that is not AWS is walked folder by folder, each folder sorted here.
    raw = [
        o["Key"]
        for page in store._s3_pages(store._s3_prefix()[1], 1000, delimiter=False)
        for o in page.get("Contents", [])
    ]
    assert raw != sorted(raw) and not store.s3_lists_sorted()
    assert list(store.iter_keys()) == sorted(keys)  # big/ takes two list requests
    assert list(store.iter_keys(page_size=7)) == sorted(keys)  # many pages per folder
    assert store.list_keys() == sorted(keys)
    # The flat listing (AWS's, in key order; forced here): fine where this server's order is
    # the key order, and an error naming the keys, never a lost key, where it is not.
    monkeypatch.setenv(LISTING_ENV, "flat")
    plain = open_store(f"{base}/big", s3_server.endpoint)
    entries = list(plain.iter_entries())
    assert [e.key for e in entries] == [f"{i:05d}.png" for i in range(LIST_PAGE + 37)]
    assert all(e.size == 1 and e.tag for e in entries)  # size and ETag, to trust an output later
    with pytest.raises(StorageError, match="not in key order; set RAYDENOISE_S3_LISTING=walk"):
        list(store.iter_keys())
    with pytest.raises(StorageError, match="no such file or folder"):
        list(open_store(f"{base}/missing", s3_server.endpoint).iter_keys())
    with pytest.raises(StorageError, match="is a file"):
        list(open_store(f"{base}/b", s3_server.endpoint).iter_keys())


def test_a_walk_lists_sub_folders_ahead_in_parallel_and_keeps_key_order():
    import time

    from raydenoise.storage.store import Entry, _walk

    tree = {"": [(f"d{i:02d}/", None) for i in range(20)] + [("z.png", Entry("z.png", 1, ""))]}
    for i in range(20):
        rel = f"d{i:02d}/"
        tree[rel] = [(f"{j}.png", Entry(f"{rel}{j}.png", 1, "")) for j in range(3)] + [
            ("sub/", None)
        ]
        tree[rel + "sub/"] = [("x.png", Entry(f"{rel}sub/x.png", 1, ""))]
    meter = PeakConcurrency()

    def folder(rel):
        with meter.inside():
            time.sleep(0.01)
        return sorted(tree[rel], key=lambda n: n[0])

    keys = [e.key for e in _walk(folder)]
    assert keys == sorted(e.key for names in tree.values() for _, e in names if e is not None)
    assert meter.peak > 1  # sub-folders were listed concurrently
    meter.peak = 0
    assert [e.key for e in _walk(folder, prefetch=1)] == keys and meter.peak == 1
    bad = dict(tree)
    del bad["d05/"]  # a listing that fails in a prefetch thread surfaces where the walk reaches it
    tree = bad
    seen = []
    with pytest.raises(KeyError):
        for e in _walk(folder):
            seen.append(e.key)
    assert seen and all(k < "d05/" for k in seen)


def test_names_up_to_the_length_limit_are_written_through_a_temporary_that_fits(tmp_path):
    from raydenoise.storage.names import is_partial, temp_name

    store = open_store(str(tmp_path), None)
    for name in (
        "a" * 255,
        "é" * 127 + ".p",
        "x" * 230 + ".png",
    ):  # 255 and 256 bytes (é is 2 bytes), 234
        if len(os.fsencode(name)) > 255:
            continue
        store.write_bytes("sub/" + name, b"data")
        assert (tmp_path / "sub" / name).read_bytes() == b"data"
    tmp = temp_name("b" * 255, str(tmp_path))
    assert len(os.fsencode(tmp)) <= 255 and is_partial(tmp) and tmp.startswith(".bbb")
    assert not [
        p for p in (tmp_path / "sub").iterdir() if is_partial(p.name)
    ]  # no temporary left behind
