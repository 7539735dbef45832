"""Local paths and ``s3://`` URIs behind one small interface (fsspec underneath).

S3-compatible stores are reached with an explicit endpoint (``--s3-endpoint``) or the
``AWS_ENDPOINT_URL`` variable; credentials always come from the standard AWS chain
(environment, config files, instance role) and are never passed around or printed here.
"""

from __future__ import annotations

import functools
import os
import posixpath
from dataclasses import dataclass

import fsspec
from fsspec.core import url_to_fs


class StorageError(Exception):
    """A URI that cannot be listed, read or written; the message names the URI and why."""


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
        return posixpath.join(self.path, norm) if self.path else norm

    def uri(self, key: str) -> str:
        """The user-facing URI of ``key``."""
        return self.root.rstrip("/") + "/" + key

    def list_keys(self) -> list[str]:
        """All files below the root, recursively, as sorted relative keys.

        Hidden entries (any path part starting with '.') are skipped; the root not existing is
        an error, an existing but empty root gives [].
        """
        try:
            self.fs.invalidate_cache()
            if not self.fs.exists(self.path):
                raise StorageError(f"{self.root}: no such file or folder")
            if self.fs.isfile(self.path):
                raise StorageError(f"{self.root}: is a file, expected a folder or prefix")
            found = self.fs.find(self.path, withdirs=False)
        except StorageError:
            raise
        except Exception as exc:  # botocore/aiohttp errors come in many classes
            raise StorageError(f"{self.root}: cannot list ({_reason(exc)})") from exc
        base = self.path.rstrip("/") + "/"
        keys = []
        for p in found:
            if not p.startswith(base):
                continue
            key = p[len(base):]
            if any(part.startswith(".") for part in key.split("/")):
                continue
            keys.append(key)
        return sorted(keys)

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.key_path(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self.key_path(key)
        if not self.is_s3:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.pipe_file(path, data)

    def open_write(self, key: str):
        path = self.key_path(key)
        if not self.is_s3:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return self.fs.open(path, "wb")

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.key_path(key))

    def remove(self, keys: list[str]) -> None:
        if keys:
            self.fs.rm([self.key_path(k) for k in keys])

    def check_writable(self) -> None:
        """Write and delete a small marker object; StorageError if that fails."""
        key = ".raydenoise-write-check"
        try:
            self.write_bytes(key, b"ok")
            self.remove([key])
        except Exception as exc:
            raise StorageError(f"{self.root}: cannot write ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def last_error_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text: where Ray and Ray Train put the cause."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(exc).__name__


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
    local = uri[len("file://"):] if uri.startswith("file://") else uri
    local = os.path.abspath(os.path.expanduser(local))
    fs, path = url_to_fs(local)
    return Store(fs=fs, root=local, path=path.rstrip("/") or "/")


@functools.lru_cache(maxsize=16)
def cached_store(uri: str, endpoint: str | None) -> Store:
    """open_store, once per process and (uri, endpoint): for Ray workers, which handle many
    batches and should not build a new s3fs client for each."""
    return open_store(uri, endpoint)
