"""``raydenoise ingest``: stream paired images into Parquet shards with Ray Data.

The driver only lists keys and pairs them (no pixels), as a merge of the two listings sorted by
id (pairing.iter_pairs; each listing streamed and sorted SORT_ROWS keys at a time, the rest in
sorted runs on local disk). Pairs are cut into shard specs of at most ``rows_per_shard``
pairs, per split, in natural id order, written to ``OUT/.ingest-<run>/`` as they come (a spec
is a range of positions there); Ray Data runs one task per shard spec, and each task reads its
pairs, then reads, validates, normalizes and writes its own shard in small row groups, so
memory per task stays bounded however large the data set. Tasks return only small records
(row counts and rejected files), which the driver turns into ``manifest.json``.

Layout of OUT::

    manifest.json                     arguments, counts, shard list, schema, rejected inputs
    train/<run>-00000.parquet ...     at most rows_per_shard rows each
    val/<run>-00000.parquet ...
    test/<run>-00000.parquet ...

Re-running into the same OUT writes new shards under a new run name, then the new manifest,
then deletes the previous run's shards: readers of the manifest always see a consistent set.
"""

from .config import SCHEMA, SCHEMA_VERSION, IngestConfig, IngestError, IngestResult
from .job import run_ingest

__all__ = ["SCHEMA", "SCHEMA_VERSION", "IngestConfig", "IngestError", "IngestResult", "run_ingest"]
