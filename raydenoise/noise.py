"""Noise models that turn a clean 8-bit RGB photo into its degraded partner. No Ray here.

Kinds (the ``--noise`` argument), each optionally followed by ``:`` and parameters:
- ``gaussian:SIGMA`` — additive white Gaussian noise, SIGMA on the 0-255 scale.
- ``poisson-gaussian[:peak=P,read=R]`` — shot noise with P photo-electrons at full white
  (default 30) plus Gaussian read noise R on the 0-255 scale (default 5).
- ``low-light[:exposure=E,gamma=G,peak=P,read=R]`` — LOL-like capture: the image is darkened by a
  gamma curve (default G drawn per image from 1.6..2.2) and an exposure drop (default E drawn
  per image from 0.15..0.35; LOL's low images average about 5% of full scale), then shot noise with P electrons at full white (default 1000)
  and Gaussian read noise R on the 0-255 scale (default 2.0) are added, then quantized to 8 bits.

Every kind ends with rounding to 8 bits. All randomness comes from the ``numpy.random.Generator``
the caller passes, so results are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("gaussian", "poisson-gaussian", "low-light")


class NoiseSpecError(ValueError):
    """A ``--noise`` argument that cannot be parsed; the message says what is expected."""


@dataclass(frozen=True)
class NoiseSpec:
    kind: str
    params: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        if self.kind == "gaussian":
            return f"gaussian:{self.params['sigma']:g}"
        return self.kind + ":" + ",".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))


_ALLOWED = {
    "gaussian": {"sigma"},
    "poisson-gaussian": {"peak", "read"},
    "low-light": {"exposure", "gamma", "peak", "read"},
}


def parse_noise(text: str) -> NoiseSpec:
    """Parse ``gaussian:25``, ``poisson-gaussian``, ``low-light:exposure=0.1`` and the like."""
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise NoiseSpecError(f"unknown noise kind {kind!r}; choose one of {', '.join(KINDS)}")
    params: dict[str, float] = {}
    if kind == "gaussian":
        if not rest:
            raise NoiseSpecError("gaussian needs a sigma on the 0-255 scale, e.g. gaussian:25")
        rest = rest if "=" in rest else f"sigma={rest}"
    for item in filter(None, (p.strip() for p in rest.split(","))):
        name, eq, value = item.partition("=")
        if not eq:
            raise NoiseSpecError(f"{text!r}: parameter {item!r} should look like name=value")
        name = name.strip()
        if name not in _ALLOWED[kind]:
            allowed = ", ".join(sorted(_ALLOWED[kind]))
            raise NoiseSpecError(f"{text!r}: {kind} takes {allowed}, not {name!r}")
        try:
            params[name] = float(value)
        except ValueError:
            raise NoiseSpecError(f"{text!r}: {name} must be a number, got {value!r}") from None
        if not np.isfinite(params[name]) or params[name] < 0:
            raise NoiseSpecError(f"{text!r}: {name} must be a finite number >= 0")
    if kind == "low-light" and params.get("exposure", 0.1) <= 0:
        raise NoiseSpecError(f"{text!r}: exposure must be > 0")
    for key in ("peak",):
        if key in params and params[key] <= 0:
            raise NoiseSpecError(f"{text!r}: {key} must be > 0")
    return NoiseSpec(kind, params)


def _quantize(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def apply_noise(clean: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``clean`` (uint8, (H, W, 3)) according to ``spec``; returns uint8 of the same shape."""
    if clean.dtype != np.uint8:
        raise ValueError(f"clean image must be uint8, got {clean.dtype}")
    x = clean.astype(np.float32) / 255.0
    p = spec.params
    if spec.kind == "gaussian":
        y = x + rng.normal(0.0, p["sigma"] / 255.0, size=x.shape).astype(np.float32)
    elif spec.kind == "poisson-gaussian":
        peak = p.get("peak", 30.0)
        y = rng.poisson(x * peak).astype(np.float32) / peak
        y += rng.normal(0.0, p.get("read", 5.0) / 255.0, size=x.shape).astype(np.float32)
    elif spec.kind == "low-light":
        gamma = p["gamma"] if "gamma" in p else rng.uniform(1.6, 2.2)
        exposure = p["exposure"] if "exposure" in p else rng.uniform(0.15, 0.35)
        peak = p.get("peak", 1000.0)
        dark = exposure * np.power(x, gamma)
        y = rng.poisson(dark * peak).astype(np.float32) / peak
        y += rng.normal(0.0, p.get("read", 2.0) / 255.0, size=x.shape).astype(np.float32)
    else:  # parse_noise only builds known kinds
        raise NoiseSpecError(f"unknown noise kind {spec.kind!r}")
    return _quantize(y)
