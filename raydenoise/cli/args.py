"""Argument types that reject bad values with a clear message, and the options several commands
share.
"""

from __future__ import annotations

import argparse
import math

from ..imaging.images import MIN_TILE
from ..imaging.pairing import parse_split
from ..jobs.evaluate import (
    parse_baselines,
)


def _crop(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected HEIGHT,WIDTH such as 400,600"
        ) from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return h, w


def _split(text: str) -> tuple[float, float, float]:
    try:
        return parse_split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(minimum: int):
    """argparse type: a whole number >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


_positive = _whole(1)


_non_negative = _whole(0)


def _finite(minimum: float | None = None, positive: bool = False):
    """argparse type: a finite float, optionally >= minimum or > 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum:g}")
        return value

    return parse


def _baselines(text: str) -> tuple[str, ...]:
    try:
        return parse_baselines(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tile(text: str) -> int:
    value = _positive(text)
    if value < MIN_TILE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: tiles must be at least {MIN_TILE} pixels (smaller ones are mostly margin)"
        )
    return value


def _add_hidden(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--include-hidden",
        action="store_true",
        help="also use files and folders whose names start with '.' (by default they are listed in the "
        "report as excluded)",
    )


def _add_strength(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strength",
        type=_finite(minimum=0),
        default=None,
        metavar="S",
        help="how hard to denoise: a conditioned model (builtin:denoise) is given S x the noise level "
        "estimated per image, a blind one's output is blended with the input by S; 0 returns every "
        "image unchanged (default 1, at most 4)",
    )
    p.add_argument(
        "--sigma",
        type=_finite(minimum=0),
        default=None,
        metavar="SIGMA",
        help="give a conditioned model this fixed noise level (0-255 scale, e.g. 15) instead of the "
        "per-image estimate; cannot be combined with --strength",
    )


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="what runs the network: onnxruntime (ONNX Runtime; raydenoise's models are exported to "
        "ONNX once per job), torch, or auto (default: ONNX Runtime on CPUs, where it is faster, "
        "torch on GPUs). An .onnx --model runs with ONNX Runtime",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="self-ensemble: average the outputs of the 8 flips and rotations of each image (8x the time, "
        "a little more quality)",
    )


def _add_s3(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--s3-endpoint",
        default=None,
        help="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL, else AWS). "
        "Credentials come from the standard AWS chain.",
    )


def _add_ray(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, a cluster started with `ray start` "
        "on this machine, or a new local one)",
    )
