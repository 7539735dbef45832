"""Planning a job over a bucket without holding its listing: merges of sorted streams. No Ray.

``denoise`` decides, for every input, whether it is work, already done (its output exists) or
left out by rule, by walking the input listing and the output listing side by side: both come
in sorted key order (Store.iter_entries), so the merge holds one entry of each, never a set of
keys.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

import pyarrow as pa

from ..storage.names import HIDDEN_REASON, PARTIAL_REASON, left_out_reason
from ..storage.parts import external_sort
from ..storage.store import Entry

T = TypeVar("T")
U = TypeVar("U")

REPORT_DIR = "_report"  # denoise's report folder, OUTPUT/_report by default
REPORT_MARKERS = ("report.parquet", "summary.json")  # both present: a raydenoise report folder
REPORT = "part of a raydenoise report from an earlier denoise run"
HIDDEN, PARTIAL = HIDDEN_REASON, PARTIAL_REASON  # with REPORT: the reasons an Item can carry


@dataclass(frozen=True)
class Item:
    """One input: ``excluded`` is the reason it is left out ("" for work); ``existing`` is its
    output's entry when one is listed (the job verifies or trusts it instead of redoing it)."""

    key: str
    excluded: str = ""
    existing: Entry | None = None
    size: int = 0  # the input's bytes
    earlier: dict | None = None  # an earlier run's report row for this key (see trusted)
    tag: str = ""  # the input's listed tag (S3 ETag, local modification time)


KEEP = "keep"  # --format keep: each output in its input's format, at the input's key
# --format NAME: the extensions of each output format; the first is given to renamed outputs.
FORMATS = {
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "webp": (".webp",),
    "tiff": (".tif", ".tiff"),
}
PILLOW_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}


def output_key(key: str, fmt: str = KEEP) -> str:
    """The key of an input's output: the input's key (``keep``), or its name with the format's
    extension in place of its own (``a/b.bmp`` -> ``a/b.png``); a name that already ends in
    one of the format's extensions (any case) keeps it."""
    if fmt == KEEP:
        return key
    exts = FORMATS[fmt]
    head, name = posixpath.split(key)
    stem, ext = posixpath.splitext(name)
    if ext.lower() in exts:
        return key
    name = (stem if ext else name) + exts[0]
    return f"{head}/{name}" if head else name


def _report_folder(key: str) -> str | None:
    """The report folder ("A/_report/") a key lies in, or None."""
    parts = key.split("/")
    for i, part in enumerate(parts[:-1]):
        if part == REPORT_DIR:
            return "/".join(parts[: i + 1]) + "/"
    return None


def select(entries: Iterable[Entry], include_hidden: bool) -> Iterator[Item]:
    """Inputs in listing order, each with the reason it is left out, if any: temporary files of
    interrupted writes always; hidden ones unless ``include_hidden``; the files of an earlier
    run's report folder (``_report/`` holding report.parquet and summary.json), which sort
    together: one folder's keys are held until the folder ends, to see whether it is one."""
    held: list[Entry] = []
    folder: str | None = None

    def release(folder: str) -> Iterator[Item]:
        names = {e.key[len(folder) :] for e in held}
        is_report = all(m in names for m in REPORT_MARKERS)
        for e in held:
            yield _item(e, include_hidden, REPORT if is_report else "")
        held.clear()

    for e in entries:
        if folder is not None and not e.key.startswith(folder):
            yield from release(folder)
            folder = None
        f = _report_folder(e.key)
        if f is not None and (folder is None or f == folder):
            folder = f
            held.append(e)
            continue
        yield _item(e, include_hidden, "")
    if folder is not None:
        yield from release(folder)


def _item(e: Entry, include_hidden: bool, reason: str) -> Item:
    return Item(e.key, left_out_reason(e.key, include_hidden) or reason, size=e.size, tag=e.tag)


def matching(
    records: Iterable[T],
    key_of: Callable[[T], str],
    others: Iterable[U],
    other_key: Callable[[U], str],
) -> Iterator[tuple[T, U | None]]:
    """Each record of a stream sorted by ``key_of``, with the element of ``others`` (sorted by
    ``other_key``) that has the same key, or None: one pass over both sorted streams."""
    it = iter(others)
    other = next(it, None)
    for record in records:
        key = key_of(record)
        while other is not None and other_key(other) < key:
            other = next(it, None)
        yield record, other if other is not None and other_key(other) == key else None


def with_outputs(items: Iterable[Item], outputs: Iterable[Entry] | None) -> Iterator[Item]:
    """Items with the entry of each one's existing output, merging two sorted streams (the
    inputs and the output listing); ``outputs`` None: none exist (or --overwrite)."""
    if outputs is None:
        yield from items
        return
    for item, out in matching(items, _key, outputs, _key):
        yield replace(item, existing=out) if out is not None and not item.excluded else item


def _key(x: Item | Entry) -> str:
    return x.key


SORT_ROWS = 5_000  # inputs sorted in memory at a time when --format renames outputs
_SORT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("excluded", pa.string()),
        ("size", pa.int64()),
        ("tag", pa.string()),
        ("out_key", pa.string()),
        ("out_size", pa.int64()),
        ("out_tag", pa.string()),
    ]
)


def with_renamed_outputs(
    items: Iterable[Item],
    outputs: Iterable[Entry] | None,
    fmt: str,
    scratch,
    run_rows: int = SORT_ROWS,
) -> Iterator[Item]:
    """with_outputs when ``--format`` renames outputs (output_key): the inputs are sorted by
    output key (an external sort: ``run_rows`` at a time in memory, the rest in sorted runs on
    the ``scratch`` store), merged with the output listing, then sorted back into input order.
    Inputs whose outputs would share a key (``img.bmp`` and ``img.tif`` -> ``img.png``): the
    first in key order is kept, each other one is left out with a reason naming it."""

    def rows() -> Iterator[dict]:
        for i in items:
            yield {
                "key": i.key,
                "excluded": i.excluded,
                "size": i.size,
                "tag": i.tag,
                "out_key": "" if i.excluded else output_key(i.key, fmt),
                "out_size": -1,
                "out_tag": "",
            }

    def merged(by_output: Iterable[dict]) -> Iterator[dict]:
        taken, first = None, ""  # the output key last given out, and to which input
        for r, out in matching(by_output, _out_key, outputs or (), _key):
            if r["excluded"]:
                pass
            elif r["out_key"] == taken:
                r["excluded"] = (
                    f"its output {r['out_key']} would also be made from {first} (--format {fmt}); "
                    "rename one of them"
                )
            else:
                taken, first = r["out_key"], r["key"]
                if out is not None:
                    r["out_size"], r["out_tag"] = out.size, out.tag
            yield r

    by_output = external_sort(
        rows(), lambda r: (r["out_key"], r["key"]), scratch, "by-output-", _SORT_SCHEMA, run_rows
    )
    for r in external_sort(
        merged(by_output), lambda r: r["key"], scratch, "by-input-", _SORT_SCHEMA, run_rows
    ):
        existing = None if r["out_size"] < 0 else Entry(r["out_key"], r["out_size"], r["out_tag"])
        yield Item(r["key"], r["excluded"], existing, r["size"], tag=r["tag"])


def with_earlier(items: Iterable[Item], rows: Iterable[dict]) -> Iterator[Item]:
    """Items with an earlier run's report row of the same key, merging two sorted streams."""
    for item, row in matching(items, _key, rows, _row_key):
        yield replace(item, earlier=row) if row is not None and item.existing is not None else item


def _out_key(r: dict) -> str:
    return r["out_key"]


def _row_key(r: dict) -> str:
    return r["key"]


OTHER_MODEL_WHY = "the existing output was made by another model or options"


def other_maker(item: Item, made_by: str) -> str:
    """Why the item's existing output is not what this run would make ("" when it is): the
    earlier report's row must say that this input, at the size and tag listed now, was made into
    it by the same model and options (``made_by``, see denoise.made_by). An output no row vouches
    for (no report, a report from before this was recorded, a run that stopped before its row)
    is of unknown origin and redone too."""
    row = item.earlier
    if row is None or row.get("status") not in ("ok", "skipped"):
        return "no earlier report vouches for the existing output"
    if not row.get("made_by"):
        return "the earlier report does not record what made the existing output"
    if row.get("input_bytes") != item.size or (row.get("input_tag") or "") != item.tag:
        return "the input changed since its existing output was made"
    if row["made_by"] != made_by:
        return f"{OTHER_MODEL_WHY} ({row.get('model') or '?'}, {row['made_by']})"
    return ""


def trusted(item: Item, made_by: str) -> bool:
    """True when an earlier report vouches for the item's existing output: it was made from this
    input by this run's model and options (other_maker), and its row says the output was written
    (or verified) with exactly the size and tag listed now (S3: the ETag of the bytes written;
    local: the modification time), so it was not touched since and need not be read again."""
    row, out = item.earlier or {}, item.existing
    return (
        out is not None
        and not other_maker(item, made_by)
        and bool(row.get("output_tag"))
        and row.get("output_bytes") == out.size
        and row.get("output_tag") == out.tag
    )
