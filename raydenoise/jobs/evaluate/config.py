"""evaluate's configuration and the baselines it may compare against."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import RaydenoiseError
from .. import options
from ..options import opt

# --baselines name -> the method's name in the table
BASELINES = {"identity": "noisy input", "nlm": "nl-means", "bm3d": "cbm3d", "gamma": "gamma"}


DEFAULT_BASELINES = ("identity", "nlm")


class EvaluateError(RaydenoiseError):
    """A user-facing failure: missing data, empty split, bad model."""


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """``raydenoise evaluate``'s options (the command line is built from these fields)."""

    data: str = opt(help="ingest output (folder or s3:// prefix with manifest.json)")
    model: str = opt(
        help="builtin:NAME, or a model folder (config.json + model.safetensors), local or s3://"
    )
    split: str = opt(
        "test", "which split to score (default test)", choices=("train", "val", "test")
    )
    out: str | None = opt(
        None, "where table.csv/table.json/per_image.csv go (default: MODEL/eval/SPLIT)"
    )
    workers: int | None = opt(
        None,
        "scoring actors (default: one per CPU, at most one per shard)",
        type=options.positive,
    )
    tile: int | None = options.tile_size("tile size in pixels (default: automatic)")
    strength: float = options.strength()
    sigma: float | None = options.sigma()
    engine: str = options.engine()
    tta: bool = options.tta()
    baselines: tuple[str, ...] = opt(
        DEFAULT_BASELINES,
        "comma-separated methods scored beside the model: identity (the noisy input), nlm "
        "(Non-Local Means), bm3d (CBM3D; needs `pip install bm3d`), gamma (a gamma curve, for "
        "low light). Default: identity,nlm",
        type=options.parsed_by(lambda text: parse_baselines(text)),
    )
    dry_run: bool = options.dry_run(
        "check the data set and the model and time a few pairs here, then stop: the pairs and "
        "shards of the split and a time estimate; starts no Ray, writes nothing"
    )
    s3_endpoint: str | None = options.s3_endpoint()


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
