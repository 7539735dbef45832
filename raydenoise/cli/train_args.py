"""``raydenoise train``'s arguments: TrainConfig's options (jobs/train/config.py)."""

from __future__ import annotations

from ..jobs.train import TrainConfig
from .args import _add_ray
from .options import add_options


def _train_command(sub) -> None:
    """``raydenoise train``."""
    p = sub.add_parser("train", help="train a denoiser with Ray Train (DDP) on ingested data")
    add_options(p, TrainConfig)
    _add_ray(p)
