"""Decoding any common image into 8-bit RGB, and lossless PNG encoding. No Ray here.

Normalization rules (also in the README):
- EXIF orientation is applied first, so pixels are stored the way viewers show them.
- Grayscale (1-bit, 8-bit) is replicated into R=G=B.
- 16-bit samples (grayscale or RGB/RGBA PNG, TIFF) keep their high byte: ``v >> 8``.
- Alpha (RGBA, LA, palette with transparency) is dropped; the color channels are kept as stored.
- Palette, CMYK, YCbCr and other modes go through Pillow's conversion to RGB.
- Multi-frame files (GIF, TIFF) use their first frame.
Anything else (float images, 32-bit integer images outside 0..65535) is rejected.

``decode_for_denoise``/``encode_like`` are the ``denoise`` pair: they keep what the model does not
touch (alpha, grayscale, the file format, EXIF, the ICC profile, a lossy input's quality) so an
output looks like its input, and refuse what would be lost silently (16-bit depth).
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG zlib level: 1 is ~3x faster to write than the default 6 for ~10-20% larger files, and
# decoding speed is the same. The encoding is lossless at every level.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 95
# Pillow's guard against decompression bombs (~89.5 megapixels); denoise can raise it per job.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
MIN_TILE = 32  # smaller tiles would be mostly margin (a tile of 32 with unet computes 49x its area)


class ImageError(ValueError):
    """An input that is not a usable image; ``str()`` is the reason, without the file name."""


def decode_rgb8(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into an ``uint8`` array of shape (H, W, 3), normalized as above.

    Raises ImageError with a human-readable reason for non-images, truncated or corrupt data,
    unsupported pixel formats and images over ``max_pixels`` (None: no limit).
    """
    return _decode(data, max_pixels)[0]


def decode_for_ingest(data: bytes) -> tuple[np.ndarray, bool]:
    """Like decode_rgb8, also saying whether ``data`` already is a plain 8-bit RGB PNG whose
    decoded pixels equal the returned array (so it can be stored as-is, without re-encoding)."""
    return _decode(data)


def _open(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully load image bytes; ImageError for anything unusable (see decode_rgb8).

    ``max_pixels`` (None: no limit) replaces Pillow's decompression-bomb limit: a larger image
    is refused before its pixels are decoded.
    """
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own check below
            try:
                im = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = saved
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise ImageError(
                    f"too many pixels ({w}x{h} = {w * h / 1e6:.1f} MP, over the {max_pixels / 1e6:.1f} MP limit that "
                    f"guards against decompression bombs; raise it with --max-megapixels if you trust this file)"
                )
            im.load()
            frames = getattr(im, "n_frames", 1)
    except UnidentifiedImageError:
        fmt = _sniff(data)
        if fmt == "TIFF":
            _tiff_samples(data)  # a readable TIFF of samples Pillow does not take: say which
        if fmt:
            raise ImageError(
                f"corrupt or truncated image data (a {fmt} header, but unreadable)"
            ) from None
        raise ImageError("not an image (unrecognized format)") from None
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"too many pixels ({exc})") from None
    except MemoryError:
        raise ImageError("not enough memory to decode this image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"corrupt or truncated image data ({exc})") from None
    except Exception as exc:  # Pillow plugins raise assorted errors on hostile input
        raise ImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from None
    if frames > 1:
        kind = "a multi-page file" if im.format == "TIFF" else "an animation"
        raise ImageError(
            f"{kind} of {frames} frames ({im.format}): one image per file is written and the "
            "other frames would be lost; split it into single images first"
        )
    return im


def _decode(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bool]:
    im = _open(data, max_pixels)

    arr, _, rotated = _convert(im, keep_alpha=False)
    plain_png = not rotated and _is_plain_rgb8_png(data)
    return arr, plain_png


def _convert(im: Image.Image, keep_alpha: bool) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(8-bit RGB pixels, the alpha channel if ``keep_alpha`` and the image has a non-opaque one,
    whether EXIF orientation was applied)."""
    rotated = _has_rotation(im)
    try:
        if rotated:
            im = ImageOps.exif_transpose(im)
        alpha = None
        if keep_alpha and (
            im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)
        ):
            alpha = np.asarray(im.convert("RGBA"))[..., 3].copy()
            if alpha.min() == 255:
                alpha = None  # an alpha channel that is opaque everywhere carries nothing
        arr = _to_rgb8(im)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"cannot convert image to RGB ({type(exc).__name__}: {exc})") from None
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError("image has zero width or height")
    return arr, alpha, rotated


_SIGNATURES = {
    PNG_SIGNATURE: "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


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


@dataclass(frozen=True)
class Decoded:
    """An input image as ``denoise`` sees it: 8-bit RGB pixels for the model plus what the
    output must keep."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    alpha: np.ndarray | None  # uint8 (H, W), carried through unchanged; None without transparency
    gray: bool  # written back with one channel
    format: str  # Pillow's format name ("PNG", "JPEG", ...)
    keep: Keep = Keep()


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


_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def decode_for_denoise(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode an input of ``denoise``, keeping its alpha channel and grayscale-ness.

    Raises ImageError for unusable data, for 16-bit (or 32-bit) images (outputs are written with
    8 bits per sample, so such an input is refused rather than silently reduced) and for
    animations and multi-page files (an output of their first frame alone would lose the rest).
    """
    im = _open(data, max_pixels)
    depth = _bits_per_sample(im, data)
    keep = read_keep(im, data)
    if depth == 16 and im.format in ("PNG", "TIFF"):
        return _decode16(data, im, keep)
    if depth > 8:
        raise ImageError(
            f"{depth}-bit samples ({im.format}, mode {im.mode}): denoise reads 16-bit PNG and TIFF "
            "and 8-bit images; convert it to one of those first"
        )
    rgb, alpha, _ = _convert(im, keep_alpha=True)
    return Decoded(
        rgb=rgb, alpha=alpha, gray=im.mode in _GRAY_MODES, format=im.format or "PNG", keep=keep
    )


def _tiff_samples(data: bytes) -> None:
    """ImageError naming the sample type of a TIFF that tifffile reads and Pillow does not (float
    or 32-bit colour); nothing when tifffile cannot read it either."""
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            dtype = tif.pages[0].dtype
    except Exception:
        return
    if dtype is not None:
        kind = "floating-point" if np.dtype(dtype).kind == "f" else "integer"
        raise ImageError(
            f"{np.dtype(dtype).itemsize * 8}-bit {kind} samples: denoise reads 8- and 16-bit images; "
            "convert it to 16-bit TIFF or PNG first"
        )


def _decode16(data: bytes, im: Image.Image, keep: Keep) -> Decoded:
    """A 16-bit PNG or TIFF at full precision (Pillow keeps only the high byte of 16-bit colour):
    uint16 RGB (grayscale replicated) and alpha, EXIF orientation applied as for 8-bit inputs."""
    try:
        if im.format == "PNG":
            import cv2

            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if arr is not None and arr.ndim == 3:
                arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # OpenCV's BGR(A) -> RGB(A)
        else:
            import tifffile

            arr = tifffile.imread(io.BytesIO(data))
    except Exception as exc:
        raise ImageError(
            f"corrupt or truncated 16-bit {im.format} ({type(exc).__name__}: {exc})"
        ) from None
    if (
        arr is None
        or arr.dtype != np.uint16
        or arr.ndim not in (2, 3)
        or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4))
    ):
        raise ImageError(
            f"16-bit {im.format} with an unsupported layout ({getattr(arr, 'shape', None)})"
        )
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # gray (+ alpha)
        gray_alpha = arr[..., 1] if arr.shape[2] == 2 else None
        arr = arr[..., 0]
    else:
        gray_alpha = None
    gray = arr.ndim == 2
    alpha = gray_alpha if gray else (arr[..., 3] if arr.shape[2] == 4 else None)
    rgb = np.repeat(arr[..., None], 3, axis=2) if gray else arr[..., :3]
    orientation = _orientation(im)
    rgb = _orient(rgb, orientation)
    if alpha is not None:
        alpha = None if alpha.min() == 65535 else _orient(alpha, orientation)
    return Decoded(
        rgb=np.ascontiguousarray(rgb),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        gray=gray,
        format=im.format or "",
        keep=keep,
    )


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as viewers show them for an EXIF orientation (what ImageOps.exif_transpose does)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.swapaxes(a, 0, 1)[::-1],
    }
    return ops[orientation](arr) if orientation in ops else arr


def _bits_per_sample(im: Image.Image, data: bytes) -> int:
    """Bits per sample of the stored image (Pillow reduces 16-bit RGB PNGs to 8-bit RGB, so the
    PNG header and TIFF tags are read directly)."""
    if im.mode in ("I", "F"):
        return 32
    if im.mode.startswith("I;16"):
        return 16
    if data.startswith(PNG_SIGNATURE) and len(data) > 25 and data[12:16] == b"IHDR":
        return data[24]
    if im.format == "TIFF":
        bits = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
        if bits:
            return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def encode_like(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    gray: bool,
    fmt: str,
    keep: Keep = Keep(),
    quality: int | None = None,
) -> bytes:
    """Encode a denoised uint8 (H, W, 3) image in its input's format: one channel if the input
    was grayscale, the input's alpha channel re-attached unchanged, its EXIF (orientation 1) and
    ICC profile carried (``keep``). A lossy input stays lossy: JPEG at the input's estimated
    quality and chroma subsampling, lossy WebP at WEBP_QUALITY; ``quality`` (1-100) overrides
    both. PNG is lossless at zlib level 1, lossless WebP stays lossless; other formats Pillow can
    write keep their format, the rest become PNG bytes."""
    fmt = (fmt or "PNG").upper()
    if rgb.dtype == np.uint16:
        if fmt in ("PNG", "TIFF"):
            return _encode16(rgb, alpha, gray, fmt, keep)
        # A format of 8 bits per channel (an output format chosen with --format): rounded down.
        rgb = _to8(rgb)
        alpha = None if alpha is None else _to8(alpha)
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
    if fmt == "PNG":
        # Lossless at every level; level 1 encodes ~3x faster than Pillow's default 6.
        return _save(im, "PNG", meta, compress_level=PNG_COMPRESS_LEVEL)
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

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + tag
            + body
            + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
        )

    extra = b""
    if keep.icc:
        extra += chunk(b"iCCP", b"icc\0\0" + zlib.compress(keep.icc))
    if keep.exif:
        extra += chunk(b"eXIf", keep.exif[6:])
    end_ihdr = 8 + 8 + 13 + 4
    return png[:end_ihdr] + extra + png[end_ihdr:]


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


def _sniff(data: bytes) -> str | None:
    for magic, name in _SIGNATURES.items():
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def stored_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of the image the bytes decode to (EXIF orientation applied), read from its
    header without decoding the pixels; None when the header cannot be read."""
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    except Exception:
        return None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _has_rotation(im: Image.Image) -> bool:
    try:
        return im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:
        return False


def _to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        out = np.asarray(im)
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise ImageError("32-bit integer pixels outside 0..65535 are not supported")
        g = (a.astype(np.uint32) >> 8).astype(np.uint8)
        out = np.repeat(g[..., None], 3, axis=2)
    elif mode == "F":
        raise ImageError("floating-point images are not supported (convert to 8 or 16 bit)")
    elif mode in ("RGBA", "RGBa", "RGBX", "LA", "La", "PA") or (
        mode == "P" and "transparency" in im.info
    ):
        out = np.asarray(im.convert("RGBA"))[..., :3]
    else:  # L, 1, P, CMYK, YCbCr, LAB, HSV
        out = np.asarray(im.convert("RGB"))
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out.ndim != 3 or out.shape[2] != 3:
        raise ImageError(f"unexpected pixel layout {out.shape} for mode {mode}")
    return out


def _is_plain_rgb8_png(data: bytes) -> bool:
    """True for a PNG with 8-bit truecolor (RGB, no alpha) pixels, read from its IHDR chunk."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    bit_depth, color_type = struct.unpack(">BB", data[24:26])
    return bit_depth == 8 and color_type == 2


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
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


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


def object_column(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding images of any shapes: a Ray Data batch column of ragged
    images (``np.array`` would stack equal shapes into one block or fail on mixed ones)."""
    col = np.empty(len(arrays), dtype=object)
    col[:] = arrays
    return col


def area_thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """float32 (C, size, size): the mean of each cell of an (H, W, C) image cut into size x size
    cells, the cells of adaptive average pooling (row cell i spans floor(i*H/size) to
    ceil((i+1)*H/size)), integer images scaled to [0, 1]. Row cells first, so a large integer
    image never exists as float. What a global network (``models.context_of``) sees of the
    whole image; equal to the torch pooling to float rounding."""
    h, w = image.shape[:2]
    scale = 1.0 / np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1.0

    def cells(n: int) -> list[tuple[int, int]]:
        return [((i * n) // size, -((-(i + 1) * n) // size)) for i in range(size)]

    rows = np.stack(
        [image[a:b].mean(axis=0, dtype=np.float64) for a, b in cells(h)]
    )  # (size, W, C)
    out = np.stack([rows[:, a:b].mean(axis=1) for a, b in cells(w)], axis=1)  # (size, size, C)
    return np.ascontiguousarray((out * scale).transpose(2, 0, 1), dtype=np.float32)
