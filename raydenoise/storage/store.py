"""Local paths and ``s3://`` URIs behind one small interface (fsspec underneath).

S3-compatible stores are reached with an explicit endpoint (``--s3-endpoint``) or the
``AWS_ENDPOINT_URL`` variable; credentials always come from the standard AWS chain
(environment, config files, instance role) and are never passed around or printed here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fsspec
from fsspec.core import url_to_fs

from .errors import StorageError, _reason
from .names import escape_name, is_partial, temp_name, unescape_name

LIST_PAGE = 1000  # keys per S3 list request (the most S3 returns)
LISTING_ENV = (
    "RAYDENOISE_S3_LISTING"  # "flat" (the server lists in key order, as AWS does) or "walk"
)


# Local file names are bytes; the ones that are not valid UTF-8 (old zips, Latin-1 shares) reach
# Python as lone surrogates ('caf\udce9.png'), which Parquet, JSON and terminals refuse. Keys are
# therefore escaped text: each undecodable byte as "\xNN" and a literal backslash as "\\" (so no
# two names share a key, and sorting keys sorts names the same way in every listing). A local
# Store unescapes a key where it touches the file system: the name on disk is kept byte for byte.


@dataclass(frozen=True)
class Entry:
    """A listed file: its key (relative to the root), size in bytes and a tag that changes when
    the file is rewritten (S3: the ETag; local: the modification time in nanoseconds)."""

    key: str
    size: int
    tag: str


PREFETCH = 8  # sub-folders listed ahead, in parallel, while a walk goes on


def _s3_entry(key: str, obj: dict) -> Entry:
    """The Entry of one object of a list_objects_v2 page, ``key`` relative to the root."""
    return Entry(key, int(obj.get("Size", 0)), str(obj.get("ETag", "")).strip('"'))


def md5_hex(data: bytes) -> str:
    """The MD5 of ``data`` (what S3 reports as the ETag of a single PUT)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _walk(
    folder: Callable[[str], list[tuple[str, Entry | None]]], prefetch: int = PREFETCH
) -> Iterator[Entry]:
    """Every file below a root in sorted key order, given ``folder(rel)``: the sorted entries of
    one folder ('' or ending in '/'), sub-folders as ("name/", None). A sub-folder sorts as
    "name/", and every key in it starts with that, so a depth-first walk in that order yields
    keys in global order ("a.png" < "a/b.png" < "a0.png"). No recursion: one entry list per
    open folder.

    The next ``prefetch`` sub-folders of each open folder are listed ahead by a pool of threads
    (S3 requests wait on the network; Store walks local folders with prefetch=1), so a prefix of
    many folders is listed by parallel requests while the keys still come out one at a time, in
    order; memory holds at most ``prefetch`` folder listings per open folder."""
    from concurrent.futures import ThreadPoolExecutor

    pool = (
        ThreadPoolExecutor(prefetch, thread_name_prefix="raydenoise-list") if prefetch > 1 else None
    )

    class Open:
        """A folder being walked: its entries, and its sub-folders' listings in flight."""

        def __init__(self, rel: str, names: list):
            self.rel, self.entries = rel, iter(names)
            self.subs = [rel + n for n, e in names if e is None]
            self.ahead = {s: pool.submit(folder, s) for s in self.subs[:prefetch]} if pool else {}
            self.next = len(self.ahead)  # the next sub-folder not yet asked for

        def take(self, sub: str) -> list:
            future = self.ahead.pop(sub, None)
            if pool and self.next < len(self.subs):  # keep ``prefetch`` listings in flight
                self.ahead[self.subs[self.next]] = pool.submit(folder, self.subs[self.next])
                self.next += 1
            return future.result() if future is not None else folder(sub)

    stack = [Open("", folder(""))]
    try:
        while stack:
            top = stack[-1]
            for name, entry in top.entries:
                if entry is None:
                    stack.append(Open(top.rel + name, top.take(top.rel + name)))
                    break
                yield entry
            else:
                stack.pop()
    finally:
        for frame in stack:
            for future in frame.ahead.values():
                future.cancel()
        if pool:
            pool.shutdown()


@dataclass(frozen=True)
class Store:
    """A filesystem plus the root URI every relative key is resolved against.

    ``root`` is kept as the user wrote it (``s3://bucket/prefix`` or a local path) so messages
    show the user's own spelling; ``path`` is the filesystem-internal form.
    """

    fs: fsspec.AbstractFileSystem
    root: str
    path: str

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def key_path(self, key: str) -> str:
        """The filesystem path of ``key`` (a '/'-separated key relative to the root).

        Raises StorageError when the key would leave the root (``..``, absolute keys): output
        keys must stay inside the output prefix.
        """
        norm = posixpath.normpath(key)
        if key.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
            raise StorageError(f"key {key!r} escapes {self.root}")
        if not self.is_s3:
            norm = unescape_name(norm)  # the name on disk (see escape_name)
        return posixpath.join(self.path, norm) if self.path else norm

    def uri(self, key: str) -> str:
        """The user-facing URI of ``key``."""
        return self.root.rstrip("/") + "/" + key

    def list_keys(self) -> list[str]:
        """All files below the root, recursively, as sorted relative keys, hidden ones (names
        starting with '.') included: callers decide what to do with them and say so. Symbolic
        links are listed as files and not followed. The root not existing is an error, an
        existing but empty root gives []. Holds every key: see iter_keys for a stream.
        """
        return list(self.iter_keys())

    def iter_keys(self, page_size: int = LIST_PAGE) -> Iterator[str]:
        """The keys of iter_entries, in sorted order, streamed."""
        return (e.key for e in self.iter_entries(page_size))

    def iter_entries(self, page_size: int = LIST_PAGE) -> Iterator[Entry]:
        """Every file below the root as an Entry (key, size, tag), in sorted key order, streamed:
        two listings can be merged side by side without holding either.

        AWS S3 lists one page of ``page_size`` keys at a time, in key order. Other S3 servers
        need not (SeaweedFS walks folders, so "a/b" comes before "a b"): they are listed folder by
        folder (a page at a time), each folder sorted here (see s3_lists_sorted). Locally the walk
        is folder by folder, each folder sorted. Memory stays bounded by a page or, walking
        folders, by the largest single folder. StorageError when the root is missing
        or a file, or the listing fails (naming the root and why)."""
        try:
            if self.is_s3:
                yield from self._iter_s3(page_size)
            else:
                if not os.path.isdir(self.path):
                    self._check_root()
                    raise StorageError(f"{self.root}: not a folder")
                yield from _walk(
                    self._local_folder, prefetch=1
                )  # directory reads are fast: threads cost more
        except StorageError:
            raise
        except Exception as exc:  # botocore/aiohttp errors come in many classes
            raise StorageError(f"{self.root}: cannot list ({_reason(exc)})") from exc

    def _check_root(self) -> None:
        """Why an empty listing is an error: the root does not exist, or is a file."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.path):
            raise StorageError(f"{self.root}: no such file or folder")
        if self.fs.isfile(self.path):
            raise StorageError(f"{self.root}: is a file, expected a folder or prefix")

    def _s3_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.path.partition("/")
        return bucket, prefix.rstrip("/") + "/" if prefix else ""

    def _s3_pages(self, prefix: str, page_size: int, delimiter: bool) -> Iterator[dict]:
        bucket, _ = self._s3_prefix()
        token = None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
            if delimiter:
                kwargs["Delimiter"] = "/"
            if token:
                kwargs["ContinuationToken"] = token
            page = self.fs.call_s3("list_objects_v2", **kwargs)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def s3_lists_sorted(self) -> bool:
        """Whether the flat listing of this S3 server is in key order: AWS S3 (no endpoint or an
        amazonaws.com one) is; other servers are walked folder by folder (SeaweedFS is not:
        it lists "a/b" before "a b"). ``RAYDENOISE_S3_LISTING=flat`` or ``walk`` decides."""
        mode = os.environ.get(LISTING_ENV, "").strip().lower()
        if mode in ("flat", "walk"):
            return mode == "flat"
        endpoint = getattr(self.fs, "endpoint_url", None) or ""
        return not endpoint or "amazonaws.com" in endpoint

    def _iter_s3(self, page_size: int) -> Iterator[Entry]:
        if not self.s3_lists_sorted():
            found = False
            for e in _walk(lambda rel: self._s3_folder(rel, page_size)):
                found = True
                yield e
            if not found:
                self._check_root()
            return
        _, prefix = self._s3_prefix()
        last = None
        for page in self._s3_pages(prefix, page_size, delimiter=False):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix) :]
                if not key or key.endswith("/"):  # a "folder" marker object is not a file
                    continue
                if last is not None and key <= last:
                    raise StorageError(
                        f"{self.root}: the server listed {key!r} after {last!r}, not in key order; "
                        f"set {LISTING_ENV}=walk to list it folder by folder"
                    )
                last = key
                yield _s3_entry(key, obj)
        if last is None:
            self._check_root()

    def _s3_folder(self, rel: str, page_size: int) -> list[tuple[str, Entry | None]]:
        _, prefix = self._s3_prefix()
        names: list[tuple[str, Entry | None]] = []
        for page in self._s3_pages(prefix + rel, page_size, delimiter=True):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix + rel) :]
                if name and "/" not in name:
                    names.append((name, _s3_entry(rel + name, obj)))
            for sub in page.get("CommonPrefixes", []):
                name = sub["Prefix"][len(prefix + rel) :]
                if name.strip("/"):
                    names.append((name, None))
        return sorted(names, key=lambda n: n[0])

    def _local_folder(self, rel: str) -> list[tuple[str, Entry | None]]:
        """The entries of the folder ``rel`` ('' or ending in '/'), sub-folders as ("name/", None).
        Symbolic links are files, never followed; the tag is the modification time (ns)."""
        try:
            names: list[tuple[str, Entry | None]] = []
            with os.scandir(os.path.join(self.path, unescape_name(rel))) as it:
                for e in it:
                    name = escape_name(e.name)
                    if e.is_dir(follow_symlinks=False):
                        names.append((name + "/", None))
                    else:
                        st = e.stat(follow_symlinks=False)
                        names.append((name, Entry(rel + name, st.st_size, str(st.st_mtime_ns))))
            return sorted(names, key=lambda n: n[0])
        except OSError as exc:
            raise StorageError(
                f"{self.uri(rel.rstrip('/')) if rel else self.root}: cannot list "
                f"({exc.strerror or exc})"
            ) from exc

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.key_path(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key`` atomically: readers see the old object or the whole new one."""
        with self.open_write(key) as f:
            f.write(data)

    def written_tag(self, key: str, data: bytes) -> str:
        """The tag iter_entries will list for ``key``, just written with ``data``: locally its
        modification time; on S3 the ETag of a single PUT, the MD5 of the bytes (a multipart
        upload's ETag differs, so such an output is verified again rather than trusted)."""
        if self.is_s3:
            return md5_hex(data)
        return str(os.stat(self.key_path(key), follow_symlinks=False).st_mtime_ns)

    @contextlib.contextmanager
    def open_write(self, key: str):
        """A binary file to write ``key`` through, published only when the block ends without an
        exception (local: temporary name + rename; S3: one PUT or a completed multipart upload).
        On an exception nothing is published and the temporary is removed."""
        path = self.key_path(key)
        if self.is_s3:
            f = self.fs.open(path, "wb")
            try:
                yield f
            except BaseException:
                with contextlib.suppress(Exception):
                    f.discard()  # abort: no object, no dangling multipart upload
                raise
            f.close()
            return
        self.check_no_link_out(key)
        folder, name = posixpath.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = posixpath.join(folder, temp_name(name, folder))
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise

    def check_no_link_out(self, key: str) -> None:
        """StorageError naming the link when a symbolic link on the way from the root to ``key``
        (the key itself included) leads outside the root: a write through it would land outside
        (e.g. ``OUT/sub -> IN/sub`` would overwrite inputs). Links that stay inside are fine; a
        link as the file itself is refused too (it would be replaced, not followed, but it is not
        an output raydenoise made). Local only: S3 has no links."""
        if self.is_s3:
            return
        root = os.path.realpath(self.path)
        here, parts = self.path, posixpath.normpath(key).split("/")
        for i, part in enumerate(parts):
            here = os.path.join(here, part)
            if not os.path.islink(here):
                continue
            target = os.path.realpath(here)
            outside = target != root and not target.startswith(root + os.sep)
            if outside or i == len(parts) - 1:
                raise StorageError(
                    f"not written: {self.uri('/'.join(parts[: i + 1]))} is a symbolic link (to "
                    f"{os.readlink(here)}){' that leads outside ' + self.root if outside else ''}; "
                    "raydenoise never writes through a link"
                )

    def remove_partials(self, keys: list[str]) -> int:
        """Delete temporary files that interrupted writes left among ``keys``; returns how many."""
        stale = [k for k in keys if is_partial(k)]
        with contextlib.suppress(Exception):
            self.remove(stale)
        return len(stale)

    def identity(self) -> str:
        """The root with symlinks and '..' resolved: two Stores with overlapping identities
        address the same objects, whatever spelling the user chose."""
        if self.is_s3:
            return "s3://" + posixpath.normpath(self.path)
        return os.path.realpath(self.path)

    def contains(self, other: Store) -> bool:
        """True when ``other`` is this root or lies below it (after resolving, see identity)."""
        a, b = self.identity().rstrip("/") + "/", other.identity().rstrip("/") + "/"
        return b.startswith(a)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.key_path(key))

    def remove_folder(self, rel: str) -> None:
        """Delete the folder (prefix) ``rel`` and all below it, best effort (it may not exist)."""
        with contextlib.suppress(Exception):
            if self.fs.exists(self.key_path(rel)):
                self.fs.rm(self.key_path(rel), recursive=True)

    def remove(self, keys: list[str]) -> None:
        if keys:
            self.fs.rm([self.key_path(k) for k in keys])

    def check_writable(self) -> None:
        """Write and delete a small marker object; StorageError if that fails."""
        key = ".raydenoise-write-check"
        try:
            self.write_bytes(key, b"ok")
            self.remove([key])
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"{self.root}: cannot write ({_reason(exc)})") from exc


def endpoint_from_env(explicit: str | None = None) -> str | None:
    """The S3 endpoint to use: ``explicit`` if given, else ``AWS_ENDPOINT_URL``, else AWS."""
    return explicit or os.environ.get("AWS_ENDPOINT_URL") or None


def open_store(uri: str, s3_endpoint: str | None = None) -> Store:
    """A Store for a local path or ``s3://bucket/prefix``.

    Local paths are made absolute so that Ray workers on the same machine resolve them the
    same way as the driver.
    """
    if not uri:
        raise StorageError("empty URI")
    if "://" in uri and not uri.startswith(("s3://", "file://")):
        raise StorageError(f"{uri}: unsupported scheme (use a local path or s3://bucket/prefix)")
    if uri.startswith("s3://"):
        endpoint = endpoint_from_env(s3_endpoint)
        opts: dict = {}
        if endpoint:
            opts["endpoint_url"] = endpoint
        root = uri.rstrip("/")
        if root == "s3:/" or root == "s3:":
            raise StorageError(f"{uri}: no bucket given")
        fs, path = url_to_fs(root, **opts)
        return Store(fs=fs, root=root, path=path.rstrip("/"))
    local = uri[len("file://") :] if uri.startswith("file://") else uri
    local = os.path.abspath(os.path.expanduser(local))
    fs, path = url_to_fs(local)
    return Store(fs=fs, root=local, path=path.rstrip("/") or "/")


@functools.lru_cache(maxsize=16)
def cached_store(uri: str, endpoint: str | None) -> Store:
    """open_store, once per process and (uri, endpoint): for Ray workers, which handle many
    batches and should not build a new s3fs client for each."""
    return open_store(uri, endpoint)
