"""Encoding outputs: each in its input's format (encode_like: quality, subsampling, EXIF, ICC, alpha, 16 bits kept), PNG for data sets, and a PNG checked without decoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from .images import (
    DEFAULT_MAX_PIXELS,
    PNG_COMPRESS_LEVEL,
    ImageError,
    _has_rotation,
    _is_plain_rgb8_png,
    decode_for_ingest,
)
from .metadata import JPEG_QUALITY, Keep
from .png import metadata_chunks, write_png8


def encode_like(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    gray: bool,
    fmt: str,
    keep: Keep | None = None,
    quality: int | None = None,
) -> bytes:
    """Encode a denoised uint8 (H, W, 3) image in its input's format: one channel if the input
    was grayscale, the input's alpha channel re-attached unchanged, its EXIF (orientation 1) and
    ICC profile carried (``keep``). A lossy input stays lossy: JPEG at the input's estimated
    quality and chroma subsampling, lossy WebP at WEBP_QUALITY; ``quality`` (1-100) overrides
    both. PNG is lossless (png.write_png8), lossless WebP stays lossless; other formats Pillow can
    write keep their format, the rest become PNG bytes."""
    keep = keep or Keep()
    fmt = (fmt or "PNG").upper()
    if rgb.dtype == np.uint16:
        if fmt in ("PNG", "TIFF"):
            return _encode16(rgb, alpha, gray, fmt, keep)
        # A format of 8 bits per channel (an output format chosen with --format): rounded down.
        rgb = _to8(rgb)
        alpha = None if alpha is None else _to8(alpha)
    if fmt == "PNG":  # raydenoise's own writer: 5-8x Pillow's speed, files no larger (png.py)
        planes = [np.asarray(Image.fromarray(rgb).convert("L")) if gray else rgb]
        if alpha is not None:
            planes.append(alpha)
        pixels = planes[0] if len(planes) == 1 else np.dstack(planes)
        return write_png8(pixels, icc=keep.icc, exif=keep.exif)
    im = Image.fromarray(rgb)
    if gray:
        im = im.convert("L")
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha))  # L -> LA, RGB -> RGBA
    meta = {k: v for k, v in (("exif", keep.exif), ("icc_profile", keep.icc)) if v}
    if fmt in ("JPEG", "MPO"):
        # A JPEG input's own chroma subsampling; another input made JPEG (--format jpeg): 4:2:0.
        sub = keep.subsampling if keep.subsampling in (0, 1, 2) else 2
        sub = 0 if gray else sub
        return _save(
            im.convert("L" if gray else "RGB"),
            "JPEG",
            meta,
            quality=quality or keep.quality or JPEG_QUALITY,
            subsampling=sub,
        )
    if fmt == "WEBP":
        im = im.convert("RGBA" if alpha is not None else "RGB")
        if quality or keep.quality:
            return _save(im, "WEBP", meta, quality=quality or keep.quality)
        return _save(im, "WEBP", meta, lossless=True)
    try:
        return _save(im, fmt, meta)
    except (KeyError, OSError, ValueError):
        return _save(im, "PNG", meta)


def _to8(pixels: np.ndarray) -> np.ndarray:
    """16-bit pixels to 8 bits, rounded (65535 -> 255)."""
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _encode16(rgb: np.ndarray, alpha: np.ndarray | None, gray: bool, fmt: str, keep: Keep) -> bytes:
    """16-bit PNG (OpenCV's encoder, then the ICC profile and EXIF spliced in as iCCP/eXIf
    chunks) or TIFF (tifffile, with the ICC profile), grayscale as one channel, alpha kept."""
    planes = [rgb.mean(axis=2).round().astype(np.uint16) if gray else rgb]
    if alpha is not None:
        planes.append(alpha.astype(np.uint16))
    arr = planes[0] if len(planes) == 1 else np.dstack(planes)
    if fmt == "TIFF":
        import tifffile

        buf = io.BytesIO()
        photometric = "minisblack" if gray else "rgb"
        tifffile.imwrite(
            buf,
            arr,
            photometric=photometric,
            compression="zlib",
            extrasamples=("unassalpha",) if alpha is not None else None,
            iccprofile=keep.icc or None,
        )
        return buf.getvalue()
    import cv2

    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # RGB(A) -> OpenCV's BGR(A)
    ok, png = cv2.imencode(
        ".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL]
    )
    if not ok:
        raise ImageError("the 16-bit PNG encoder failed")
    return _png_with(png.tobytes(), keep)


def _png_with(png: bytes, keep: Keep) -> bytes:
    """PNG bytes with an iCCP chunk (the ICC profile) and an eXIf chunk (EXIF) after IHDR."""

    end_ihdr = 8 + 8 + 13 + 4
    return png[:end_ihdr] + metadata_chunks(keep.icc, keep.exif) + png[end_ihdr:]


def _save(im: Image.Image, fmt: str, meta: dict[str, bytes], **options) -> bytes:
    """Pillow's bytes of ``im`` with ``meta`` (EXIF, ICC); a format that cannot hold one of them
    is written without it rather than not at all."""
    for extra in (meta, {k: v for k, v in meta.items() if k == "icc_profile"}, {}):
        buf = io.BytesIO()
        try:
            im.save(buf, format=fmt, **options, **extra)
            return buf.getvalue()
        except (TypeError, ValueError, OSError, KeyError):
            if not extra:
                raise
    raise AssertionError("unreachable")


def _png_has_rotation(data: bytes) -> bool:
    """True if a PNG carries an eXIf chunk whose orientation is not 1 (rare; then we decode)."""
    if b"eXIf" not in data:
        return False
    try:
        return _has_rotation(Image.open(io.BytesIO(data)))
    except Exception:
        return True


def encode_png(arr: np.ndarray) -> bytes:
    """Lossless PNG bytes of an ``uint8`` (H, W, 3) or (H, W) array."""
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {arr.dtype}")
    return write_png8(arr)


def check_plain_png(
    data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int] | None:
    """Fully validate a non-interlaced 8-bit RGB PNG without decoding its pixels.

    Checks what a decoder can fail on: every chunk's CRC, the IHDR fields, the complete zlib
    stream of the IDAT chunks, the exact inflated size and every row's filter type. Returns
    (height, width) when the file is such a PNG and valid; None when it is another kind of image
    (the caller then decodes it fully); raises ImageError when it is a broken PNG. About twice as
    fast as decoding, and the stored pixels are the file's own, so nothing is lost.
    """
    if not _is_plain_rgb8_png(data):
        return None
    width, height, _, _, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if interlace != 0 or compression != 0 or filtering != 0:
        return None
    if width == 0 or height == 0:
        raise ImageError("image has zero width or height")
    if max_pixels and width * height > max_pixels:
        raise ImageError(f"too many pixels ({width}x{height})")
    inflater = zlib.decompressobj()
    stride = width * 3 + 1
    expected = stride * height
    raw = bytearray()
    pos, end_seen, size = 8, False, len(data)
    while pos + 12 <= size:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        if pos + 12 + length > size:
            break
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(tag + body) & 0xFFFFFFFF != crc:
            raise ImageError(f"corrupt or truncated image data (PNG chunk {tag!r} fails its CRC)")
        if tag == b"IDAT":
            try:
                raw += inflater.decompress(body, expected + 1 - len(raw))
            except zlib.error as exc:
                raise ImageError(
                    f"corrupt or truncated image data (PNG pixel stream: {exc})"
                ) from None
        elif tag == b"acTL":
            return None  # an animated PNG: the full decoder sees (and refuses) its frames
        elif tag == b"IEND":
            end_seen = True
            break
        pos += 12 + length
    if not end_seen:
        raise ImageError("corrupt or truncated image data (PNG ends before its IEND chunk)")
    if not inflater.eof or len(raw) != expected:
        raise ImageError(
            f"corrupt or truncated image data (PNG pixel stream has {len(raw)} bytes, expected {expected})"
        )
    filters = memoryview(raw)[::stride]
    if max(filters) > 4:
        raise ImageError("corrupt or truncated image data (invalid PNG row filter)")
    return height, width


def to_png_rgb8(data: bytes) -> tuple[bytes, int, int]:
    """Normalize any supported image to PNG-encoded 8-bit RGB.

    Returns (png_bytes, height, width). A source that already is a plain 8-bit RGB PNG is
    returned unchanged (its pixels are already exactly the normalized ones), which saves the
    re-encode. Raises ImageError with the reason for unusable input.
    """
    size = check_plain_png(data)
    if size is not None and not _png_has_rotation(data):
        return data, size[0], size[1]
    arr, plain = decode_for_ingest(data)
    h, w = arr.shape[:2]
    return (data if plain else encode_png(arr)), h, w
