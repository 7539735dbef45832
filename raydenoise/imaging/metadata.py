"""What an output keeps of its input (Keep): EXIF with the orientation normalized, the ICC
profile, a lossy input's quality (JPEG: estimated from its quantization tables) and chroma
subsampling."""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass

from PIL import Image

JPEG_QUALITY = 95


@dataclass(frozen=True)
class Keep:
    """What an output keeps of its input besides the pixels (see read_keep)."""

    exif: bytes = (
        b""  # the input's EXIF ("Exif\0\0" + TIFF), orientation set to 1: pixels are stored upright
    )
    icc: bytes = b""  # the ICC colour profile (Display P3, Adobe RGB...): without it colours shift
    quality: int = (
        0  # a lossy input's quality (JPEG: estimated from its quantization tables); 0: lossless
    )
    subsampling: int = -1  # a JPEG's chroma subsampling (0 4:4:4, 1 4:2:2, 2 4:2:0); -1: none


WEBP_QUALITY = (
    90  # a lossy WebP input is written lossy at this quality (its own cannot be read back)
)


def read_keep(im: Image.Image, data: bytes) -> Keep:
    """EXIF (orientation normalized), ICC profile and lossy quality of an opened input."""
    exif = im.info.get("exif") or b""
    if exif and not exif.startswith(b"Exif\0\0"):
        exif = b"Exif\0\0" + exif  # PNG's eXIf chunk holds the TIFF part alone
    quality, subsampling = 0, -1
    if im.format in ("JPEG", "MPO"):
        quality = jpeg_quality(im)
        from PIL import JpegImagePlugin

        subsampling = JpegImagePlugin.get_sampling(im)
    elif im.format == "WEBP" and _webp_is_lossy(data):
        quality = WEBP_QUALITY
    return Keep(
        exif=_upright(exif),
        icc=im.info.get("icc_profile") or b"",
        quality=quality,
        subsampling=subsampling,
    )


@functools.cache
def _jpeg_tables() -> tuple[tuple[int, tuple[int, ...]], ...]:
    """The luminance quantization table libjpeg writes at each quality 1..100."""
    tables = []
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="JPEG", quality=q)
        tables.append((q, tuple(Image.open(buf).quantization[0])))  # type: ignore[attr-defined]
    return tuple(tables)


def jpeg_quality(im: Image.Image) -> int:
    """The libjpeg quality (1-100) whose luminance table is closest to the image's (as
    ImageMagick's estimate does); JPEG_QUALITY when it has none."""
    tables = getattr(im, "quantization", None) or {}
    lum = tables.get(0) if isinstance(tables, dict) else None
    if not lum or len(lum) != 64:
        return JPEG_QUALITY
    return min(_jpeg_tables(), key=lambda qt: sum(abs(a - b) for a, b in zip(lum, qt[1])))[0]


def _webp_is_lossy(data: bytes) -> bool:
    """A WebP whose image chunk is "VP8 " (lossy), not "VP8L" (lossless), walking its chunks."""
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if tag in (b"VP8 ", b"VP8L"):
            return tag == b"VP8 "
        pos += 8 + size + (size & 1)
    return False


def _upright(exif: bytes) -> bytes:
    """``exif`` with its orientation tag (IFD0, 0x0112) set to 1, every other byte as it was;
    unparseable EXIF is dropped rather than written back wrong."""
    if not exif:
        return b""
    tiff = bytearray(exif[6:])
    try:
        order = {b"II": "<", b"MM": ">"}[bytes(tiff[:2])]
        ifd = struct.unpack(order + "I", tiff[4:8])[0]
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            at = ifd + 2 + 12 * i
            tag, kind = struct.unpack(order + "HH", tiff[at : at + 4])
            if tag == 0x0112 and kind == 3:
                tiff[at + 8 : at + 10] = struct.pack(order + "H", 1)
    except (KeyError, struct.error):
        return b""
    return b"Exif\0\0" + bytes(tiff)
