"""ingest's configuration and the data set's Parquet schema."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

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


class IngestError(Exception):
    """A user-facing failure of the whole ingest (bad arguments, nothing valid, storage)."""


class _StorageFailed(Exception):
    """A shard task met a failure of the storage itself (its message names the object)."""


@dataclass(frozen=True)
class IngestConfig:
    low: str | None  # None: a clean-only data set (train it with --degrade)
    high: str
    out: str
    rows_per_shard: int = 128
    seed: int = 42
    split: tuple[float, float, float] = (0.7, 0.2, 0.1)
    s3_endpoint: str | None = None
    include_hidden: bool = False  # files and folders whose names start with '.'
    dry_run: bool = (
        False  # list and pair only: counts per split, rejections, an estimate; nothing written
    )


@dataclass(frozen=True)
class IngestResult:
    manifest: dict  # empty for a dry run
    out: str
    plan: dict | None = None  # a dry run's summary


SAMPLE = 3  # pairs read and converted on the driver by --dry-run to estimate the time
