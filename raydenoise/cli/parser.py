"""The argument parser: one function per command (train and denoise have modules of their own)."""

from __future__ import annotations

import argparse

from .._version import __version__
from ..jobs.evaluate import (
    DEFAULT_BASELINES,
)
from ..jobs.synth import DEFAULT_CLEAN
from .args import (
    _add_engine,
    _add_hidden,
    _add_ray,
    _add_s3,
    _add_strength,
    _baselines,
    _crop,
    _positive,
    _split,
    _tile,
)
from .denoise_args import _denoise_command
from .help import DESCRIPTION, EXAMPLES
from .train_args import _train_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydenoise",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"raydenoise {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Ray's own log lines and progress bars too (by default they go to a log file "
        "whose path is printed)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def add(name: str, **kw) -> argparse.ArgumentParser:
        return add_parser(
            name,
            parents=[common],
            epilog=EXAMPLES[name],
            description=kw["help"][0].upper() + kw["help"][1:] + ".",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )

    sub.add_parser = add  # type: ignore[method-assign]
    _synth_command(sub)
    _ingest_command(sub)
    _train_command(sub)
    _denoise_command(sub)
    _evaluate_command(sub)
    _models_command(sub)
    _export_command(sub)
    _demo_command(sub)
    return parser


def _synth_command(sub) -> None:
    """``raydenoise synth``."""
    p = sub.add_parser("synth", help="make a paired low/high data set from clean photos")
    p.add_argument(
        "--clean",
        default=DEFAULT_CLEAN,
        help="folder or s3:// prefix of clean photos (default: scikit-image's bundled samples)",
    )
    p.add_argument("--out", required=True, help="writes OUT/low/NAME.png and OUT/high/NAME.png")
    p.add_argument(
        "--noise",
        required=True,
        help="gaussian:SIGMA (0-255 scale), poisson-gaussian[:peak=P,read=R], "
        "low-light[:exposure=E,gamma=G,peak=P,read=R]",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="noise seed (each photo's noise also depends on its name)",
    )
    p.add_argument(
        "--limit", type=_positive, default=None, help="use only the first N photos (natural order)"
    )
    p.add_argument(
        "--crop", type=_crop, default=None, help="centered crop HEIGHT,WIDTH (after --max-side)"
    )
    p.add_argument(
        "--max-side",
        type=_positive,
        default=None,
        help="downscale so the longest side is at most N",
    )
    _add_s3(p)


def _ingest_command(sub) -> None:
    """``raydenoise ingest``."""
    p = sub.add_parser(
        "ingest", help="stream paired (or clean-only) images into Parquet shards (Ray Data)"
    )
    p.add_argument(
        "--low",
        default=None,
        help="folder or s3:// prefix of degraded images; leave it out for a clean-only data set "
        "(train it with --degrade)",
    )
    p.add_argument(
        "--high", required=True, help="folder or s3:// prefix of clean images, same relative paths"
    )
    p.add_argument(
        "--out", required=True, help="folder or s3:// prefix for shards and manifest.json"
    )
    p.add_argument(
        "--rows-per-shard",
        type=_positive,
        default=128,
        help="pairs per Parquet shard (default 128; a shard is one unit of parallel work)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=42,
        help="split seed: a pair's split depends only on its name and this seed (default 42)",
    )
    p.add_argument(
        "--split",
        type=_split,
        default=(0.7, 0.2, 0.1),
        help="train,val,test fractions (default 0.7,0.2,0.1)",
    )
    _add_hidden(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list and pair only (no Ray, nothing written): pairs per split, shards, rejected files and "
        "why, and a rough time estimate from a few pairs converted here",
    )
    _add_s3(p)
    _add_ray(p)


def _evaluate_command(sub) -> None:
    """``raydenoise evaluate``."""
    p = sub.add_parser(
        "evaluate", help="model vs noisy input vs Non-Local Means on a split of a data set"
    )
    p.add_argument(
        "--data", required=True, help="ingest output (folder or s3:// prefix with manifest.json)"
    )
    p.add_argument(
        "--model",
        required=True,
        help="builtin:NAME, or a model folder (config.json + model.safetensors), local or s3://",
    )
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="test",
        help="which split to score (default test)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="where table.csv/table.json/per_image.csv go (default: MODEL/eval/SPLIT)",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="scoring actors (default: one per CPU, at most one per shard)",
    )
    p.add_argument(
        "--tile", type=_tile, default=None, help="tile size in pixels (default: automatic)"
    )
    _add_strength(p)
    _add_engine(p)
    p.add_argument(
        "--baselines",
        type=_baselines,
        default=DEFAULT_BASELINES,
        help="comma-separated methods scored beside the model: identity (the noisy input), nlm "
        "(Non-Local Means), bm3d (CBM3D; needs `pip install bm3d`), gamma (a gamma curve, for "
        "low light). Default: identity,nlm",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the data set and the model and time a few pairs here, then stop: the pairs and "
        "shards of the split and a time estimate; starts no Ray, writes nothing",
    )
    _add_s3(p)
    _add_ray(p)


def _models_command(sub) -> None:
    """``raydenoise models``."""
    sub.add_parser(
        "models",
        help="list the built-in models (usable as --model builtin:NAME, no training needed)",
    )


def _export_command(sub) -> None:
    """``raydenoise export``."""
    p = sub.add_parser("export", help="export a model to an ONNX graph (dynamic height and width)")
    p.add_argument("--model", required=True, help="builtin:NAME, or a model folder, local or s3://")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the graph format (onnx)")
    p.add_argument("--out", required=True, help="the .onnx file to write (local or s3://)")
    _add_s3(p)


def _demo_command(sub) -> None:
    """``raydenoise demo``."""
    p = sub.add_parser("demo", help="run the whole pipeline on scikit-image's sample photos")
    p.add_argument(
        "--out", default="demo-out", help="folder for everything the demo writes (default demo-out)"
    )
    p.add_argument("--epochs", type=_positive, default=8, help="training epochs (default 8)")
    _add_ray(p)
