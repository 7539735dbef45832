"""Each job's options, written once: a field of a job's config dataclass made with :func:`opt`
carries its command-line flag, help, value type and choices beside its default, and the CLI
builds its parser from them (cli/options.py). A new option is one field.

The value types here reject a bad value with a message that names it (argparse shows it as
``argument --tile: '8': tiles must be at least ...``). The options several jobs share are
functions below (s3_endpoint(), strength(), ...), so each is written once too.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any

from ..imaging.images import MIN_TILE
from ..imaging.noise_level import MAX_SIGMA, MAX_STRENGTH
from ..imaging.pairing import parse_split
from ..models.engines import ENGINES


@dataclass(frozen=True)
class Opt:
    """What the command line needs to know of a config field."""

    help: str
    type: Callable[[str], Any] | None = None  # None: from the field's annotation
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    flag: str | None = None  # default: --field-name
    required: bool = False  # the command line must give it


def opt(default: Any = MISSING, help: str = "", *, required: bool | None = None, **kw: Any) -> Any:
    """A config field with its command-line option. Without a default the field is required in
    the config and, unless ``required=False`` (a value another option decides, such as train's
    per-network defaults), on the command line too."""
    cli = Opt(help, required=default is MISSING if required is None else required, **kw)
    return field(default=default, metadata={"cli": cli})  # immutable defaults only (frozen configs)


def option_of(f) -> Opt | None:
    """The command-line option of a dataclass field (None: not an option)."""
    return f.metadata.get("cli")


# -- value types --------------------------------------------------------------------------


def whole(minimum: int | None = None) -> Callable[[str], int]:
    """A whole number, at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


positive = whole(1)


def finite(minimum: float | None = None, positive: bool = False) -> Callable[[str], float]:
    """A finite number, optionally at least ``minimum`` or greater than 0."""

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


def tile(text: str) -> int:
    value = positive(text)
    if value < MIN_TILE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: tiles must be at least {MIN_TILE} pixels (smaller ones are mostly margin)"
        )
    return value


def crop(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected HEIGHT,WIDTH such as 400,600"
        ) from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return h, w


def parsed_by(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A value type from a parser that raises ValueError with the message to show."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    checked.__name__ = getattr(parse, "__name__", "value")
    return checked


split = parsed_by(parse_split)


def by_annotation(annotation: str) -> Callable[[str], Any] | None:
    """The value type of a field by its annotation (``int | None`` -> whole numbers)."""
    base = annotation.split("|")[0].strip()
    return {"int": whole(), "float": finite()}.get(base)


# -- options several jobs share -----------------------------------------------------------


def s3_endpoint() -> Any:
    return opt(
        None,
        "S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL, else AWS). "
        "Credentials come from the standard AWS chain.",
    )


def include_hidden() -> Any:
    return opt(
        False,
        "also use files and folders whose names start with '.' (by default they are listed in "
        "the report as excluded)",
    )


def dry_run(help: str) -> Any:
    return opt(False, help)


def strength() -> Any:
    return opt(
        1.0,
        "how hard to denoise: a conditioned model (builtin:denoise) is given S x the noise level "
        "estimated per image, a blind one's output is blended with the input by S; 0 returns "
        f"every image unchanged (default 1, at most {MAX_STRENGTH:g})",
        type=finite(minimum=0),
        metavar="S",
    )


def sigma() -> Any:
    return opt(
        None,
        "give a conditioned model this fixed noise level (0-255 scale, e.g. 15, at most "
        f"{MAX_SIGMA:g}) instead of the per-image estimate; cannot be combined with --strength",
        type=finite(minimum=0),
        metavar="SIGMA",
    )


def engine() -> Any:
    return opt(
        "auto",
        "what runs the network: onnxruntime (ONNX Runtime; raydenoise's models are exported to "
        "ONNX once per job), torch, or auto (default: ONNX Runtime on CPUs, where it is faster, "
        "torch on GPUs); torch-bf16: torch with its convolutions in bfloat16 for about 0.01 dB, up "
        "to 1.6x faster per core on CPUs with bfloat16 units (slower on some), refused on others. An "
        ".onnx --model runs with ONNX Runtime",
        choices=ENGINES,
    )


def tta() -> Any:
    return opt(
        False,
        "self-ensemble: average the outputs of the 8 flips and rotations of each image (8x the "
        "time, a little more quality)",
    )


def tile_size(help: str) -> Any:
    return opt(None, help, type=tile)
