"""A few images' before/after material: slider images at screen size and 1:1 crops of the
regions worth looking at. No Ray."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

CROP = 128  # side of a 1:1 crop, pixels
SCREEN = 960  # the slider's images are at most this wide or tall

# ----------------------------------------------------------------------------- image pieces


def data_uri(image: np.ndarray, fmt: str = "JPEG", quality: int = 90) -> str:
    """uint8 (H, W, 3) or (H, W) as a base64 data: URI (JPEG at ``quality`` without chroma
    subsampling, or PNG)."""
    buf = io.BytesIO()
    im = Image.fromarray(image)
    if fmt == "JPEG":
        im.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    else:
        im.save(buf, format="PNG")
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def screen_size(image: np.ndarray, side: int = SCREEN) -> np.ndarray:
    """``image`` shrunk (never enlarged) to fit ``side`` x ``side``."""
    im = Image.fromarray(image)
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(im)


def _window_sums(score: np.ndarray, crop: int) -> np.ndarray:
    """Sum of ``score`` over every crop x crop window (an integral image); [i, j] = the window
    whose top-left corner is (i, j)."""
    c = np.zeros((score.shape[0] + 1, score.shape[1] + 1))
    c[1:, 1:] = score.cumsum(0).cumsum(1)
    return c[crop:, crop:] - c[:-crop, crop:] - c[crop:, :-crop] + c[:-crop, :-crop]


def regions(
    before: np.ndarray, after: np.ndarray, detail: np.ndarray, crop: int = CROP
) -> list[tuple[str, int, int]]:
    """Top-left corners of the two crops shown 1:1: ("most changed", where ``after`` differs
    most from ``before``) and ("finest texture", where ``detail`` — the reference, else the
    output — has the most gradient energy, away from the first)."""
    h, w = before.shape[:2]
    crop = min(crop, h, w)
    if crop == 0:
        return []

    def gray(a):
        return a.astype(np.float32).mean(axis=2) if a.ndim == 3 else a.astype(np.float32)

    change = np.abs(gray(after) - gray(before))
    d = gray(detail)
    energy = np.zeros_like(d)
    energy[:, 1:] += np.abs(np.diff(d, axis=1))
    energy[1:, :] += np.abs(np.diff(d, axis=0))
    found = []
    changed = _window_sums(change, crop)
    y, x = np.unravel_index(int(np.argmax(changed)), changed.shape)
    found.append(("most changed", int(y), int(x)))
    texture = _window_sums(energy, crop)
    ys, xs = np.ogrid[: texture.shape[0], : texture.shape[1]]
    texture[
        (np.abs(ys - y) < crop // 2) & (np.abs(xs - x) < crop // 2)
    ] = -1  # not the same place twice
    ty, tx = np.unravel_index(int(np.argmax(texture)), texture.shape)
    if texture[ty, tx] >= 0:
        found.append(("finest texture", int(ty), int(tx)))
    return found


@dataclass
class Comparison:
    """One image's before/after material for the page: slider images (screen size, JPEG 70: the 1:1 crops carry the detail) and
    1:1 crops of input, output and reference (JPEG 95 without chroma subsampling: noise and
    texture as written, at a third of a PNG's size, so a page of several images stays ~1 MB)."""

    key: str
    label: str
    row: dict[str, Any]
    slider: dict[str, str] = field(default_factory=dict)  # "before"/"after" -> data URI
    crops: list[dict[str, Any]] = field(
        default_factory=list
    )  # {"region", "y", "x", "size", name -> data URI}


def compare(
    key: str, label: str, row: dict[str, Any], images: Mapping[str, np.ndarray | None]
) -> Comparison:
    """The comparison of one image from its decoded ``images``: "input", "output" and optionally
    "reference" (uint8; same size), or any methods' outputs beside "input" (evaluate: the
    slider shows "model" when there is no "output")."""
    c = Comparison(key, label, row)
    before, after = images.get("input"), images.get("output", images.get("model"))
    if before is None or after is None or before.shape[:2] != after.shape[:2]:
        return c
    ref = images.get("reference")
    c.slider = {
        "before": data_uri(screen_size(before), quality=70),
        "after": data_uri(screen_size(after), quality=70),
    }
    detail = ref if ref is not None and ref.shape[:2] == before.shape[:2] else after
    for region, y, x in regions(before, after, detail):
        s = min(CROP, before.shape[0], before.shape[1])
        crop = {"region": region, "y": y, "x": x, "size": s}
        for name, img in images.items():
            if img is not None and img.shape[:2] == before.shape[:2]:
                crop[name] = data_uri(np.ascontiguousarray(img[y : y + s, x : x + s]), quality=95)
        c.crops.append(crop)
    return c
