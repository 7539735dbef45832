"""``raydenoise denoise``: Ray Data batch inference over a folder or bucket prefix, with reports.

Pipeline (streaming; the driver holds keys and small report rows, never pixels)::

    CPU (fused):  from_items(keys) -> actors: read, decode, denoise, encode, write, score -> rows
    GPU (staged): from_items(keys) -> read + decode (CPU tasks) -> model (GPU actors)
                                   -> encode + write + score (CPU tasks) -> report rows -> driver

Each output goes to ``OUTPUT/<same relative key>`` in the input's format (a lossy input stays
lossy at its own quality, EXIF and ICC profile carried: images.encode_like), grayscale stays
grayscale, alpha is carried through; 16-bit PNG and TIFF are denoised at full precision and
written with 16 bits. Outputs are written atomically (Store.open_write), so a file under its final
name is complete. Anything that goes wrong with one image becomes that image's ``error`` row and
the job goes on; a failure of the storage itself stops the job, writes the report of what was
done (the rest as ``not-done``) and a rerun resumes. An existing output is kept only when an
earlier report row says the same input was made into it by the same model and options, and it is
unchanged or verifies (plan.other_maker, _verify_existing); anything else is redone. One run per
output at a time (runlock).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import report as rpt
from . import runfiles
from .console import Progress, console, duration, plural, rate
from .images import (
    DEFAULT_MAX_PIXELS,
    MIN_TILE,
    ImageError,
    Keep,
    check_plain_png,
    decode_for_denoise,
    decode_rgb8,
    encode_like,
    object_column,
    stored_size,
)
from .noise_level import BLIND_SIGMA, strength_problem
from .plan import (
    FORMATS,
    KEEP,
    OTHER_MODEL_WHY,
    PILLOW_FORMAT,
    REPORT_DIR,
    Item,
    other_maker,
    output_key,
    select,
    trusted,
    with_earlier,
    with_outputs,
    with_renamed_outputs,
)
from .report import EXCLUDED, NOT_DONE
from .runlock import LockHeld, RunLock
from .session import StartRay, check_shared_paths, ensure_ray
from .storage import (
    Entry,
    StorageError,
    Store,
    cached_store,
    endpoint_from_env,
    is_partial,
    last_error_line,
    md5_hex,
    object_error,
    open_store,
    storage_wide,
)

if TYPE_CHECKING:
    from .inference import Denoiser

# torch (via artifacts, inference, metrics) is imported where a model runs, not at import: a
# mistake in the arguments is reported before it loads.

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


class DenoiseError(Exception):
    """A user-facing failure of the whole job (bad arguments, model, storage)."""


@dataclass(frozen=True)
class DenoiseConfig:
    input: str
    output: str
    model: str = "builtin:denoise"  # or a model folder, local or s3://
    reference: str | None = None
    report: str | None = None  # default: OUTPUT/_report
    batch_size: int = 4
    workers: int | None = None  # None: one per CPU (CPU mode) or per GPU share (GPU mode)
    num_gpus_per_worker: float = 0.0
    tile: int | None = None  # None: whole images, tiled automatically when one would not fit
    overwrite: bool = False
    pipeline: str = "auto"  # "fused" (CPU default), "staged" (GPU default); see FusedActor
    s3_endpoint: str | None = None
    include_hidden: bool = False  # process files and folders whose names start with '.'
    max_megapixels: float = DEFAULT_MAX_PIXELS / 1e6  # larger inputs are refused; 0 = no limit
    dry_run: bool = False  # list and plan only: counts and a time estimate, nothing written
    strength: float = (
        1.0  # x the estimated noise level (conditioned model) or blend (blind); 0 = the input
    )
    sigma: float | None = (
        None  # a fixed noise level (0-255) for a conditioned model, instead of the estimate
    )
    other_model: str = (
        "redo"  # outputs an earlier run made with another model or options: "redo" or "refuse"
    )
    quality: int | None = (
        None  # JPEG/WebP quality of lossy outputs, 1-100 (None: the input's, estimated)
    )
    format: str = KEEP  # the outputs' format: "keep" (each input's own) or a key of plan.FORMATS
    engine: str = "auto"  # "torch", "onnxruntime" or "auto" (engines.choose_engine)
    tta: bool = False  # self-ensemble: the mean of 8 flips/rotations (8x the time)
    onnx_margin: int | None = (
        None  # an .onnx model's receptive field (pixels each side), for tiling
    )
    onnx_multiple: int | None = (
        None  # an .onnx model's size multiple (tiles start on multiples of it)
    )


OTHER_MODEL = ("redo", "refuse")


def made_by(cfg: DenoiseConfig, spec: ModelSpec) -> dict[str, str]:
    """What makes this run's outputs, for the report's ``model`` and ``made_by`` columns: the
    model as named and a hash of its fingerprint (artifacts.model_fingerprint) with every option
    that changes pixels. A rerun keeps an existing output only when these match (plan.other_maker)."""
    import hashlib
    import json

    from .artifacts import model_fingerprint

    options = {
        "weights": model_fingerprint(spec.uri, spec.endpoint),
        "strength": cfg.strength,
        "sigma": cfg.sigma,
        "quality": cfg.quality,
        "engine": spec.engine,
        "tta": cfg.tta,
    }
    if cfg.format != KEEP:  # (absent otherwise: the outputs of earlier versions stay vouched for)
        options["format"] = cfg.format
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    return {"model": spec.uri, "made_by": digest}


def check_config(cfg: DenoiseConfig) -> None:
    """Every number in range and finite, every choice known; DenoiseError says which is not."""
    if cfg.batch_size < 1 or (cfg.workers is not None and cfg.workers < 1):
        raise DenoiseError("--batch-size and --workers must be at least 1")
    if not math.isfinite(cfg.num_gpus_per_worker) or cfg.num_gpus_per_worker < 0:
        raise DenoiseError(
            f"--num-gpus-per-worker must be a finite number >= 0, not {cfg.num_gpus_per_worker}"
        )
    if cfg.tile is not None and cfg.tile < MIN_TILE:
        raise DenoiseError(
            f"--tile must be at least {MIN_TILE} pixels, not {cfg.tile} (smaller tiles would be "
            "mostly margin); leave it out to tile only the images that need it"
        )
    if not math.isfinite(cfg.max_megapixels) or cfg.max_megapixels < 0:
        raise DenoiseError(
            f"--max-megapixels must be a finite number >= 0 (0: no limit), not {cfg.max_megapixels}"
        )
    if cfg.pipeline not in PIPELINES:
        raise DenoiseError(
            f"--pipeline must be one of {', '.join(PIPELINES)}, not {cfg.pipeline!r}"
        )
    if cfg.quality is not None and not 1 <= cfg.quality <= 100:
        raise DenoiseError(f"--quality must be 1-100, not {cfg.quality}")
    if cfg.format != KEEP and cfg.format not in FORMATS:
        raise DenoiseError(
            f"--format must be one of {', '.join((KEEP, *FORMATS))}, not {cfg.format!r}"
        )
    from .engines import ENGINES

    if cfg.engine not in ENGINES:
        raise DenoiseError(f"--engine must be one of {', '.join(ENGINES)}, not {cfg.engine!r}")
    if (cfg.onnx_margin is not None and cfg.onnx_margin < 0) or (
        cfg.onnx_multiple is not None and cfg.onnx_multiple < 1
    ):
        raise DenoiseError("--onnx-margin must be >= 0 and --onnx-multiple >= 1")
    if cfg.other_model not in OTHER_MODEL:
        raise DenoiseError(
            f"--other-model must be one of {', '.join(OTHER_MODEL)}, not {cfg.other_model!r}"
        )
    problem = strength_problem(cfg.strength, cfg.sigma)
    if problem:
        raise DenoiseError(problem)


# ----------------------------------------------------------------------------- one image
# An image's "state" travels through read -> model -> write as a dict of _STATE_COLS. ``error``
# is the image's own failure (a report row with status error); ``fatal`` is a failure of the
# storage itself, which stops the job; ``note`` says something the report should keep (an
# existing output that was redone).


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


def read_one(
    key: str, skip: bool, st: _Stores, work: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Read and decode one input. For a ``skip`` image (its output exists) the existing output is
    verified first: only an output that decodes completely and has the input's size (read from
    the input's header) counts as done (with a reference it is also decoded to be scored);
    anything else (truncated, damaged, vanished, wrong size) is redone, with a note in the report."""
    t0 = time.perf_counter()
    state = _new_state(key, skip, work)
    try:
        try:
            data = st.inp.read_bytes(key)
        except Exception as exc:
            return _storage_failure(state, exc, st.inp.uri(key), "cannot read")
        state["input_bytes"] = len(data)
        if skip and st.ref is None:
            # The input's size from its header (no decode), so an output of another size is redone.
            state["height"], state["width"] = stored_size(data) or (0, 0)
            if _verify_existing(state, st) or state["fatal"]:
                return state  # complete output of the input's size, nothing to score: no decode
        try:
            dec = decode_for_denoise(data, st.max_pixels)
        except ImageError as exc:
            state["error"] = f"not a usable image: {exc}"
            return state
        state.update(
            image=dec.rgb,
            gray=dec.gray,
            format=dec.format,
            has_alpha=dec.alpha is not None,
            exif=dec.keep.exif,
            icc=dec.keep.icc,
            quality=dec.keep.quality,
            subsampling=dec.keep.subsampling,
            alpha=dec.alpha if dec.alpha is not None else _NO_ALPHA,
            height=int(dec.rgb.shape[0]),
            width=int(dec.rgb.shape[1]),
        )
        if state["skip"]:
            _verify_existing(state, st, pixels=True)
        return state
    finally:
        state["seconds"] += time.perf_counter() - t0


def _verify_existing(state: dict[str, Any], st: _Stores, pixels: bool = False) -> bool:
    """Check the existing output of a skip state; True when it is complete (and, once the input
    is decoded, of the input's size). Otherwise the state is turned into work to redo (or
    ``fatal`` when the storage failed). ``pixels``: keep the decoded output, to score it.
    A plain RGB PNG is validated without decoding (every chunk's CRC, the whole zlib stream)."""
    key = st.out_key(state["key"])
    uri = st.out.uri(key)
    try:
        data = st.out.read_bytes(key)
        state["out_md5"] = md5_hex(data)
        if state["expected_md5"] and state["out_md5"] != state["expected_md5"]:
            state.update(
                skip=False,
                note="existing output changed since raydenoise wrote it (same size, other bytes "
                "than the report's MD5); redone",
            )
            return False
        size = None if pixels else check_plain_png(data, max_pixels=None)
        if size is None:
            existing = decode_rgb8(data, max_pixels=None)
            size = existing.shape[:2]
            if pixels:
                state["output"] = existing
    except ImageError as exc:
        state.update(skip=False, note=f"existing output was incomplete or damaged ({exc}); redone")
        return False
    except Exception as exc:
        if storage_wide(exc):
            state["fatal"] = f"{uri}: {object_error(exc)}"
        else:
            state.update(
                skip=False, note=f"existing output could not be read ({object_error(exc)}); redone"
            )
        return False
    if state["height"] and (state["height"], state["width"]) != tuple(size):
        (h, w), (ih, iw) = size, (state["height"], state["width"])
        state.update(
            skip=False,
            output=_EMPTY,
            note=f"existing output is {w}x{h}, the input {iw}x{ih}; redone",
        )
        return False
    state["height"], state["width"] = int(size[0]), int(size[1])
    return True


def denoise_states(denoiser: Denoiser, states: list[dict[str, Any]]) -> None:
    """Run the model on every state that needs it (in place). A failure on one image (NaN output,
    out of memory) becomes that image's error; the others go on."""
    from .noise_level import estimate_sigma

    todo = [s for s in states if not (s["error"] or s["fatal"] or s["skip"])]
    if not todo:
        return
    t0 = time.perf_counter()
    for s in todo:
        s["input_noise"] = estimate_sigma(s["image"])
    try:
        results = denoiser.run_many([s["image"] for s in todo], [s["input_noise"] for s in todo])
    except Exception:  # isolate the image that failed
        results = []
        for s in todo:
            try:
                results.extend(denoiser.run_many([s["image"]], [s["input_noise"]]))
            except Exception as exc:
                s["error"] = _model_error(exc)
                results.append(_EMPTY)
    for s, out in zip(todo, results):
        s["output"] = out
        if not s["error"]:
            s["output_noise"] = estimate_sigma(out)
            s["change"] = _rms_change(s["image"], out)
            s["sigma"] = denoiser.level_for(s["input_noise"]) if denoiser.conditioned else math.nan
    share = (time.perf_counter() - t0) / len(todo)
    for s in todo:
        s["seconds"] += share


def _rms_change(image: np.ndarray, out: np.ndarray) -> float:
    """RMS of output minus input on the 0-255 scale (16-bit images scaled down), a row at a time."""
    scale = 255.0 / np.iinfo(image.dtype).max
    total = 0.0
    for a, b in zip(image, out):
        d = (b.astype(np.float32) - a.astype(np.float32)) * scale
        total += float(np.dot(d.ravel(), d.ravel()))
    return math.sqrt(total / max(image.size, 1))


def _model_error(exc: BaseException) -> str:
    from .inference import NonFiniteOutput

    if isinstance(exc, NonFiniteOutput):
        return f"model failed: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "model failed: out of memory (try a smaller --tile or fewer --workers per machine)"
    return (
        f"model failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    )


def finish_one(state: dict[str, Any], st: _Stores) -> dict[str, Any]:
    """Encode and write one denoised image (atomically), score it against the reference, and
    return its report row."""
    t0 = time.perf_counter()
    key, out_key = state["key"], st.out_key(state["key"])
    row = rpt.blank_row(key, note=state["note"] or None, node=state["node"] or None)
    if not (state["error"] or state["fatal"]):
        row.update(
            {k: state[k] for k in rpt.NOISE}
        )  # NaN (not measured: a kept output) becomes null
        image, output = state["image"], state["output"]
        row["height"], row["width"] = state["height"], state["width"]
        data = b""
        if not state["skip"]:
            try:
                keep = Keep(
                    exif=state["exif"],
                    icc=state["icc"],
                    quality=state["quality"],
                    subsampling=state["subsampling"],
                )
                fmt = state["format"] if st.fmt == KEEP else PILLOW_FORMAT[st.fmt]
                data = encode_like(
                    output,
                    state["alpha"] if state["has_alpha"] else None,
                    state["gray"],
                    fmt,
                    keep,
                    st.quality,
                )
                row["note"] = _conversion_note(state, fmt, row["note"])
            except Exception as exc:
                state["error"] = f"cannot encode the output as {fmt}: {exc}"
            else:
                try:
                    st.out.write_bytes(out_key, data)
                    row.update(
                        output_bytes=len(data),
                        output_md5=md5_hex(data),
                        output_tag=st.out.written_tag(out_key, data),
                    )
                except Exception as exc:
                    uri = st.out.uri(out_key)
                    _storage_failure(state, exc, uri, f"cannot write {uri}")
        elif state["listed_bytes"] >= 0 and state["out_md5"]:  # verified: what the listing showed
            row.update(
                output_bytes=state["listed_bytes"],
                output_md5=state["out_md5"],
                output_tag=state["listed_tag"],
            )
        if st.ref is not None and not (state["error"] or state["fatal"]):
            # Score what was written (JPEG is lossy, grayscale is one channel).
            lossless16 = (
                output.dtype == np.uint16
            )  # 16-bit PNG/TIFF: what was written is ``output``
            written = output if state["skip"] or lossless16 else decode_rgb8(data, max_pixels=None)
            row.update(_score(written, image, st.ref, key))
    if state["fatal"]:
        row.update(
            status=NOT_DONE,
            height=None,
            width=None,
            note=f"not written: storage failed: {state['fatal']}",
            output_bytes=None,
            output_md5=None,
            output_tag=None,
        )
    else:
        row["error"] = row.get("error") or state["error"] or None
        row["status"] = "error" if row["error"] else "skipped" if state["skip"] else "ok"
        if not row[
            "error"
        ]:  # what made the output: a rerun keeps it only when all of this still holds
            row.update(
                input_bytes=state["input_bytes"], input_tag=state["input_tag"] or None, **st.stamp
            )
    row["seconds"] = state["seconds"] + time.perf_counter() - t0
    row["finished"] = time.time()
    return row


def _conversion_note(state: dict[str, Any], fmt: str, note: str | None) -> str | None:
    """What an output in another format (--format) could not keep of its input, added to the
    row's note: JPEG has no transparency; JPEG and WebP have 8 bits per channel."""
    lost = []
    if state["has_alpha"] and fmt == "JPEG":
        lost.append("the alpha channel was dropped (JPEG has none)")
    if state["output"].dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        lost.append(f"16-bit input written with 8 bits per channel ({fmt})")
    return "; ".join(x for x in (note, *lost) if x) or None


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


# ----------------------------------------------------------------------------- Ray stages


def read_decode(batch: dict[str, np.ndarray], **store_kwargs) -> dict[str, Any]:
    """Ray Data task (staged pipeline): keys -> decoded states."""
    st = _Stores(**store_kwargs)
    states, fatal = [], ""
    for w in st.work(batch):
        state = (
            _not_attempted(w["key"], w["skip"], fatal)
            if fatal
            else read_one(w["key"], w["skip"], st, w)
        )
        fatal = fatal or state["fatal"]
        states.append(state)
    return _pack(states)


@dataclass(frozen=True)
class ModelSpec:
    """How the workers run the model: built once on the driver, handed to every model actor."""

    uri: str  # builtin:NAME, a model folder or an .onnx file (resolved)
    endpoint: str | None
    engine: str  # "torch" or "onnxruntime" (engines.choose_engine)
    graph: bytes | None = None  # the ONNX graph for onnxruntime (engines.prepare_graph)
    tile: int | None = None
    strength: float = 1.0
    sigma: float | None = None
    tta: bool = False
    onnx_margin: int | None = None  # a foreign graph's receptive field and size multiple, if given
    onnx_multiple: int | None = None


def model_spec(cfg: DenoiseConfig, model_uri: str, endpoint: str | None) -> ModelSpec:
    """The job's ModelSpec: the engine chosen for the device, the model checked here (torch: its
    weights loaded; ONNX Runtime: the graph read and checked against its contract, or a
    raydenoise model exported and checked against its torch output) so a bad model fails
    before any actor starts."""
    from .artifacts import BUILTIN, load_model_uri
    from .engines import choose_engine, prepare_graph

    engine = choose_engine(cfg.engine, model_uri, cfg.num_gpus_per_worker > 0)
    if engine == "torch" and not model_uri.startswith(BUILTIN):  # a built-in's weights are tested
        load_model_uri(model_uri, endpoint)
    return ModelSpec(
        model_uri,
        endpoint,
        engine,
        prepare_graph(model_uri, endpoint, engine),
        cfg.tile,
        cfg.strength,
        cfg.sigma,
        cfg.tta,
        cfg.onnx_margin,
        cfg.onnx_multiple,
    )


class ModelActor:
    """Ray Data actor: loads the model once, denoises batches (grouped by shape, tiled when asked
    or when an image would not fit the actor's memory budget)."""

    def __init__(
        self, spec: ModelSpec, use_gpu: bool, cpu_share: float = 1.0, gpu_share: float = 0.0
    ):
        from .engines import make_engine
        from .inference import Denoiser, default_memory_budget

        device, budget = "cpu", default_memory_budget(cpu_share)
        if use_gpu:
            import torch

            if torch.cuda.is_available():
                device = "cuda"
                total = torch.cuda.get_device_properties(0).total_memory
                budget = int(min(8 << 30, 0.4 * total * max(min(gpu_share, 1.0), 0.1)))
        engine = make_engine(
            spec.uri,
            spec.endpoint,
            spec.engine,
            spec.graph,
            device,
            threads=max(1, round(cpu_share)),
            margin=spec.onnx_margin,
            multiple=spec.onnx_multiple,
        )
        self.denoiser = Denoiser(
            engine,
            tile=spec.tile,
            memory_budget=budget,
            strength=spec.strength,
            sigma=spec.sigma,
            tta=spec.tta,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        states = _unpack(batch)
        denoise_states(self.denoiser, states)
        node = _this_node()
        for s in states:
            if not (s["error"] or s["fatal"] or s["skip"]):
                s["node"] = node  # where it was denoised (read and written by CPU tasks)
        return _pack(states)


def write_score(batch: dict[str, np.ndarray], **store_kwargs):
    """Ray Data task (staged pipeline): states -> written outputs -> report rows."""
    st = _Stores(**store_kwargs)
    states = _unpack(batch)
    _short_circuit(states)
    return rpt.table([finish_one(s, st) for s in states])


class FusedActor(ModelActor):
    """CPU mode: one actor reads, denoises, writes and scores its images, one at a time.

    On CPUs every stage competes for the same cores, so running them as separate Ray Data
    operators buys no overlap but ships each image through the object store twice; N fused
    actors are N independent loops (see BENCHMARKS.md). GPU mode keeps the stages apart so CPU
    decoding and encoding overlap the GPU's work. One image at a time bounds an actor's memory
    to one image; large ones also wait for a per-machine slot (LargeImageGate).
    """

    def __init__(
        self,
        spec: ModelSpec,
        use_gpu: bool,
        store_kwargs: dict[str, Any],
        cpu_share: float = 1.0,
        gpu_share: float = 0.0,
    ):
        from .inference import LargeImageGate, image_bytes

        super().__init__(spec, use_gpu, cpu_share, gpu_share)
        self.st = _Stores(**store_kwargs)
        self.gate = LargeImageGate()
        self.image_bytes = image_bytes

    def __call__(self, batch: dict[str, np.ndarray]):
        rows, fatal = [], ""
        for w in self.st.work(batch):
            state = (
                _not_attempted(w["key"], w["skip"], fatal)
                if fatal
                else read_one(w["key"], w["skip"], self.st, w)
            )
            if not (state["error"] or state["fatal"] or state["skip"]):
                h, w = state["height"], state["width"]
                with self.gate.hold(self.image_bytes(h, w, self.denoiser.pass_bytes(h, w))):
                    denoise_states(self.denoiser, [state])
                    row = finish_one(state, self.st)
            else:
                row = finish_one(state, self.st)
            fatal = fatal or state["fatal"]
            rows.append(row)
        return rpt.table(rows)


def _score(written: np.ndarray, noisy: np.ndarray, ref_store: Store, key: str) -> dict[str, Any]:
    from .metrics import all_metrics

    try:
        ref = decode_rgb8(ref_store.read_bytes(key), max_pixels=None)
    except FileNotFoundError:
        return {"error": f"no reference at {ref_store.uri(key)}"}
    except ImageError as exc:
        return {"error": f"reference {ref_store.uri(key)} is not a usable image: {exc}"}
    except Exception as exc:
        return {"error": f"reference {ref_store.uri(key)} cannot be read: {object_error(exc)}"}
    if ref.shape != written.shape:
        return {
            "error": f"reference {ref_store.uri(key)} is {ref.shape[1]}x{ref.shape[0]}, "
            f"the image is {written.shape[1]}x{written.shape[0]}"
        }
    r = _unit(ref)
    m_out = all_metrics(_unit(written), r)
    m_in = all_metrics(_unit(noisy), r)
    return {**m_out, **{f"input_{k}": v for k, v in m_in.items()}}


def _unit(pixels: np.ndarray) -> np.ndarray:
    """Integer pixels (8 or 16 bits) as float32 in [0, 1]."""
    return pixels.astype(np.float32) / np.iinfo(pixels.dtype).max


PIPELINES = ("auto", "fused", "staged")


def plan_workers(cfg: DenoiseConfig, cluster: dict[str, float]) -> tuple[bool, int, float]:
    """(staged?, model actors, CPUs per actor); 0 actors: the cluster has nothing to run them on
    yet (a head that runs no work, as in cluster.yaml, before the autoscaler adds workers): the
    pool then starts at one and grows with the nodes.

    GPU actors: by default as many as the GPUs allow, each reserving a token 0.5 CPU.
    Fused CPU actors: by default one per CPU, each reserving 1 CPU (Ray then gives its torch one
    thread); more actors than CPUs share them. Staged CPU actors leave one CPU to the decode and
    encode tasks, which would otherwise wait forever.
    """
    staged = cfg.pipeline == "staged" or (cfg.pipeline == "auto" and cfg.num_gpus_per_worker > 0)
    if cfg.num_gpus_per_worker:
        if not cfg.workers and cluster.get("GPU", 0) == 0 and cluster.get("CPU", 0) == 0:
            return staged, 0, 0.5  # autoscaling from zero (a head that runs no work, no worker yet)
        return (
            staged,
            cfg.workers or max(1, int(cluster.get("GPU", 0) // cfg.num_gpus_per_worker)),
            0.5,
        )
    if (
        cluster.get("CPU", 0) == 0
    ):  # autoscaling from zero: a pool that grows as nodes join, or --workers
        return staged, cfg.workers or 0, 1.0
    cpus = cluster.get("CPU", 1.0)
    free = cpus - 1.0 if staged else cpus
    workers = cfg.workers or max(1, int(free))
    return staged, workers, max(0.25, min(1.0, math.floor(free / workers * 4) / 4))


def check_locations(inp: Store, out: Store, ref: Store | None, rep: Store) -> None:
    """Refuse overlapping locations, compared after resolving symlinks and '..': outputs must not
    land among the inputs or references (or be read back as inputs on a rerun), and the report
    must not be read back as input."""
    if inp.contains(out):
        raise DenoiseError(
            f"--output {out.root} is inside --input {inp.root}"
            f"{' (after resolving links)' if inp.identity() != inp.root else ''}: "
            "outputs would be read back as inputs, or overwrite them"
        )
    if out.contains(inp):
        raise DenoiseError(
            f"--input {inp.root} is inside --output {out.root}: outputs could overwrite inputs"
        )
    if ref is not None and (ref.contains(out) or out.contains(ref)):
        raise DenoiseError(
            f"--output {out.root} and --reference {ref.root} overlap: outputs could overwrite references"
        )
    if inp.contains(rep):
        raise DenoiseError(
            f"--report {rep.root} is inside --input {inp.root}: the report would be read as input"
        )


@dataclass
class _Planned:
    """What planning decided (the rows themselves are in the run's plan files)."""

    plan: runfiles.Plan
    to_do: int = 0  # inputs with no output
    existing: int = 0  # with an output to verify
    trusted: int = 0  # with an output an earlier report vouches for (not read again)
    redo: int = (
        0  # with an output of unknown or other origin (another model, a changed input): redone
    )
    refused: int = 0  # of those, made by another model or options, with --other-model refuse
    refused_example: tuple[str, str] | None = None  # (key, the model that made it)
    excluded: int = 0
    example: tuple[str, str] | None = None  # an excluded key and why


def _plan(
    cfg: DenoiseConfig, inp: Store, out: Store, rep: Store, run_dir: str, stamp: dict[str, str]
) -> _Planned:
    """Merge the input listing, the output listing and the earlier runs' report rows as sorted
    streams (raydenoise.plan) into the run's plan files: memory does not grow with the number of
    objects. An existing output is kept only when an earlier row says this input was made into it
    by this run's model and options (``stamp``, see made_by); without a reference, one whose size
    and tag also match that row is trusted without reading it, the others are verified by the
    workers (MD5, size). Outputs of unknown or other origin are redone (``--other-model refuse``:
    DenoiseError naming both models instead, before any work)."""
    partials: list[str] = []

    def outputs() -> Iterator[Entry]:
        for e in out.iter_entries():
            if is_partial(e.key):
                partials.append(e.key)  # a temporary file of an interrupted write: removed below
            else:
                yield e

    earlier = () if cfg.overwrite else runfiles.earlier_rows(rep, run_dir + "earlier-")
    planned = _Planned(runfiles.Plan(rep, run_dir))
    with (
        planned.plan as plan,
        _items(cfg, inp, None if cfg.overwrite else outputs(), earlier) as items,
    ):
        for item in items:
            if item.excluded:
                plan.row(rpt.blank_row(item.key, status=EXCLUDED, note=item.excluded))
                planned.excluded += 1
                planned.example = planned.example or (item.key, item.excluded)
                continue
            why = other_maker(item, stamp["made_by"]) if item.existing is not None else ""
            if not why and not cfg.reference and trusted(item, stamp["made_by"]):
                r = item.earlier or {}
                plan.row(
                    rpt.blank_row(
                        item.key,
                        status="skipped",
                        width=r["width"],
                        height=r["height"],
                        seconds=0.0,
                        output_bytes=r["output_bytes"],
                        output_md5=r.get("output_md5"),
                        output_tag=r["output_tag"],
                        input_bytes=item.size,
                        input_tag=item.tag or None,
                        **stamp,
                    )
                )
                planned.trusted += 1
            elif why:
                if why.startswith(OTHER_MODEL_WHY) and cfg.other_model == "refuse":
                    planned.refused += 1
                    planned.refused_example = planned.refused_example or (
                        item.key,
                        (item.earlier or {}).get("model") or "?",
                    )
                plan.work(item.key, None, input_tag=item.tag, note=f"{why}; redone")
                planned.redo += 1
            else:
                r = item.earlier or {}
                same_size = (
                    item.existing is not None and r.get("output_bytes") == item.existing.size
                )
                plan.work(
                    item.key,
                    item.existing,
                    r.get("output_md5") if same_size else None,
                    input_tag=item.tag,
                )
                if item.existing is None:
                    planned.to_do += 1
                else:
                    planned.existing += 1
    if partials and not out.is_s3:
        out.remove_partials(partials)
    return planned


@contextlib.contextmanager
def _items(
    cfg: DenoiseConfig, inp: Store, outputs: Iterable[Entry] | None, earlier: Iterable[dict]
) -> Iterator[Iterator[Item]]:
    """The inputs in key order (plan.select), each with its existing output (from the sorted
    output listing) and the earlier report's row. With --format renaming the outputs, the merge
    with the outputs sorts the inputs by output key in a local temporary folder (bounded memory)."""
    items = select(inp.iter_entries(), cfg.include_hidden)
    if cfg.format == KEEP:
        yield with_earlier(with_outputs(items, outputs), earlier)
        return
    with tempfile.TemporaryDirectory(prefix="raydenoise-plan-") as tmp:
        yield with_earlier(
            with_renamed_outputs(items, outputs, cfg.format, open_store(tmp)), earlier
        )


def run_denoise(
    cfg: DenoiseConfig, log: Callable[[str], None] = print, start_ray: StartRay | None = None
) -> dict[str, Any]:
    """Run the job; returns the summary (also written as summary.json).

    Arguments, locations and the model are checked before Ray starts (``start_ray``, default
    :func:`ensure_ray`), so a mistake is reported in about a second. Raises DenoiseError for
    user-facing failures of the whole job: bad arguments, model or locations (before any work),
    or a storage failure mid-run, after writing the report of what was done (a rerun resumes).
    Per-image failures are report rows, not exceptions.

    The driver's memory does not grow with the number of objects: the plan is written to the
    report folder while the listings are merged, the workers read their keys from it, report
    rows are written as parts while the job runs and the report is merged from them at the end
    (raydenoise.runfiles). A fully resumed job (every output vouched for) does not start Ray.
    """
    t_start = time.time()
    check_config(cfg)
    from .artifacts import ArtifactError, resolve_model_uri, takes_level
    from .engines import EngineError

    endpoint = endpoint_from_env(cfg.s3_endpoint)
    max_pixels = int(cfg.max_megapixels * 1e6) or None
    run_id = runfiles.new_run_id()
    run_dir = f"{runfiles.RUNS}/{run_id}/"
    created: list[
        str
    ] = []  # local folders this run made (removed again if it stops before writing anything)
    try:
        inp, out = open_store(cfg.input, endpoint), open_store(cfg.output, endpoint)
        rep = open_store(cfg.report or out.uri(REPORT_DIR), endpoint)
        ref = open_store(cfg.reference, endpoint) if cfg.reference else None
        check_locations(inp, out, ref, rep)
        if cfg.dry_run:
            spec = model_spec(cfg, resolve_model_uri(cfg.model, endpoint), endpoint)
            return dry_run(
                cfg, inp, out, rep, spec, max_pixels, log, t_start, made_by(cfg, spec)["made_by"]
            )
        next(
            inp.iter_entries(), None
        )  # a missing or unlistable input is reported before anything is written
        created += [s.path for s in (out, rep) if not s.is_s3 and not os.path.lexists(s.path)]
        out.check_writable()
        rep.check_writable()
        # resolved (actors may run elsewhere), loaded and checked before any actor starts
        spec = model_spec(cfg, resolve_model_uri(cfg.model, endpoint), endpoint)
        if cfg.sigma is not None and not takes_level(spec.uri, endpoint):
            raise DenoiseError(BLIND_SIGMA.format(model=cfg.model))
        stamp = made_by(cfg, spec)
    except (StorageError, ArtifactError, DenoiseError, EngineError) as exc:
        _remove_empty(created)
        raise DenoiseError(str(exc)) from None
    lock = RunLock(rep, run_id, out.root)
    try:
        lock.acquire()
    except (LockHeld, StorageError) as exc:
        _remove_empty(created)
        raise DenoiseError(str(exc)) from None
    try:
        try:
            planned = _plan(cfg, inp, out, rep, run_dir, stamp)
        except StorageError as exc:
            runfiles.remove_run(rep, run_dir)
            raise DenoiseError(str(exc)) from None
        plan = planned.plan
        inputs = planned.to_do + planned.existing + planned.trusted + planned.redo
        if not inputs or planned.refused:
            runfiles.remove_run(rep, run_dir)
        if planned.refused and planned.refused_example:
            key, other = planned.refused_example
            raise DenoiseError(
                f"{plural(planned.refused, 'output')} in {out.root} were made by another model or options "
                f"(e.g. {out.uri(key)}: {other}); this run uses {stamp['model']}"
                f"{'' if cfg.strength == 1 and cfg.sigma is None else ' with other options'}: nothing "
                "was written. Pass --other-model redo to replace them, or choose another --output"
            )
        if not inputs:
            ex = planned.example
            raise DenoiseError(
                f"{inp.root}: no files to denoise"
                + (f" ({planned.excluded} excluded: {ex[0]}: {ex[1]} ...)" if ex else "")
            )
        checked_s = time.time() - t_start
        log(
            f"denoise: {plural(inputs, 'input')} in {inp.root}; {planned.to_do:,} to do"
            + (
                f", {planned.redo:,} to redo (an output of another model or options, of a changed input, or that no "
                "earlier report vouches for)"
                if planned.redo
                else ""
            )
            + (
                f", {planned.existing:,} with an output already (verified, skipped if complete"
                f"{', scored again' if ref else ''})"
                if planned.existing
                else ""
            )
            + (
                f", {planned.trusted:,} with an output the earlier report vouches for (same size and tag; kept, not read)"
                if planned.trusted
                else ""
            )
        )
        if planned.excluded and planned.example:
            log(
                f"denoise: {plural(planned.excluded, 'file')} excluded (listed in the report): {planned.example[0]}: "
                f"{planned.example[1]}" + (" ..." if planned.excluded > 1 else "")
            )
        parts = runfiles.Parts(rep, run_dir)
        stopped, interrupted, first, t0, ray_s = None, False, None, time.time(), 0.0
        if plan.n_work:
            ray_s = (start_ray or ensure_ray)() or 0.0
            stopped, interrupted, first, t0 = _run_work(
                cfg, plan, parts, inp, out, ref, rep, spec, max_pixels, log, stamp
            )
        seconds = time.time() - t0
        try:
            parts.flush()
            runfiles.assemble(
                rep,
                plan,
                parts,
                f"not processed: job stopped ({stopped})"
                if stopped
                else "not processed: no result came back from the cluster; rerun to do it",
            )
            summary = runfiles.summarize(rep, seconds)
            summary.update(stopped=stopped, run=run_id, trusted=planned.trusted, engine=spec.engine)
            if first and seconds > first[0] and not stopped:
                # Throughput once the actors are up (start-up = actor processes, imports, model load).
                summary["startup_s"] = round(first[0], 3)
                summary["steady_images_per_s"] = (plan.n_work - first[1]) / (seconds - first[0])
            # Where the time to the first result goes: checks (arguments, listing, plan, model), joining
            # Ray, and the pipeline's start (actors, imports, model load) to the first finished image.
            summary["phases"] = {
                "check_s": round(checked_s, 3),
                "ray_init_s": round(ray_s, 3),
                "first_result_s": round(t0 - t_start + first[0], 3) if first else None,
            }
            summary["report"] = rep.root
            _write_report(summary, cfg, inp, out, ref, rep)
        except Exception as exc:
            raise DenoiseError(
                f"{'stopped: ' + stopped + '; ' if stopped else ''}the report could not be written to "
                f"{rep.root} ({object_error(exc)}); the outputs written are complete and the report "
                f"parts written so far are in {rep.uri(run_dir)}; rerun to resume"
            ) from None
        runfiles.remove_runs(rep, run_id)
        done = summary["ok"]
        if interrupted:
            log(
                f"denoise: interrupted; {done} written; report of what was done in {rep.root}; rerun to resume"
            )
            raise KeyboardInterrupt
        if stopped:
            raise DenoiseError(
                f"stopped: {stopped}. {done} images written, {summary['not_done']} not done; "
                f"report in {rep.root}; rerun the same command to resume"
            )
        log(
            f"denoise: {summary['ok']:,} written, {summary['skipped']:,} skipped, {summary['failures']:,} failed"
            f"{f', {planned.excluded:,} excluded' if planned.excluded else ''} in {seconds:.1f} s"
            f"{f' ({rate(plan.n_work, seconds)})' if plan.n_work else ''} -> {out.root}; report in {rep.root}"
        )
        return summary
    finally:
        lock.release()
        _remove_empty(created)


def _remove_empty(folders: list[str]) -> None:
    """Remove the local folders this run created when they are still empty (a run that stopped
    before writing anything leaves no empty output or report folder behind)."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _run_work(cfg, plan, parts, inp, out, ref, rep, spec: ModelSpec, max_pixels, log, stamp):
    """The Ray part of a run: the plan's work through the model actors, report rows into parts."""
    import ray

    from .artifacts import BUILTIN

    not_shared = check_shared_paths(
        reads={
            "--input": inp.root,
            "--reference": ref.root if ref else None,
            "--model": None if spec.uri.startswith(BUILTIN) else spec.uri,
        },
        writes={"--output": out.root, "--report": rep.root},
    )
    if not_shared:
        runfiles.remove_run(rep, plan.dir)
        raise DenoiseError(not_shared)
    cluster = ray.cluster_resources()
    staged, workers, cpus = plan_workers(cfg, cluster)
    autoscale = workers == 0  # nothing to run on yet: the pool grows as the autoscaler adds nodes
    if autoscale:
        log(
            f"denoise: the cluster has no {'GPUs' if cfg.num_gpus_per_worker else 'CPUs'} for work yet (its head "
            "runs none): waiting for the autoscaler to add worker nodes; the model actors grow with them"
        )
    elif cfg.num_gpus_per_worker and cluster.get("GPU", 0) < cfg.num_gpus_per_worker * workers:
        runfiles.remove_run(rep, plan.dir)
        raise DenoiseError(
            f"{workers} workers x {cfg.num_gpus_per_worker:g} GPUs: the cluster has "
            f"{cluster.get('GPU', 0):g}"
        )
    log(
        f"denoise: {'model actors as nodes come' if autoscale else plural(workers, 'model actor')} "
        f"({'GPU, ' if cfg.num_gpus_per_worker else ''}{cpus:g} CPU each, {'staged' if staged else 'fused'})"
    )
    store_kwargs = {
        "input_uri": inp.root,
        "output_uri": out.root,
        "reference_uri": ref.root if ref else None,
        "endpoint": spec.endpoint,
        "max_pixels": max_pixels,
        "report_uri": rep.root,
        "run_dir": plan.dir,
        "stamp": stamp,
        "quality": cfg.quality,
        "fmt": cfg.format,
    }
    actor_kwargs = {
        "spec": spec,
        "use_gpu": cfg.num_gpus_per_worker > 0,
        "cpu_share": cpus,
        "gpu_share": cfg.num_gpus_per_worker,
    }
    # The dataset is slices of the plan (positions, not keys): whoever reads an image reads its key.
    n_slices, size = runfiles.slicing(plan.n_work)
    ds: Any = ray.data.from_items(
        [{"start": i * size, "stop": min(plan.n_work, (i + 1) * size)} for i in range(n_slices)],
        override_num_blocks=n_slices,
    )
    pool = (
        ray.data.ActorPoolStrategy(min_size=1, max_size=None)
        if autoscale
        else ray.data.ActorPoolStrategy(size=workers)
    )
    if staged:
        ds = ds.map_batches(read_decode, batch_size=1, num_cpus=0.5, fn_kwargs=store_kwargs)
        ds = ds.map_batches(
            ModelActor,
            batch_size=cfg.batch_size,
            num_gpus=cfg.num_gpus_per_worker or None,
            num_cpus=cpus,
            compute=pool,
            fn_constructor_kwargs=actor_kwargs,
        )
        ds = ds.map_batches(
            write_score, batch_size=cfg.batch_size, num_cpus=0.5, fn_kwargs=store_kwargs
        )
    else:
        ds = ds.map_batches(
            FusedActor,
            batch_size=max(1, cfg.batch_size // size),
            num_cpus=cpus,
            compute=pool,
            fn_constructor_kwargs={**actor_kwargs, "store_kwargs": store_kwargs},
        )
    return _collect(ds, plan.n_work, parts, inp)


def _collect(ds, total: int, parts: runfiles.Parts, inp: Store):
    """Stream report rows from the dataset into report parts, showing progress and errors. Stops
    at the first storage failure (a ``not-done`` row from a worker), at Ctrl-C, or when Ray
    itself fails; returns (stop reason or None, interrupted?, (seconds, rows) to the first
    result, t0). Holds no rows beyond the part being filled."""
    import pyarrow.compute as pc

    stopped, interrupted, first = None, False, None
    t0 = time.time()
    with Progress("denoise", total) as progress:
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                first = first or (time.time() - t0, block.num_rows)
                parts.add(block)
                status = block.column("status")
                for i in pc.indices_nonzero(
                    pc.fill_null(pc.equal(status, "error"), False)
                ).to_pylist():
                    console().error(
                        f"denoise: {inp.uri(block['key'][i].as_py())}: {block['error'][i].as_py()}"
                    )
                if not stopped:
                    for i in pc.indices_nonzero(
                        pc.fill_null(pc.equal(status, NOT_DONE), False)
                    ).to_pylist()[:1]:
                        stopped = (block["note"][i].as_py() or "storage failed").removeprefix(
                            "not written: "
                        )
                progress.update(block.num_rows)
                if stopped:
                    break
        except KeyboardInterrupt:
            stopped, interrupted = "interrupted", True
        except Exception as exc:
            stopped = f"the job failed: {last_error_line(exc)}"
    return stopped, interrupted, first, t0


def _write_report(summary, cfg, inp: Store, out: Store, ref: Store | None, rep: Store) -> None:
    """summary.json and report.html (report.parquet and report.csv are written by runfiles.assemble)."""
    from . import report_page
    from .parts import iter_batches

    config = {k: v for k, v in asdict(cfg).items()}
    rep.write_bytes("summary.json", rpt.to_json({**summary, "config": config}))
    comparisons = []
    counters: dict[str, int] = {}
    for label, r in runfiles.examples(rep, n=2):
        counters[label] = counters.get(label, 0) + 1
        images = {}
        for name, store in (("input", inp), ("output", out), ("reference", ref)):
            key = output_key(r["key"], cfg.format) if name == "output" else r["key"]
            try:
                images[name] = (
                    decode_rgb8(store.read_bytes(key), max_pixels=None) if store else None
                )
            except Exception:
                images[name] = None
        comparisons.append(report_page.compare(r["key"], f"{label} {counters[label]}", r, images))
    page_folder = None if rep.is_s3 else rep.root

    def links(key: str) -> tuple[str, str] | None:
        if page_folder is None or inp.is_s3 or out.is_s3:
            return None
        pair = (
            report_page.relative_link(page_folder, inp.key_path(key)),
            report_page.relative_link(page_folder, out.key_path(output_key(key, cfg.format))),
        )
        return pair if all(pair) else None  # type: ignore[return-value]

    facts = {
        "model": cfg.model,
        "engine": summary.get("engine") or cfg.engine,
        "strength": cfg.sigma if cfg.sigma is not None else cfg.strength,
        "strength given as": "a fixed noise level (--sigma)"
        if cfg.sigma is not None
        else "x the estimated level",
        "self-ensemble (--tta)": "yes" if cfg.tta else "no",
        "tile": cfg.tile or "automatic",
        "input": inp.root,
        "output": out.root,
        "reference": ref.root if ref else "none",
        "nodes": len(summary.get("nodes") or {}),
        "run": summary.get("run"),
    }
    page = report_page.denoise_page(
        title=f"raydenoise report: {inp.root}",
        summary=summary,
        facts=facts,
        batches=lambda columns: iter_batches(rep, "report.parquet", columns),
        comparisons=comparisons,
        links=links,
        where={"input": inp.root, "output": out.root},
    )
    rep.write_bytes("report.html", page.encode())


# ----------------------------------------------------------------------------- --dry-run

SAMPLE = 3  # inputs denoised on the driver to estimate the time


def dry_run(
    cfg: DenoiseConfig,
    inp: Store,
    out: Store,
    rep: Store,
    spec: ModelSpec,
    max_pixels: int | None,
    log: Callable[[str], None],
    t_start: float,
    fingerprint: str,
) -> dict[str, Any]:
    """List and plan only, without Ray and without writing anything: how many inputs would be
    done, found done already (their outputs are verified and kept), or left out (by reason), and
    an estimate of the model time from a few inputs denoised here. The listings are merged as
    two sorted streams (raydenoise.plan): memory does not grow with the number of objects."""
    from collections import Counter

    outputs = None if cfg.overwrite or not _exists(out) else out.iter_entries()
    earlier = () if outputs is None or not _exists(rep) else runfiles.earlier_rows(rep, None)
    counts: Counter = Counter()
    excluded: Counter = Counter()
    examples: dict[str, str] = {}
    todo_bytes, sample = 0, []  # type: tuple[int, list[str]]
    try:
        with _items(cfg, inp, outputs, earlier) as items:
            for item in items:
                counts["inputs"] += 1
                if item.excluded:
                    excluded[item.excluded] += 1
                    examples.setdefault(item.excluded, item.key)
                elif item.existing is not None and other_maker(item, fingerprint):
                    counts["redo"] += 1
                    todo_bytes += item.size
                elif not cfg.reference and trusted(item, fingerprint):
                    counts["trusted"] += 1
                elif item.existing is not None:
                    counts["existing"] += 1
                else:
                    counts["to_do"] += 1
                    todo_bytes += item.size
                    if len(sample) < SAMPLE:
                        sample.append(item.key)
    except StorageError as exc:
        raise DenoiseError(str(exc)) from None
    plan_s = time.time() - t_start
    estimate = _estimate(sample, inp, spec, max_pixels, todo_bytes)
    summary = {
        "dry_run": True,
        "inputs": counts["inputs"],
        "to_do": counts["to_do"],
        "redo": counts["redo"],
        "existing": counts["existing"],
        "trusted": counts["trusted"],
        "excluded": dict(excluded),
        "excluded_examples": examples,
        "to_do_bytes": todo_bytes,
        "plan_s": round(plan_s, 3),
        "estimate": estimate,
    }
    log(
        f"denoise --dry-run: {plural(counts['inputs'], 'input')} in {inp.root}: {counts['to_do']:,} to do, "
        + (
            f"{counts['redo']:,} to redo (an output of another model or options, of a changed input, or that no "
            "earlier report vouches for), "
            if counts["redo"]
            else ""
        )
        + f"{counts['existing']:,} with an output in {out.root} already (verified, skipped if complete), "
        + (
            f"{counts['trusted']:,} with an output the earlier report vouches for (kept, not read), "
            if counts["trusted"]
            else ""
        )
        + f"{sum(excluded.values()):,} excluded"
        + (
            " ("
            + "; ".join(
                f"{n:,} {why.split(';')[0]}, e.g. {examples[why]}" for why, n in excluded.items()
            )
            + ")"
            if excluded
            else ""
        )
    )
    if estimate.get("cpu_seconds") is not None:
        log(
            f"denoise --dry-run: estimate: {duration(estimate['cpu_seconds'])} of model time on one CPU "
            f"({estimate['sampled']} sampled, {estimate['seconds_per_megapixel']:.2f} s/megapixel, "
            f"{estimate['megapixels_per_mb']:.2f} megapixels per MB of input; rough): about "
            f"{duration(estimate['cpu_seconds'] / max(1, os.cpu_count() or 1))} on this machine's {os.cpu_count()} CPUs, "
            "divided by the CPUs of the cluster that runs it"
        )
    elif estimate.get("note"):
        log(f"denoise --dry-run: no estimate: {estimate['note']}")
    log(f"denoise --dry-run: listed and planned in {plan_s:.1f} s; nothing was written")
    return summary


def _exists(store: Store) -> bool:
    try:
        return bool(store.fs.exists(store.path))
    except Exception as exc:
        raise DenoiseError(f"{store.root}: cannot list ({object_error(exc)})") from None


def _estimate(
    sample: list[str], inp: Store, spec: ModelSpec, max_pixels: int | None, todo_bytes: int
) -> dict[str, Any]:
    """Seconds of model time on one CPU for the work, from the sample: seconds per megapixel x
    megapixels (estimated from the inputs' bytes, at the sample's megapixels per byte)."""
    if not sample:
        return {"note": "nothing to do"}
    from .engines import make_engine
    from .inference import Denoiser, one_thread

    engine = make_engine(
        spec.uri,
        spec.endpoint,
        spec.engine,
        spec.graph,
        threads=1,
        margin=spec.onnx_margin,
        multiple=spec.onnx_multiple,
    )
    denoiser = Denoiser(
        engine, tile=spec.tile, strength=spec.strength, sigma=spec.sigma, tta=spec.tta
    )
    seconds = pixels = size = used = 0
    with one_thread() if spec.engine == "torch" else contextlib.nullcontext():
        for key in sample:
            seconds, pixels, size, used = _time_one(
                key, inp, denoiser, max_pixels, (seconds, pixels, size, used)
            )
    if not used or not pixels:
        return {"note": "none of the sampled inputs could be decoded"}
    s_per_mp, mp_per_mb = seconds / (pixels / 1e6), (pixels / 1e6) / (size / 1e6)
    return {
        "sampled": used,
        "seconds_per_megapixel": s_per_mp,
        "megapixels_per_mb": mp_per_mb,
        "cpu_seconds": s_per_mp * mp_per_mb * todo_bytes / 1e6,
        "engine": spec.engine,
    }


def _time_one(key: str, inp: Store, denoiser, max_pixels: int | None, acc: tuple) -> tuple:
    """``acc`` (seconds, pixels, bytes, images) plus one sampled input; an input that cannot be
    read or decoded (it would fail in the job) is no measure and leaves ``acc`` as it was."""
    seconds, pixels, size, used = acc
    try:
        data = inp.read_bytes(key)
        image = decode_for_denoise(data, max_pixels).rgb
    except Exception:
        return acc
    t0 = time.perf_counter()
    denoiser(image)
    return (
        seconds + time.perf_counter() - t0,
        pixels + image.shape[0] * image.shape[1],
        size + len(data),
        used + 1,
    )
