"""The options of the command line that are not a job's: which Ray cluster to join, and the S3
endpoint of a command without a config (export)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..jobs import options
from .options import add_options


def _add_ray(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, a cluster started with `ray start` "
        "on this machine, or a new local one)",
    )


@dataclass(frozen=True)
class _S3:
    s3_endpoint: str | None = options.s3_endpoint()


def _add_s3(p: argparse.ArgumentParser) -> None:
    add_options(p, _S3)
