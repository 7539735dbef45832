"""Noise models that turn a clean 8-bit RGB photo into its degraded partner. No Ray here.

Kinds (the ``--noise`` argument), each optionally followed by ``:`` and parameters:
- ``gaussian:SIGMA`` — additive white Gaussian noise, SIGMA on the 0-255 scale.
- ``poisson-gaussian[:peak=P,read=R]`` — shot noise with P photo-electrons at full white
  (default 30) plus Gaussian read noise R on the 0-255 scale (default 5).
- ``low-light[:exposure=E,gamma=G,peak=P,read=R,cast=C]`` — LOL-like capture: the image is darkened
  by a gamma curve (default G drawn per image from 1.6..2.2) and an exposure drop (default E drawn
  per image from 0.15..0.35; LOL's low images average about 5% of full scale), optionally given a
  colour cast (red and blue multiplied by gains C drawn independently per image, green kept; e.g.
  ``cast=0.6-1.35``, the 5-95th percentiles of LOL our485's low/normal channel ratios), then shot
  noise with P electrons at full white (default 1000) and Gaussian read noise R on the 0-255
  scale (default 2.0) are added, then quantized to 8 bits.
- ``camera[:peak=P,read=R]`` — a camera's noise after its processing: the photo is taken back to
  linear light (gamma 2.2), divided by white-balance gains (red 1.6-2.4, blue 1.3-2.0, drawn per
  image) to raw, given shot noise (P electrons at full white, default 200) and read noise (R on
  the 0-255 raw scale, default 2) on an RGGB Bayer mosaic, and the noise is demosaicked
  bilinearly (so neighbouring pixels and channels share it, as in a camera's output), gained
  back and tone-mapped with the photo. The clean photo is the noise-free output of the same
  pipeline, i.e. the photo itself. A grayscale photo gets the same noise without the mosaic.
- ``jpeg:q=Q`` — JPEG compression alone at quality Q (1-100, Pillow's encoder, 4:2:0 chroma).

Every kind also takes ``jpeg=Q``: the degraded image is then stored as a JPEG of quality Q (as a
camera or a phone writes it), e.g. ``camera:peak=50-1000,jpeg=70-95``.

Any parameter may be a range ``LO-HI`` (``gaussian:0-50``, ``poisson-gaussian:peak=10-100``): a
value is drawn uniformly from it for every image (or patch) degraded, for blind training and
varied data sets. ``parse_degrade`` reads a comma-separated mix of kinds
(``gaussian:0-50,poisson-gaussian:peak=5-60``); ``degrade`` picks one kind per image, uniformly.

Every kind ends with rounding to 8 bits. All randomness comes from the ``numpy.random.Generator``
the caller passes, so results are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import RaydenoiseError

KINDS = ("gaussian", "poisson-gaussian", "low-light", "camera", "jpeg")


class NoiseSpecError(RaydenoiseError, ValueError):
    """A ``--noise`` argument that cannot be parsed; the message says what is expected."""


@dataclass(frozen=True)
class NoiseSpec:
    kind: str
    params: dict[str, float | tuple[float, float]] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        if self.kind == "gaussian" and set(self.params) == {"sigma"}:
            return f"gaussian:{_fmt(self.params['sigma'])}"
        return self.kind + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()))


def _fmt(value: float | tuple[float, float]) -> str:
    return f"{value[0]:g}-{value[1]:g}" if isinstance(value, tuple) else f"{value:g}"


def _number(text: str, spec: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise NoiseSpecError(
            f"{spec!r}: {name} must be a number or a range LO-HI, got {text!r}"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise NoiseSpecError(f"{spec!r}: {name} must be a finite number >= 0")
    return value


def _value(text: str, spec: str, name: str) -> float | tuple[float, float]:
    """``25`` -> 25.0; ``0-50`` -> (0.0, 50.0). Negative numbers are refused anyway, so '-' is
    only ever the range separator."""
    if text.strip().startswith("-"):
        raise NoiseSpecError(f"{spec!r}: {name} must be a finite number >= 0")
    lo, dash, hi = text.strip().partition("-")
    if not dash:
        return _number(lo, spec, name)
    low, high = _number(lo, spec, name), _number(hi, spec, name)
    if high < low:
        raise NoiseSpecError(
            f"{spec!r}: {name} range {text.strip()!r} must be LO-HI with 0 <= LO <= HI"
        )
    return (low, high) if high > low else low


_ALLOWED = {
    "gaussian": {"sigma", "jpeg"},
    "poisson-gaussian": {"peak", "read", "jpeg"},
    "low-light": {"exposure", "gamma", "peak", "read", "cast", "jpeg"},
    "camera": {"peak", "read", "jpeg"},
    "jpeg": {"q"},
}


def parse_noise(text: str) -> NoiseSpec:
    """Parse ``gaussian:25``, ``poisson-gaussian``, ``low-light:exposure=0.1`` and the like."""
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise NoiseSpecError(f"unknown noise kind {kind!r}; choose one of {', '.join(KINDS)}")
    params: dict[str, float | tuple[float, float]] = {}
    if kind == "gaussian":
        if not rest:
            raise NoiseSpecError("gaussian needs a sigma on the 0-255 scale, e.g. gaussian:25")
        rest = rest if "=" in rest.split(",")[0] else f"sigma={rest.strip()}"
    for item in filter(None, (p.strip() for p in rest.split(","))):
        name, eq, value = item.partition("=")
        if not eq:
            raise NoiseSpecError(f"{text!r}: parameter {item!r} should look like name=value")
        name = name.strip()
        if name not in _ALLOWED[kind]:
            allowed = ", ".join(sorted(_ALLOWED[kind]))
            raise NoiseSpecError(f"{text!r}: {kind} takes {allowed}, not {name!r}")
        params[name] = _value(value, text, name)
    for key in ("exposure", "peak", "cast"):
        if key in params and _low(params[key]) <= 0:
            raise NoiseSpecError(f"{text!r}: {key} must be > 0")
    if kind == "jpeg" and "q" not in params:
        raise NoiseSpecError("jpeg needs a quality, e.g. jpeg:q=75 or jpeg:q=30-95")
    for key in ("jpeg", "q"):
        if key in params and not (_low(params[key]) >= 1 and _high(params[key]) <= 100):
            raise NoiseSpecError(f"{text!r}: {key} is a JPEG quality from 1 to 100")
    return NoiseSpec(kind, params)


def _low(value: float | tuple[float, float]) -> float:
    return value[0] if isinstance(value, tuple) else value


def _high(value: float | tuple[float, float]) -> float:
    return value[1] if isinstance(value, tuple) else value


def parse_degrade(text: str) -> list[NoiseSpec]:
    """A comma-separated mix of noise kinds, e.g. ``gaussian:0-50,poisson-gaussian:peak=5-60,read=2``:
    a part that starts with a kind's name begins a new kind, any other part is a parameter of
    the kind before it. NoiseSpecError for an empty or bad spec."""
    groups: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.partition(":")[0].strip().lower() in KINDS or not groups:
            groups.append(part)
        else:
            groups[-1] += "," + part
    if not groups:
        raise NoiseSpecError(
            f"{text!r}: expected one or more noise kinds ({', '.join(KINDS)}), comma-separated"
        )
    return [parse_noise(g) for g in groups]


def degrade(clean: np.ndarray, specs: list[NoiseSpec], rng: np.random.Generator) -> np.ndarray:
    """Degrade ``clean`` with one of ``specs``, chosen uniformly (see apply_noise)."""
    return apply_noise(clean, _pick(specs, rng), rng)


def _pick(specs: list[NoiseSpec], rng: np.random.Generator) -> NoiseSpec:
    return specs[int(rng.integers(len(specs)))] if len(specs) > 1 else specs[0]


def degrade_with_level(
    clean: np.ndarray, specs: list[NoiseSpec], rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """(degraded, noise level): one of ``specs`` chosen uniformly, and the level a denoiser
    conditioned on the noise level is told for it, on the 0-255 scale: sigma for Gaussian noise,
    otherwise what ``noise_level.estimate_noise`` measures of the noise itself (degraded - clean),
    i.e. what the blind estimate of a photo with this noise reads."""
    from .noise_level import estimate_noise

    noisy, sigma = _apply(clean, _pick(specs, rng), rng)
    if sigma is None:
        sigma = estimate_noise(noisy.astype(np.float32) - clean.astype(np.float32))
    return noisy, sigma


def _quantize(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def apply_noise(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``clean`` (uint8, (H, W, C), C = 1 or 3) according to ``spec``; returns uint8 of the
    same shape. A range parameter is drawn once for the whole image."""
    return _apply(clean, spec, rng)[0]


def _apply(
    clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator
) -> tuple[np.ndarray, float | None]:
    """(degraded, the Gaussian sigma when the noise is white Gaussian without JPEG, else None)."""
    if clean.dtype != np.uint8:
        raise ValueError(f"clean image must be uint8, got {clean.dtype}")
    x = clean.astype(np.float32) / 255.0

    def get(name: str, default: float | tuple[float, float]) -> float:
        value = spec.params.get(name, default)
        return float(rng.uniform(*value)) if isinstance(value, tuple) else value

    sigma = None
    if spec.kind == "gaussian":
        sigma = get("sigma", 0.0)
        y = x + rng.normal(0.0, sigma / 255.0, size=x.shape).astype(np.float32)
    elif spec.kind == "poisson-gaussian":
        peak = get("peak", 30.0)
        y = rng.poisson(x * peak).astype(np.float32) / peak
        y += rng.normal(0.0, get("read", 5.0) / 255.0, size=x.shape).astype(np.float32)
    elif spec.kind == "low-light":
        gamma = get("gamma", (1.6, 2.2))
        exposure = get("exposure", (0.15, 0.35))
        peak = get("peak", 1000.0)
        dark = exposure * np.power(x, gamma)
        if "cast" in spec.params and x.shape[-1] == 3:
            gains = np.array([get("cast", 1.0), 1.0, get("cast", 1.0)], np.float32)
            dark = np.clip(dark * gains, 0.0, 1.0)
        y = rng.poisson(dark * peak).astype(np.float32) / peak
        y += rng.normal(0.0, get("read", 2.0) / 255.0, size=x.shape).astype(np.float32)
    elif spec.kind == "camera":
        y = _camera(x, get("peak", 200.0), get("read", 2.0) / 255.0, rng)
    elif spec.kind == "jpeg":
        y = x
    else:  # parse_noise only builds known kinds
        raise NoiseSpecError(f"unknown noise kind {spec.kind!r}")
    out = _quantize(y)
    quality = spec.params.get("q" if spec.kind == "jpeg" else "jpeg")
    if quality is not None:
        out = jpeg_roundtrip(out, round(get("q" if spec.kind == "jpeg" else "jpeg", quality)))
        sigma = None
    return out, sigma


GAMMA = 2.2  # the tone curve of the camera kind (sRGB is close to it)


def _camera(x: np.ndarray, peak: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """The camera kind on float (H, W, C) in [0, 1] (see the module doc)."""
    linear = np.power(x, GAMMA)
    h, w, c = x.shape
    if c == 1:
        gains = np.ones(1, np.float32)
        channel = np.zeros((h, w), np.int64)
    else:
        gains = np.array([rng.uniform(1.6, 2.4), 1.0, rng.uniform(1.3, 2.0)], np.float32)
        channel = np.ones((h, w), np.int64)  # RGGB: green on the checkerboard
        channel[0::2, 0::2], channel[1::2, 1::2] = 0, 2
    raw = np.take_along_axis(linear, channel[..., None], axis=2)[..., 0] / gains[channel]
    std = np.sqrt(np.clip(raw, 0, None) / peak + read**2)
    noise = (rng.normal(0.0, 1.0, size=(h, w)) * std * gains[channel]).astype(np.float32)
    spread = noise[..., None] if c == 1 else _demosaic(noise, channel)
    return np.power(np.clip(linear + spread, 0.0, 1.0), 1.0 / GAMMA)


def _demosaic(mosaic: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Bilinear demosaicking of an RGGB mosaic (H, W) -> (H, W, 3): each channel's missing
    samples are the mean of its nearest known neighbours."""
    from scipy.ndimage import convolve

    rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
    g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4
    planes = [
        convolve(
            np.where(channel == k, mosaic, 0.0).astype(np.float32),
            g if k == 1 else rb,
            mode="mirror",
        )
        for k in range(3)
    ]
    return np.stack(planes, axis=2)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (uint8 (H, W, C), C = 1 or 3) encoded as a JPEG of ``quality`` and decoded."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(
        buf, "JPEG", quality=quality
    )
    out = np.array(Image.open(io.BytesIO(buf.getvalue())))
    return out[..., None] if out.ndim == 2 else out
