"""raydenoise's PNG writer: every decoder reads back exactly what was written."""

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from raydenoise.imaging import png
from raydenoise.imaging.encode import check_plain_png, encode_like
from raydenoise.imaging.metadata import Keep

from conftest import rgb


def _pil(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im)


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 1, 3), (2, 1, 3), (5, 7, 3), (3, 2, 4), (9, 1, 2), (4, 4), (33, 17, 3)]
)
def test_round_trip_is_exact_with_pillow_and_opencv(shape):
    a = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = png.write_png8(a)
    assert np.array_equal(_pil(data), a)
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a.ndim == 3 and a.shape[2] == 2:  # OpenCV reads gray + alpha as BGRA
        back = back[..., [0, 3]]
    elif a.ndim == 3 and a.shape[2] >= 3:  # OpenCV's BGR(A)
        back = back[..., [2, 1, 0, 3][: a.shape[2]]]
    assert np.array_equal(back, a)


def test_extremes_of_the_average_filter_wrap_correctly():
    # 255 next to 255 above and left: the predicted value is 255, not an 8-bit overflow
    a = np.full((6, 6, 3), 255, np.uint8)
    a[::2, ::2] = 0
    assert np.array_equal(_pil(png.write_png8(a)), a)


def test_each_row_uses_the_average_filter_and_decodes_to_the_pixels():
    a = rgb(7, 5, seed=2)
    rows = png.average_filtered(a)
    assert rows.shape == (7, 1 + 5 * 3) and (rows[:, 0] == png.AVERAGE).all()
    # undo the filter by the PNG definition, byte by byte
    raw, out = rows[:, 1:].astype(int), np.zeros((7, 15), int)
    for y in range(7):
        for x in range(15):
            left = out[y, x - 3] if x >= 3 else 0
            up = out[y - 1, x] if y else 0
            out[y, x] = (raw[y, x] + (left + up) // 2) % 256
    assert np.array_equal(out.reshape(7, 5, 3), a)


def test_icc_and_exif_travel_in_chunks_decoders_read():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "raydenoise test camera"  # Make
    raw = exif.tobytes()
    data = png.write_png8(rgb(8, 9), icc=icc, exif=raw)
    im = Image.open(io.BytesIO(data))
    assert im.info["icc_profile"] == icc
    assert im.getexif()[0x010F] == "raydenoise test camera"


def test_the_checked_plain_png_path_accepts_it():
    a = rgb(20, 30, seed=5)
    assert check_plain_png(png.write_png8(a)) == (20, 30)


def test_encode_like_keeps_gray_and_alpha_as_pillow_would():
    a = rgb(10, 12, seed=7)
    alpha = np.arange(120, dtype=np.uint8).reshape(10, 12)
    gray = _pil(encode_like(a, None, True, "PNG"))
    assert np.array_equal(gray, np.asarray(Image.fromarray(a).convert("L")))
    rgba = _pil(encode_like(a, alpha, False, "PNG"))
    assert np.array_equal(rgba[..., :3], a) and np.array_equal(rgba[..., 3], alpha)
    la = _pil(encode_like(a, alpha, True, "png", Keep()))
    assert la.shape == (10, 12, 2) and np.array_equal(la[..., 1], alpha)


def test_no_larger_than_pillow_on_a_photo():
    from skimage import data as skdata

    photo = skdata.astronaut()
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", compress_level=1)
    ours = png.write_png8(photo)
    assert np.array_equal(_pil(ours), photo)
    assert len(ours) <= len(buf.getvalue()) * 1.02


def test_zlib_fallback_writes_the_same_pixels(monkeypatch):
    monkeypatch.setattr(png, "_deflate", zlib)
    a = rgb(16, 16, seed=9)
    assert np.array_equal(_pil(png.write_png8(a)), a)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.uint16), np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4, 3), np.uint8)],
)
def test_other_arrays_are_refused(bad):
    with pytest.raises(ValueError, match="write_png8"):
        png.write_png8(bad)
