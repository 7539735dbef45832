"""The data set format shared by the jobs: ``ingest`` writes it, ``train`` and ``evaluate``
read it. No Ray.

A data set is a folder or prefix with ``manifest.json`` (format ``raydenoise-pairs``: the run,
counts per split, and the shards) and Parquet shards of rows (``id``, ``low``, ``high`` PNG
bytes, sizes, ``split``); a clean-only data set has no ``low`` images.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from ..errors import RaydenoiseError
from .store import Store, open_store

MANIFEST = "manifest.json"


class DatasetError(RaydenoiseError):
    """A data set that is missing or is not a raydenoise data set (a user mistake)."""


def read_manifest(uri: str, s3_endpoint: str | None = None) -> dict:
    """Load ``URI/manifest.json``; DatasetError if it is missing or not a raydenoise manifest."""
    store = open_store(uri, s3_endpoint)
    try:
        data = store.read_bytes(MANIFEST)
    except FileNotFoundError:
        raise DatasetError(
            f"{store.uri(MANIFEST)} not found: run `raydenoise ingest` first"
        ) from None
    except Exception as exc:
        raise DatasetError(f"{store.uri(MANIFEST)}: cannot read ({exc})") from None
    try:
        manifest = json.loads(data)
    except ValueError:
        raise DatasetError(f"{store.uri(MANIFEST)} is not valid JSON") from None
    if manifest.get("format") != "raydenoise-pairs":
        raise DatasetError(f"{store.uri(MANIFEST)} is not a raydenoise data set manifest")
    return manifest


def iter_shard_rows(
    store: Store, path: str, columns: tuple[str, ...], batch_size: int = 8
) -> Iterator[list[tuple[Any, ...]]]:
    """Stream one shard's rows, ``batch_size`` at a time, as lists of tuples (one value per
    column): only one batch of encoded images is in memory, never the shard."""
    with store.fs.open(store.key_path(path), "rb") as f:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=list(columns)):
            yield list(zip(*(rb.column(c).to_pylist() for c in columns)))
