"""evaluate's configuration and the baselines it may compare against."""

from __future__ import annotations

from dataclasses import dataclass

# --baselines name -> the method's name in the table
BASELINES = {"identity": "noisy input", "nlm": "nl-means", "bm3d": "cbm3d", "gamma": "gamma"}


DEFAULT_BASELINES = ("identity", "nlm")


class EvaluateError(Exception):
    """A user-facing failure: missing data, empty split, bad model."""


@dataclass(frozen=True)
class EvaluateConfig:
    data: str
    model: str
    split: str = "test"
    out: str | None = None  # default: MODEL/eval/<split>
    workers: int | None = None  # None: one per CPU, at most one per shard
    tile: int | None = None
    s3_endpoint: str | None = None
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    dry_run: bool = False  # read the manifest, check the model, time a few pairs; nothing written
    strength: float = (
        1.0  # as denoise --strength: x the estimated noise level (or blend); 0 = the input
    )
    sigma: float | None = (
        None  # as denoise --sigma: a fixed noise level (0-255) for a conditioned model
    )
    engine: str = "auto"  # as denoise --engine: torch, onnxruntime or auto
    tta: bool = False  # as denoise --tta: the mean of 8 flips/rotations


def parse_baselines(text: str) -> tuple[str, ...]:
    """``nlm,bm3d`` -> ("nlm", "bm3d"); ValueError naming the choices for an unknown one."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    return names


def check_baselines(names: tuple[str, ...]) -> None:
    """EvaluateError for an unknown baseline, or for bm3d when its package is missing."""
    try:
        parse_baselines(",".join(names))
    except ValueError as exc:
        raise EvaluateError(f"--baselines: {exc}") from None
    if "bm3d" in names:
        try:
            import bm3d  # noqa: F401
        except ImportError:
            raise EvaluateError(
                "--baselines bm3d needs the optional bm3d package (CBM3D): "
                "pip install bm3d (or raydenoise[bm3d]), or leave bm3d out"
            ) from None
