"""ingest's configuration and the data set's Parquet schema."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ...errors import RaydenoiseError
from .. import options
from ..options import opt

SCHEMA_VERSION = 2  # 2: low and low_file may be null (clean-only data sets)


ROW_GROUP_ROWS = 8  # pairs per Parquet row group: bounds a writer's memory to a few MB


SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("low", pa.binary(), nullable=True),
        pa.field("high", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("low_file", pa.string(), nullable=True),
        pa.field("high_file", pa.string(), nullable=False),
    ],
    metadata={"raydenoise.schema_version": str(SCHEMA_VERSION)},
)


COLUMN_DOCS = {
    "id": "relative path without extension, shared by the pair",
    "split": "train, val or test (seeded hash of id)",
    "low": "PNG-encoded 8-bit RGB of the degraded image (null in a clean-only data set)",
    "high": "PNG-encoded 8-bit RGB of the clean image",
    "height": "pixels",
    "width": "pixels",
    "low_file": "source key of low, relative to --low (null in a clean-only data set)",
    "high_file": "source key of high, relative to --high",
}


class IngestError(RaydenoiseError):
    """A user-facing failure of the whole ingest (bad arguments, nothing valid, storage)."""


class _StorageFailed(Exception):
    """A shard task met a failure of the storage itself (its message names the object)."""


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """``raydenoise ingest``'s options (the command line is built from these fields)."""

    low: str | None = opt(
        None,
        "folder or s3:// prefix of degraded images; leave it out for a clean-only data set "
        "(train it with --degrade)",
    )
    high: str = opt(help="folder or s3:// prefix of clean images, same relative paths")
    out: str = opt(help="folder or s3:// prefix for shards and manifest.json")
    rows_per_shard: int = opt(
        128,
        "pairs per Parquet shard (default 128; a shard is one unit of parallel work)",
        type=options.positive,
    )
    seed: int = opt(
        42, "split seed: a pair's split depends only on its name and this seed (default 42)"
    )
    split: tuple[float, float, float] = opt(
        (0.7, 0.2, 0.1), "train,val,test fractions (default 0.7,0.2,0.1)", type=options.split
    )
    include_hidden: bool = options.include_hidden()
    dry_run: bool = options.dry_run(
        "list and pair only (no Ray, nothing written): pairs per split, shards, rejected files "
        "and why, and a rough time estimate from a few pairs converted here"
    )
    s3_endpoint: str | None = options.s3_endpoint()


@dataclass(frozen=True)
class IngestResult:
    manifest: dict  # empty for a dry run
    out: str
    plan: dict | None = None  # a dry run's summary
