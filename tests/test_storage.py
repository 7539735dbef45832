"""Streaming listings: local folders (in sorted key order) and S3 prefixes, page by page."""

import os

import pytest

from raydenoise.storage import LIST_PAGE, StorageError, open_store

NAMES = ["a.png", "a/b.png", "a0.png", "a/c/d.png", "a-b/x", "b", ".h/x", "z/.y", "é.png", "a/c.png", "A", "a b/x"]


def test_a_local_walk_yields_every_file_in_sorted_key_order(tmp_path):
    for n in NAMES:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "link")  # a link to a folder is a name, never followed
    keys = list(open_store(str(tmp_path)).iter_keys())
    assert keys == sorted(NAMES + ["link"])
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


def test_s3_listing_pages_through_more_keys_than_one_page(s3_server):
    base = s3_server.prefix()
    fs = s3_server.fs()
    keys = [f"p{i // 100:02d}/{i:05d}.png" for i in range(LIST_PAGE + 37)] + NAMES
    fs.pipe({f"{base[5:]}/{k}": b"x" for k in keys})
    fs.pipe(f"{base[5:]}-sibling/not-mine.png", b"x")  # a prefix that shares the name's start
    store = open_store(base, s3_server.endpoint)
    # in the server's order (SeaweedFS walks folders; AWS sorts), each key once
    streamed = list(store.iter_keys())  # the default page: two list requests
    assert len(streamed) == len(keys) and sorted(streamed) == sorted(keys)
    assert list(store.iter_keys(page_size=7)) == streamed  # many pages, the same stream
    assert store.list_keys() == sorted(keys)
    with pytest.raises(StorageError, match="no such file or folder"):
        list(open_store(f"{base}/missing", s3_server.endpoint).iter_keys())
    with pytest.raises(StorageError, match="is a file"):
        list(open_store(f"{base}/b", s3_server.endpoint).iter_keys())
