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

import io
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import RaydenoiseError
from .metadata import Keep, read_keep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG zlib level: 1 is ~3x faster to write than the default 6 for ~10-20% larger files, and
# decoding speed is the same. The encoding is lossless at every level.
PNG_COMPRESS_LEVEL = 1
# Pillow's guard against decompression bombs (~89.5 megapixels); denoise can raise it per job.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
MIN_TILE = 32  # smaller tiles would be mostly margin (a tile of 32 with unet computes 49x its area)


class ImageError(RaydenoiseError, ValueError):
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
class Decoded:
    """An input image as ``denoise`` sees it: 8-bit RGB pixels for the model plus what the
    output must keep."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    alpha: np.ndarray | None  # uint8 (H, W), carried through unchanged; None without transparency
    gray: bool  # written back with one channel
    format: str  # Pillow's format name ("PNG", "JPEG", ...)
    keep: Keep = field(default_factory=Keep)


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
