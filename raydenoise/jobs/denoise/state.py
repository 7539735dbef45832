"""One image's state as it travels read -> model -> write (a dict of _STATE_COLS), the stores a
worker opens, and the packing of states into Ray Data batches. ``error`` is the image's own
failure (a report row with status error); ``fatal`` is a failure of the storage itself, which
stops the job; ``note`` says something the report should keep.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...imaging.images import (
    object_column,
)
from ...ledger import runfiles
from ...ledger.plan import (
    KEEP,
    output_key,
)
from ...storage.errors import object_error, storage_wide
from ...storage.store import cached_store

_EMPTY = np.zeros((1, 1, 3), np.uint8)  # placeholder pixels of an error row (same ndim as images)


_NO_ALPHA = np.zeros((1, 1), np.uint8)  # placeholder alpha (same ndim as alpha channels)


_STATE_COLS = (
    "key",
    "skip",
    "image",
    "alpha",
    "has_alpha",
    "gray",
    "format",
    "output",
    "height",
    "width",
    "error",
    "note",
    "fatal",
    "seconds",
    "node",
    "listed_bytes",
    "listed_tag",
    "out_md5",
    "input_noise",
    "output_noise",
    "sigma",
    "change",
    "expected_md5",
    "input_bytes",
    "input_tag",
    "exif",
    "icc",
    "quality",
    "subsampling",
)


_IMAGE_COLS = ("image", "alpha", "output")


_BYTES_COLS = ("exif", "icc")  # what the output keeps of the input (images.Keep)


class _Stores:
    """The stores one worker reads and writes, opened once per process."""

    def __init__(
        self,
        input_uri: str,
        output_uri: str,
        reference_uri: str | None,
        endpoint: str | None,
        max_pixels: int | None,
        report_uri: str | None = None,
        run_dir: str = "",
        stamp: dict[str, str] | None = None,
        quality: int | None = None,
        fmt: str = KEEP,
    ):
        self.inp = cached_store(input_uri, endpoint)
        self.out = cached_store(output_uri, endpoint)
        self.ref = cached_store(reference_uri, endpoint) if reference_uri else None
        self.rep = cached_store(report_uri, endpoint) if report_uri else None
        self.max_pixels, self.run_dir = max_pixels, run_dir
        self.stamp = stamp or {}  # "model", "made_by": what makes this run's outputs (see made_by)
        self.quality = quality  # --quality of lossy outputs (None: the input's)
        self.fmt = fmt  # --format of the outputs (KEEP: each input's own)

    def out_key(self, key: str) -> str:
        """Where the output of the input ``key`` goes (plan.output_key)."""
        return output_key(key, self.fmt)

    def work(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
        """The work rows (runfiles.WORK_SCHEMA: key, skip, the existing output's listed size and
        tag, the MD5 an earlier report recorded for it, the input's listed tag, a note) of a batch
        of plan slices (``start``/``stop`` positions in the run's work files, read here: the
        driver never holds the keys)."""
        assert self.rep is not None, "the work stage needs the report store"
        for start, stop in zip(batch["start"], batch["stop"]):
            yield from runfiles.read_work(self.rep, self.run_dir, int(start), int(stop)).to_pylist()


def _new_state(key: str, skip: bool, work: dict[str, Any] | None = None) -> dict[str, Any]:
    """``work``: the image's work row (the existing output's listed size and tag, recorded when
    it verifies; the MD5 an earlier report recorded; the input's listed tag; the plan's note)."""
    w = work or {}
    size = w.get("listed_bytes")
    return {
        "key": key,
        "skip": skip,
        "image": _EMPTY,
        "alpha": _NO_ALPHA,
        "has_alpha": False,
        "gray": False,
        "format": "",
        "output": _EMPTY,
        "height": 0,
        "width": 0,
        "error": "",
        "note": w.get("note") or "",
        "fatal": "",
        "seconds": 0.0,
        "node": _this_node(),
        "listed_bytes": -1 if size is None else size,
        "listed_tag": w.get("listed_tag") or "",
        "out_md5": "",
        "expected_md5": w.get("expected_md5") or "",
        "input_bytes": -1,
        "input_tag": w.get("input_tag") or "",
        "exif": b"",
        "icc": b"",
        "quality": 0,
        "subsampling": -1,
        "input_noise": math.nan,
        "output_noise": math.nan,
        "sigma": math.nan,
        "change": math.nan,
    }


def _this_node() -> str:
    """The Ray node id of this process ("" outside Ray): the report says where each image ran."""
    import sys

    ray = sys.modules.get("ray")  # a worker has Ray loaded; a plain process (tests, API) may not
    try:
        return (
            ray.get_runtime_context().get_node_id()
            if ray is not None and ray.is_initialized()
            else ""
        )
    except Exception:
        return ""


def _not_attempted(key: str, skip: bool, fatal: str) -> dict[str, Any]:
    """The state of an image left alone after a storage failure earlier in its batch (each try
    would wait for the same dead storage)."""
    return {**_new_state(key, skip), "fatal": f"not attempted after: {fatal}"}


def _storage_failure(
    state: dict[str, Any], exc: BaseException, uri: str, what: str
) -> dict[str, Any]:
    """Record a read/write failure: the storage as a whole (fatal) or this object (error)."""
    if storage_wide(exc):
        state["fatal"] = f"{uri}: {object_error(exc)}"
    else:
        state["error"] = f"{what}: {object_error(exc)}"
    return state


def _pack(states: list[dict[str, Any]]) -> dict[str, Any]:
    """States -> a Ray Data batch. 16-bit pixels travel as their bytes (a uint8 view, with a
    ``<col>_u16`` flag): Ray Data cannot put uint8 and uint16 images of different blocks in one
    column."""
    batch = {
        k: object_column([s[k] for s in states])
        if k in _BYTES_COLS
        else np.array([s[k] for s in states])
        for k in _STATE_COLS
        if k not in _IMAGE_COLS
    }
    for k in _IMAGE_COLS:
        arrays = [np.ascontiguousarray(s[k]) for s in states]
        batch[k] = object_column([a.view(np.uint8) for a in arrays])
        batch[f"{k}_u16"] = np.array([a.dtype == np.uint16 for a in arrays])
    return batch


def _unpack(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(batch["key"])

    def plain(v):
        return (
            bytes(v)
            if isinstance(v, (bytes, np.bytes_))
            else v.item()
            if isinstance(v, np.generic)
            else v
        )

    def pixels(k: str, i: int) -> np.ndarray:
        a = np.ascontiguousarray(batch[k][i])
        return a.view(np.uint16) if batch[f"{k}_u16"][i] else a

    return [
        {k: (pixels(k, i) if k in _IMAGE_COLS else plain(batch[k][i])) for k in _STATE_COLS}
        for i in range(n)
    ]


def _short_circuit(states: list[dict[str, Any]]) -> None:
    """After a storage failure in a batch, the rest of the batch is not attempted (each try
    would wait for the same dead storage): they are marked with the same reason."""
    fatal = next((s["fatal"] for s in states if s["fatal"]), "")
    if fatal:
        for s in states:
            if not s["fatal"] and not s["error"]:
                s["fatal"] = f"not attempted after: {fatal}"
