"""The argument parser: one function per command (train and denoise have modules of their own)."""

from __future__ import annotations

import argparse

from .._version import __version__
from ..jobs.evaluate import EvaluateConfig
from ..jobs.ingest import IngestConfig
from ..jobs.options import positive
from ..jobs.synth import SynthConfig
from .args import _add_ray, _add_s3
from .denoise_args import _denoise_command
from .help import DESCRIPTION, EXAMPLES
from .options import add_options
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
    add_options(p, SynthConfig)


def _ingest_command(sub) -> None:
    """``raydenoise ingest``."""
    p = sub.add_parser(
        "ingest", help="stream paired (or clean-only) images into Parquet shards (Ray Data)"
    )
    add_options(p, IngestConfig)
    _add_ray(p)


def _evaluate_command(sub) -> None:
    """``raydenoise evaluate``."""
    p = sub.add_parser(
        "evaluate", help="model vs noisy input vs Non-Local Means on a split of a data set"
    )
    add_options(p, EvaluateConfig)
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
    p.add_argument("--epochs", type=positive, default=8, help="training epochs (default 8)")
    _add_ray(p)
