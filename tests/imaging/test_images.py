import io

import numpy as np
import pytest
from PIL import Image

from raydenoise.imaging.encode import encode_png, to_png_rgb8
from raydenoise.imaging.images import ImageError, decode_rgb8

from conftest import jpeg_bytes, png16_bytes, png_bytes, rgb


def test_plain_rgb_png_is_kept_as_is_and_decodes_exactly():
    a = rgb(12, 17)
    data = png_bytes(a)
    out, h, w = to_png_rgb8(data)
    assert out == data and (h, w) == (12, 17)
    assert np.array_equal(decode_rgb8(data), a)


def test_encode_png_round_trip_is_lossless():
    a = rgb(9, 31, seed=3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(a)))), a)


def test_grayscale_is_replicated_to_rgb():
    g = rgb(8, 8)[..., 0]
    out = decode_rgb8(png_bytes(g))
    assert out.shape == (8, 8, 3)
    assert all(np.array_equal(out[..., c], g) for c in range(3))


def test_rgba_drops_alpha_and_keeps_colors():
    a = rgb(6, 7)
    rgba = np.concatenate([a, np.full((6, 7, 1), 10, np.uint8)], -1)
    png, _, _ = to_png_rgb8(png_bytes(rgba))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), a)


def test_palette_with_and_without_transparency():
    im = Image.fromarray(rgb(10, 10)).quantize(16)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    assert np.array_equal(decode_rgb8(buf.getvalue()), np.asarray(im.convert("RGB")))
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=0)
    assert np.array_equal(decode_rgb8(buf.getvalue()), np.asarray(im.convert("RGB")))


def test_16bit_gray_and_rgb_keep_the_high_byte():
    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (5, 6)).astype(np.uint16)
    out = decode_rgb8(png16_bytes(g16))
    assert np.array_equal(out[..., 1], (g16 >> 8).astype(np.uint8))
    c16 = rng.integers(0, 65536, (5, 6, 3)).astype(np.uint16)
    png, _, _ = to_png_rgb8(png16_bytes(c16))
    assert png[24] == 8  # re-encoded as 8-bit
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), (c16 >> 8).astype(np.uint8))


def test_exif_orientation_is_applied():
    a = rgb(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = jpeg_bytes(a, exif=exif)
    out = decode_rgb8(data)
    assert out.shape == (20, 10, 3)
    plain = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(out, np.rot90(plain, k=-1))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (png_bytes(rgb(64, 64))[:300], "truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt"),
    ],
)
def test_bad_bytes_raise_image_error_with_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_rgb8(data)


def test_float_images_are_rejected():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.float32), mode="F").save(buf, format="TIFF")
    with pytest.raises(ImageError, match="floating-point"):
        decode_rgb8(buf.getvalue())


def test_plain_png_check_accepts_valid_and_catches_every_kind_of_damage():
    from raydenoise.imaging.encode import check_plain_png

    data = png_bytes(rgb(40, 30), compress_level=6)
    assert check_plain_png(data) == (40, 30)
    assert check_plain_png(png_bytes(rgb(4, 4)[..., 0])) is None  # not RGB: caller decodes fully
    assert check_plain_png(png_bytes(rgb(4, 4), optimize=True)) == (4, 4)
    for cut in (40, len(data) // 2, len(data) - 12, len(data) - 1):
        with pytest.raises(ImageError, match="truncated"):
            check_plain_png(data[:cut])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x55
    with pytest.raises(ImageError, match="CRC"):
        check_plain_png(bytes(flipped))
    with pytest.raises(ImageError):  # Pillow agrees that these are broken
        decode_rgb8(bytes(flipped))


def test_object_column_keeps_images_whole_for_any_shapes():
    from raydenoise.imaging.images import object_column

    same = object_column([np.zeros((2, 3, 3), np.uint8), np.ones((2, 3, 3), np.uint8)])
    mixed = object_column([np.zeros((2, 3, 3), np.uint8), np.zeros((4, 5), np.uint8)])
    assert same.shape == (2,) and same.dtype == object and same[1].shape == (2, 3, 3)
    assert mixed.shape == (2,) and mixed[1].shape == (4, 5)


@pytest.mark.parametrize(
    "fmt, match",
    [
        ("GIF", "an animation of 3 frames"),
        ("PNG", "an animation of 3 frames"),
        ("TIFF", "a multi-page file of 3 frames"),
    ],
)
def test_animations_and_multi_page_files_are_refused_not_cut_to_their_first_frame(fmt, match):
    import io

    from PIL import Image

    from raydenoise.imaging.encode import check_plain_png
    from raydenoise.imaging.images import ImageError, decode_for_denoise

    frames = [Image.fromarray(np.full((8, 10, 3), v, np.uint8)) for v in (10, 200, 90)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match=match):
        decode_for_denoise(buf.getvalue())
    with pytest.raises(ImageError, match=match):
        to_png_rgb8(buf.getvalue())  # ingest too
    if fmt == "PNG":
        assert check_plain_png(buf.getvalue()) is None  # the fast path hands an APNG to the decoder


def test_a_single_frame_of_a_multi_frame_format_is_an_image():
    import io

    from PIL import Image

    from raydenoise.imaging.images import decode_for_denoise

    frames = [Image.fromarray(np.full((8, 10, 3), v, np.uint8)) for v in (10, 200, 90)]
    one = io.BytesIO()
    frames[0].save(one, "GIF")
    assert decode_for_denoise(one.getvalue()).rgb.shape == (8, 10, 3)  # a single-frame GIF is fine


def test_lossy_inputs_are_read_with_their_quality_and_metadata():
    """images.read_keep: a JPEG's quality (estimated from its quantization tables) and chroma
    subsampling, a WebP's lossy-ness, EXIF with only the orientation changed, the ICC profile."""
    import io

    from PIL import Image

    from raydenoise.imaging.encode import encode_like
    from raydenoise.imaging.images import decode_for_denoise
    from raydenoise.imaging.metadata import _upright, jpeg_quality

    pixels = rgb(32, 48, seed=1)
    for q in (35, 62, 80, 91):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=q)
        assert jpeg_quality(Image.open(buf)) == q
    exif = Image.Exif()
    exif[0x0112], exif[0x0131] = 8, "editor"
    raw = (
        b"Exif\0\0" + exif.tobytes()[6:]
        if exif.tobytes().startswith(b"Exif")
        else b"Exif\0\0" + exif.tobytes()
    )
    fixed = _upright(raw)
    assert len(fixed) == len(raw) and sum(a != b for a, b in zip(fixed, raw)) == 1
    assert _upright(b"Exif\0\0garbage") == b""
    for kwargs, lossy in (({"quality": 60}, True), ({"lossless": True}, False)):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "WEBP", **kwargs)
        keep = decode_for_denoise(buf.getvalue()).keep
        assert (keep.quality > 0) == lossy
        out = encode_like(pixels, None, False, "WEBP", keep)
        assert (b"VP8L" not in out[:40]) == lossy


def test_16_bit_png_and_tiff_round_trip_at_full_precision_with_metadata():
    """decode_for_denoise/encode_like: 16-bit RGB, gray and RGBA PNG, and 16-bit TIFF, come back
    bit for bit with 16 bits; EXIF orientation is applied to the pixels as for 8-bit inputs; the
    ICC profile is kept; float TIFF is refused with the reason."""
    import io

    import tifffile
    from PIL import Image, ImageCms

    from raydenoise.imaging.encode import encode_like
    from raydenoise.imaging.images import _orient, decode_for_denoise
    from raydenoise.imaging.metadata import Keep

    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, (6, 9, 3)).astype(np.uint16)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for data, gray in ((png16_bytes(deep), False), (png16_bytes(deep[..., 1]), True)):
        dec = decode_for_denoise(data)
        assert dec.rgb.dtype == np.uint16 and dec.gray == gray
        assert np.array_equal(dec.rgb, np.repeat(deep[..., 1:2], 3, axis=2) if gray else deep)
        again = decode_for_denoise(encode_like(dec.rgb, None, gray, "PNG", Keep(icc=icc)))
        assert np.array_equal(again.rgb, dec.rgb) and again.keep.icc == icc
    buf = io.BytesIO()
    tifffile.imwrite(buf, deep, photometric="rgb")
    dec = decode_for_denoise(buf.getvalue())
    assert dec.format == "TIFF" and np.array_equal(dec.rgb, deep)
    assert np.array_equal(
        tifffile.imread(io.BytesIO(encode_like(dec.rgb, None, False, "TIFF"))), deep
    )
    alpha = rng.integers(0, 65536, (6, 9)).astype(np.uint16)
    rgba = decode_for_denoise(encode_like(deep, alpha, False, "PNG"))
    assert np.array_equal(rgba.alpha, alpha) and np.array_equal(rgba.rgb, deep)
    for orientation in range(1, 9):  # the same transposes Pillow applies to 8-bit images
        small = rng.integers(0, 255, (3, 5, 3)).astype(np.uint8)
        exif = Image.Exif()
        exif[0x0112] = orientation
        b = io.BytesIO()
        Image.fromarray(small).save(b, "PNG", exif=exif.tobytes())
        assert np.array_equal(_orient(small, orientation), decode_for_denoise(b.getvalue()).rgb)
    buf = io.BytesIO()
    tifffile.imwrite(buf, deep.astype(np.float32), photometric="rgb")
    with pytest.raises(ImageError, match="32-bit"):
        decode_for_denoise(buf.getvalue())
