"""A fast writer of 8-bit PNG files, the format of most outputs. No Ray, no torch.

Encoding the output was the largest cost of a denoised image after the network and the noise
estimates: Pillow at zlib level 1 takes 19-27 ms for a 400x600 photo, most of it its adaptive
per-row filter choice and zlib. Here every row gets PNG's Average filter (computed with numpy
on whole images at once), and the stream is compressed with Intel ISA-L's zlib-compatible
deflate (``isal``), falling back to the standard library's zlib where ``isal`` is not installed:
3-4 ms for the same photo, and files no larger than Pillow's (smaller for photos that keep some
noise): bench/per_image.py.

The file is standard PNG (IHDR, optional iCCP and eXIf, one IDAT, IEND), read by every decoder.
"""

from __future__ import annotations

import struct
import zlib
from types import ModuleType

import numpy as np

_deflate: ModuleType
try:  # ISA-L's deflate: ~5x zlib's speed at level 1, the same stream format
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _deflate = zlib
DEFLATE_LEVEL = 1  # the fastest level of zlib that compresses; isal's levels are 0-3

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type by channel count: gray, gray + alpha, RGB, RGBA
_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
AVERAGE = 3  # the PNG filter type byte of the Average filter


def chunk(tag: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, tag, body, CRC of tag and body."""
    crc = zlib.crc32(body, zlib.crc32(tag)) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)


def metadata_chunks(icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """iCCP (an ICC profile) and eXIf chunks; ``exif`` as Pillow holds it, with its b"Exif\\0\\0"
    header (the chunk stores the TIFF structure after it)."""
    extra = b""
    if icc:
        extra += chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc))
    if exif:
        extra += chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    return extra


def write_png8(pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """Lossless PNG bytes of a uint8 image: (H, W) gray, or (H, W, C) with C = 1 (gray),
    2 (gray + alpha), 3 (RGB) or 4 (RGBA); with the ICC profile and EXIF given.
    ValueError for any other array."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"write_png8 needs uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in _COLOUR_TYPE or 0 in pixels.shape[:2]:
        raise ValueError(f"write_png8 needs an (H, W) or (H, W, 1-4) image, got {pixels.shape}")
    h, w, c = pixels.shape
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOUR_TYPE[c], 0, 0, 0)
    data = _deflate.compress(average_filtered(pixels).data, DEFLATE_LEVEL)
    return (
        SIGNATURE
        + chunk(b"IHDR", header)
        + metadata_chunks(icc, exif)
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )


def average_filtered(pixels: np.ndarray) -> np.ndarray:
    """The PNG scanlines of a uint8 (H, W, C) image under the Average filter: each row starts
    with the filter byte 3, and each byte is stored minus the floor of the mean of its left
    neighbour (C bytes before) and the byte above (0 outside the image), modulo 256.
    Returns a C-contiguous (H, 1 + W * C) uint8 array."""
    h, w, c = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(h, w * c)
    left = np.zeros_like(rows)
    left[:, c:] = rows[:, :-c]
    up = np.zeros_like(rows)
    up[1:] = rows[:-1]
    # floor((a + b) / 2) in 8 bits, without overflow
    predicted = (left >> 1) + (up >> 1) + (left & up & 1)
    out = np.empty((h, 1 + w * c), np.uint8)
    out[:, 0] = AVERAGE
    np.subtract(rows, predicted, out=out[:, 1:])
    return out
