"""One image's state as it travels read -> model -> write (ImageState), the stores a worker
opens, and the packing of states into Ray Data batches."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
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


@dataclass
class ImageState:
    """One image as it travels read -> model -> write (a row of a Ray Data batch between the
    staged pipeline's steps: see _pack). ``error``: the image's own failure (a report row with
    status error); ``fatal``: a failure of the storage itself, which stops the job; ``note``:
    something the report should keep."""

    key: str
    skip: bool  # its output exists (to verify, and to keep when complete)
    image: np.ndarray = field(default_factory=lambda: _EMPTY)  # the decoded input
    alpha: np.ndarray = field(default_factory=lambda: _NO_ALPHA)
    has_alpha: bool = False
    gray: bool = False
    format: str = ""  # the input's format (Pillow's name)
    output: np.ndarray = field(default_factory=lambda: _EMPTY)  # the denoised (or kept) pixels
    height: int = 0
    width: int = 0
    error: str = ""
    note: str = ""
    fatal: str = ""
    seconds: float = 0.0
    node: str = ""  # the Ray node id where it was denoised
    listed_bytes: int = -1  # the existing output's listed size and tag (-1, "": none)
    listed_tag: str = ""
    out_md5: str = ""  # the MD5 of the existing output, once read
    input_noise: float = math.nan  # noise levels (0-255 scale) before and after
    output_noise: float = math.nan
    sigma: float = math.nan  # the level the conditioned model was given
    change: float = math.nan  # RMS(output - input)
    expected_md5: str = ""  # the MD5 an earlier report recorded for the existing output
    input_bytes: int = -1
    input_tag: str = ""
    exif: bytes = b""  # what the output keeps of the input (imaging.metadata.Keep)
    icc: bytes = b""
    quality: int = 0
    subsampling: int = -1

    def failed(self) -> bool:
        return bool(self.error or self.fatal)

    def needs_model(self) -> bool:
        return not (self.error or self.fatal or self.skip)


_STATE_COLS = tuple(f.name for f in fields(ImageState))


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


def _new_state(key: str, skip: bool, work: dict[str, Any] | None = None) -> ImageState:
    """``work``: the image's work row (the existing output's listed size and tag, recorded when
    it verifies; the MD5 an earlier report recorded; the input's listed tag; the plan's note)."""
    w = work or {}
    size = w.get("listed_bytes")
    return ImageState(
        key,
        skip,
        note=w.get("note") or "",
        node=_this_node(),
        listed_bytes=-1 if size is None else size,
        listed_tag=w.get("listed_tag") or "",
        expected_md5=w.get("expected_md5") or "",
        input_tag=w.get("input_tag") or "",
    )


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


def _not_attempted(key: str, skip: bool, fatal: str) -> ImageState:
    """The state of an image left alone after a storage failure earlier in its batch (each try
    would wait for the same dead storage)."""
    return replace(_new_state(key, skip), fatal=f"not attempted after: {fatal}")


def _storage_failure(state: ImageState, exc: BaseException, uri: str, what: str) -> ImageState:
    """Record a read/write failure: the storage as a whole (fatal) or this object (error)."""
    if storage_wide(exc):
        state.fatal = f"{uri}: {object_error(exc)}"
    else:
        state.error = f"{what}: {object_error(exc)}"
    return state


def _pack(states: list[ImageState]) -> dict[str, Any]:
    """States -> a Ray Data batch. 16-bit pixels travel as their bytes (a uint8 view, with a
    ``<col>_u16`` flag): Ray Data cannot put uint8 and uint16 images of different blocks in one
    column."""
    batch = {
        k: object_column([getattr(s, k) for s in states])
        if k in _BYTES_COLS
        else np.array([getattr(s, k) for s in states])
        for k in _STATE_COLS
        if k not in _IMAGE_COLS
    }
    for k in _IMAGE_COLS:
        arrays = [np.ascontiguousarray(getattr(s, k)) for s in states]
        batch[k] = object_column([a.view(np.uint8) for a in arrays])
        batch[f"{k}_u16"] = np.array([a.dtype == np.uint16 for a in arrays])
    return batch


def _unpack(batch: dict[str, np.ndarray]) -> list[ImageState]:
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

    def row(i: int) -> dict[str, Any]:
        return {k: (pixels(k, i) if k in _IMAGE_COLS else plain(batch[k][i])) for k in _STATE_COLS}

    return [ImageState(**row(i)) for i in range(n)]


def _short_circuit(states: list[ImageState]) -> None:
    """After a storage failure in a batch, the rest of the batch is not attempted (each try
    would wait for the same dead storage): they are marked with the same reason."""
    fatal = next((s.fatal for s in states if s.fatal), "")
    if fatal:
        for s in states:
            if not s.failed():
                s.fatal = f"not attempted after: {fatal}"
