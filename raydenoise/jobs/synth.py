"""``raydenoise synth``: make a paired data set (low/ + high/) from clean photos. No Ray here.

Clean photos come from a local folder, an ``s3://`` prefix, or (the default) scikit-image's
bundled sample photos, so a newcomer has data without downloading anything.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..imaging.encode import encode_png
from ..imaging.images import ImageError, decode_rgb8
from ..imaging.noise import NoiseSpec, apply_noise, parse_noise
from ..imaging.pairing import file_id, natural_key
from ..storage.errors import StorageError, object_error, storage_wide
from ..storage.names import partition_hidden
from ..storage.store import Store, open_store
from . import options
from .options import opt

# scikit-image sample photos that ship inside the package (no network access needed).
SKIMAGE_SAMPLES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "rocket",
)
DEFAULT_CLEAN = "skimage"


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """``raydenoise synth``'s options (the command line is built from these fields)."""

    out: str = opt(help="writes OUT/low/NAME.png and OUT/high/NAME.png")
    noise: str = opt(
        help="gaussian:SIGMA (0-255 scale), poisson-gaussian[:peak=P,read=R], "
        "low-light[:exposure=E,gamma=G,peak=P,read=R,cast=C]"
    )
    clean: str = opt(
        DEFAULT_CLEAN,
        "folder or s3:// prefix of clean photos (default: scikit-image's bundled samples)",
    )
    seed: int = opt(0, "noise seed (each photo's noise also depends on its name)")
    limit: int | None = opt(
        None, "use only the first N photos (natural order)", type=options.positive
    )
    crop: tuple[int, int] | None = opt(
        None, "centered crop HEIGHT,WIDTH (after --max-side)", type=options.crop
    )
    max_side: int | None = opt(
        None, "downscale so the longest side is at most N", type=options.positive
    )
    s3_endpoint: str | None = options.s3_endpoint()


@dataclass(frozen=True)
class SynthResult:
    written: list[str]
    skipped: list[dict]


def image_seed(seed: int, name: str) -> list[int]:
    """Per-image RNG seed: depends only on the global seed and the image's id, not the order."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return [seed, h]


def prepare(clean: np.ndarray, crop: tuple[int, int] | None, max_side: int | None) -> np.ndarray:
    """Optional resize (longest side <= max_side, Lanczos) then optional centered crop."""
    if max_side and max(clean.shape[:2]) > max_side:
        h, w = clean.shape[:2]
        s = max_side / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        clean = np.asarray(Image.fromarray(clean).resize(size, Image.Resampling.LANCZOS))
    if crop:
        ch, cw = crop
        h, w = clean.shape[:2]
        if h < ch or w < cw:
            raise ImageError(f"{w}x{h} is smaller than the crop {cw}x{ch}")
        top, left = (h - ch) // 2, (w - cw) // 2
        clean = clean[top : top + ch, left : left + cw]
    return np.ascontiguousarray(clean)


def _skimage_sources(limit: int | None) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    from skimage import data

    def loader(name: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            arr = getattr(data, name)()
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            return np.ascontiguousarray(arr[..., :3], dtype=np.uint8)

        return load

    names = sorted(SKIMAGE_SAMPLES)[: limit if limit is not None else None]
    for name in names:
        yield name, loader(name)


def _store_sources(
    store: Store, limit: int | None, left_out: list[dict]
) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    keys, hidden = partition_hidden(store.list_keys(), include_hidden=False)
    left_out.extend({"file": store.uri(k), "reason": why} for k, why in hidden)
    keys = sorted(keys, key=natural_key)
    by_id: dict[str, list[str]] = {}
    for key in keys:
        by_id.setdefault(file_id(key), []).append(key)
    # Files that share an id (img.bmp, img.tif) would write the same ID.png: none is used, each
    # is listed with the reason (as ingest rejects an ambiguous id).
    for pid, same in by_id.items():
        if len(same) > 1:
            names = ", ".join(same)
            left_out.extend(
                {
                    "file": store.uri(k),
                    "reason": f"ambiguous: several clean files share the id {pid!r} "
                    f"({names}); rename all but one",
                }
                for k in same
            )
    keys = [k for k in keys if len(by_id[file_id(k)]) == 1]
    if limit is not None:
        keys = keys[:limit]
    for key in keys:
        yield file_id(key), functools.partial(_decode_key, store, key)


def _decode_key(store, key: str) -> np.ndarray:
    return decode_rgb8(store.read_bytes(key))


def run_synth(cfg: SynthConfig, log=print) -> SynthResult:
    """Write ``OUT/low/ID.png`` and ``OUT/high/ID.png`` for every clean photo.

    A clean file that cannot be decoded is skipped and listed (with the reason) in
    ``OUT/synth.json`` and on stderr; nothing is dropped silently.
    """
    spec: NoiseSpec = parse_noise(cfg.noise)
    out = open_store(cfg.out, cfg.s3_endpoint)
    skipped: list[dict] = []
    if cfg.clean == DEFAULT_CLEAN:
        sources = list(_skimage_sources(cfg.limit))
        clean_root = "skimage.data"
    else:
        clean_store = open_store(cfg.clean, cfg.s3_endpoint)
        if clean_store.contains(out):
            raise StorageError(
                f"--out {out.root} is inside --clean {clean_store.root}: outputs would be read as photos"
            )
        sources = list(_store_sources(clean_store, cfg.limit, skipped))
        clean_root = clean_store.root
    if not sources:
        raise ImageError(f"{cfg.clean}: no clean photos found")

    def one(item: tuple[str, Callable[[], np.ndarray]]) -> tuple[str, str | None]:
        name, load = item
        try:
            clean = prepare(load(), cfg.crop, cfg.max_side)
        except ImageError as exc:
            return name, str(exc)
        except Exception as exc:  # unreadable object in the store
            if storage_wide(exc):
                raise StorageError(f"{clean_root}/{name}: {object_error(exc)}") from None
            return name, f"cannot read ({object_error(exc)})"
        noisy = apply_noise(clean, spec, np.random.default_rng(image_seed(cfg.seed, name)))
        try:
            out.write_bytes(f"high/{name}.png", encode_png(clean))
            out.write_bytes(f"low/{name}.png", encode_png(noisy))
        except Exception as exc:
            raise StorageError(
                f"cannot write {out.uri(f'low/{name}.png')}: {object_error(exc)}"
            ) from None
        return name, None

    for item in skipped:
        print(f"synth: skipped {item['file']}: {item['reason']}", file=sys.stderr)
    written = []
    t0 = time.time()
    step = max(1, len(sources) // 10)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for i, (name, err) in enumerate(pool.map(one, sources), 1):
            if err is None:
                written.append(name)
            else:
                skipped.append({"file": f"{clean_root}/{name}", "reason": err})
                print(f"synth: skipped {clean_root}/{name}: {err}", file=sys.stderr)
            if i % step == 0 or i == len(sources):
                log(f"synth: {i}/{len(sources)} images ({time.time() - t0:.1f}s)")
    record = {
        "config": {**asdict(cfg), "noise": str(spec)},
        "clean_source": clean_root,
        "written": len(written),
        "skipped": skipped,
    }
    out.write_bytes("synth.json", json.dumps(record, indent=2, allow_nan=False).encode())
    if not written:
        raise ImageError(f"{cfg.clean}: none of the {len(sources)} clean files could be used")
    return SynthResult(written=written, skipped=skipped)
