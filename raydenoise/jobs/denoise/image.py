"""What happens to one image: read and verify (read_one), denoise (denoise_states), encode, write
and score (finish_one).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ...imaging.encode import check_plain_png, encode_like
from ...imaging.images import ImageError, decode_for_denoise, decode_rgb8, stored_size
from ...imaging.metadata import Keep
from ...ledger import report as rpt
from ...ledger.plan import (
    KEEP,
    PILLOW_FORMAT,
)
from ...ledger.report import NOT_DONE
from ...storage.errors import object_error, storage_wide
from ...storage.store import Store, md5_hex
from .state import _EMPTY, _NO_ALPHA, ImageState, _new_state, _storage_failure, _Stores

if TYPE_CHECKING:
    from ...models.inference import Denoiser


def read_one(key: str, skip: bool, st: _Stores, work: dict[str, Any] | None = None) -> ImageState:
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
        state.input_bytes = len(data)
        if skip and st.ref is None:
            # The input's size from its header (no decode), so an output of another size is redone.
            state.height, state.width = stored_size(data) or (0, 0)
            if _verify_existing(state, st) or state.fatal:
                return state  # complete output of the input's size, nothing to score: no decode
        try:
            dec = decode_for_denoise(data, st.max_pixels)
        except ImageError as exc:
            state.error = f"not a usable image: {exc}"
            return state
        state.image, state.gray, state.format = dec.rgb, dec.gray, dec.format
        state.has_alpha = dec.alpha is not None
        state.alpha = dec.alpha if dec.alpha is not None else _NO_ALPHA
        state.exif, state.icc = dec.keep.exif, dec.keep.icc
        state.quality, state.subsampling = dec.keep.quality, dec.keep.subsampling
        state.height, state.width = int(dec.rgb.shape[0]), int(dec.rgb.shape[1])
        if state.skip:
            _verify_existing(state, st, pixels=True)
        return state
    finally:
        state.seconds += time.perf_counter() - t0


def _verify_existing(state: ImageState, st: _Stores, pixels: bool = False) -> bool:
    """Check the existing output of a skip state; True when it is complete (and, once the input
    is decoded, of the input's size). Otherwise the state is turned into work to redo (or
    ``fatal`` when the storage failed). ``pixels``: keep the decoded output, to score it.
    A plain RGB PNG is validated without decoding (every chunk's CRC, the whole zlib stream)."""
    key = st.out_key(state.key)
    uri = st.out.uri(key)
    try:
        data = st.out.read_bytes(key)
        state.out_md5 = md5_hex(data)
        if state.expected_md5 and state.out_md5 != state.expected_md5:
            _redo(
                state,
                "existing output changed since raydenoise wrote it (same size, other bytes than "
                "the report's MD5); redone",
            )
            return False
        size = None if pixels else check_plain_png(data, max_pixels=None)
        if size is None:
            existing = decode_rgb8(data, max_pixels=None)
            size = existing.shape[:2]
            if pixels:
                state.output = existing
    except ImageError as exc:
        _redo(state, f"existing output was incomplete or damaged ({exc}); redone")
        return False
    except Exception as exc:
        if storage_wide(exc):
            state.fatal = f"{uri}: {object_error(exc)}"
        else:
            _redo(state, f"existing output could not be read ({object_error(exc)}); redone")
        return False
    if state.height and (state.height, state.width) != tuple(size):
        (h, w), (ih, iw) = size, (state.height, state.width)
        state.output = _EMPTY
        _redo(state, f"existing output is {w}x{h}, the input {iw}x{ih}; redone")
        return False
    state.height, state.width = int(size[0]), int(size[1])
    return True


def _redo(state: ImageState, note: str) -> None:
    """The existing output is not kept: the image is work again, and the report says why."""
    state.skip, state.note = False, note


def denoise_states(denoiser: Denoiser, states: list[ImageState]) -> None:
    """Run the model on every state that needs it (in place). A failure on one image (NaN output,
    out of memory) becomes that image's error; the others go on."""
    from ...imaging.noise_level import REPORT_PATCHES, estimate_sigma

    todo = [s for s in states if s.needs_model()]
    if not todo:
        return
    t0 = time.perf_counter()
    for s in todo:
        s.input_noise = estimate_sigma(s.image)
    try:
        results = denoiser.run_many([s.image for s in todo], [s.input_noise for s in todo])
    except Exception:  # isolate the image that failed
        results = []
        for s in todo:
            try:
                results.extend(denoiser.run_many([s.image], [s.input_noise]))
            except Exception as exc:
                s.error = _model_error(exc)
                results.append(_EMPTY)
    for s, out in zip(todo, results):
        s.output = out
        if not s.error:
            s.output_noise = estimate_sigma(out, REPORT_PATCHES)
            s.change = _rms_change(s.image, out)
            s.sigma = denoiser.level_for(s.input_noise) if denoiser.conditioned else math.nan
    share = (time.perf_counter() - t0) / len(todo)
    for s in todo:
        s.seconds += share


def _rms_change(image: np.ndarray, out: np.ndarray) -> float:
    """RMS of output minus input on the 0-255 scale (16-bit images scaled down), a row at a time."""
    scale = 255.0 / np.iinfo(image.dtype).max
    total = 0.0
    for a, b in zip(image, out):
        d = (b.astype(np.float32) - a.astype(np.float32)) * scale
        total += float(np.dot(d.ravel(), d.ravel()))
    return math.sqrt(total / max(image.size, 1))


def _model_error(exc: BaseException) -> str:
    from ...models.inference import NonFiniteOutput

    if isinstance(exc, NonFiniteOutput):
        return f"model failed: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "model failed: out of memory (try a smaller --tile or fewer --workers per machine)"
    return (
        f"model failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    )


def finish_one(state: ImageState, st: _Stores) -> dict[str, Any]:
    """Encode and write one denoised image (atomically), score it against the reference, and
    return its report row."""
    t0 = time.perf_counter()
    key, out_key = state.key, st.out_key(state.key)
    row = rpt.blank_row(key, note=state.note or None, node=state.node or None)
    if not state.failed():
        # NaN (not measured: a kept output) becomes null
        row.update({k: getattr(state, k) for k in rpt.NOISE})
        image, output = state.image, state.output
        row["height"], row["width"] = state.height, state.width
        data = b""
        if not state.skip:
            try:
                keep = Keep(
                    exif=state.exif,
                    icc=state.icc,
                    quality=state.quality,
                    subsampling=state.subsampling,
                )
                fmt = state.format if st.fmt == KEEP else PILLOW_FORMAT[st.fmt]
                data = encode_like(
                    output,
                    state.alpha if state.has_alpha else None,
                    state.gray,
                    fmt,
                    keep,
                    st.quality,
                )
                row["note"] = _conversion_note(state, fmt, row["note"])
            except Exception as exc:
                state.error = f"cannot encode the output as {fmt}: {exc}"
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
        elif state.listed_bytes >= 0 and state.out_md5:  # verified: what the listing showed
            row.update(
                output_bytes=state.listed_bytes,
                output_md5=state.out_md5,
                output_tag=state.listed_tag,
            )
        if st.ref is not None and not state.failed():
            # Score what was written (JPEG is lossy, grayscale is one channel).
            lossless16 = (
                output.dtype == np.uint16
            )  # 16-bit PNG/TIFF: what was written is ``output``
            written = output if state.skip or lossless16 else decode_rgb8(data, max_pixels=None)
            row.update(_score(written, image, st.ref, key))
    if state.fatal:
        row.update(
            status=NOT_DONE,
            height=None,
            width=None,
            note=f"not written: storage failed: {state.fatal}",
            output_bytes=None,
            output_md5=None,
            output_tag=None,
        )
    else:
        row["error"] = row.get("error") or state.error or None
        row["status"] = "error" if row["error"] else "skipped" if state.skip else "ok"
        if not row[
            "error"
        ]:  # what made the output: a rerun keeps it only when all of this still holds
            row.update(input_bytes=state.input_bytes, input_tag=state.input_tag or None, **st.stamp)
    row["seconds"] = state.seconds + time.perf_counter() - t0
    row["finished"] = time.time()
    return row


def _conversion_note(state: ImageState, fmt: str, note: str | None) -> str | None:
    """What an output in another format (--format) could not keep of its input, added to the
    row's note: JPEG has no transparency; JPEG and WebP have 8 bits per channel."""
    lost = []
    if state.has_alpha and fmt == "JPEG":
        lost.append("the alpha channel was dropped (JPEG has none)")
    if state.output.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        lost.append(f"16-bit input written with 8 bits per channel ({fmt})")
    return "; ".join(x for x in (note, *lost) if x) or None


def _score(written: np.ndarray, noisy: np.ndarray, ref_store: Store, key: str) -> dict[str, Any]:
    from ...imaging.metrics import all_metrics

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
