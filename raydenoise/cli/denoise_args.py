"""``raydenoise denoise``'s arguments: DenoiseConfig's options (jobs/denoise/config.py)."""

from __future__ import annotations

from ..jobs.denoise import DenoiseConfig
from .args import _add_ray
from .options import add_options


def _denoise_command(sub) -> None:
    """``raydenoise denoise``."""
    p = sub.add_parser(
        "denoise", help="denoise every image under a folder or s3:// prefix (Ray Data)"
    )
    add_options(p, DenoiseConfig)
    _add_ray(p)
