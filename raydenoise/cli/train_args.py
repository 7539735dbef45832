"""``raydenoise train``'s arguments."""

from __future__ import annotations

import argparse

from ..jobs.train import (
    PATCHES_PER_IMAGE,
)
from ..models.networks import NETWORKS
from .args import _add_ray, _add_s3, _finite, _non_negative, _positive


def _train_command(sub) -> None:
    """``raydenoise train``."""
    p = sub.add_parser("train", help="train a denoiser with Ray Train (DDP) on ingested data")
    _train_command_data(p)
    _train_command_run(p)


def _train_command_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="ingest output (folder or s3:// prefix with manifest.json)"
    )
    p.add_argument(
        "--model",
        choices=sorted(NETWORKS),
        default=None,
        help="network to train (required unless --init gives it): "
        + "; ".join(f"{name} ({net.summary})" for name, net in NETWORKS.items()),
    )
    p.add_argument(
        "--storage-path", required=True, help="folder or s3:// prefix for runs and checkpoints"
    )
    p.add_argument(
        "--degrade",
        default=None,
        metavar="SPEC",
        help="train from the clean side: each patch's noisy input is synthesized at every step, e.g. "
        "gaussian:0-50 (sigma drawn per patch), or a comma-separated mix: "
        "gaussian:0-50,poisson-gaussian:peak=5-60 (kinds and parameters as for synth --noise)",
    )
    p.add_argument(
        "--synthetic-data",
        default=None,
        metavar="DATA",
        help="a second ingest output whose clean images get --degrade inputs, mixed with --data's real "
        "pairs (e.g. LOL pairs + synthetic low light from clean photos); val stays --data's",
    )
    p.add_argument(
        "--synthetic-share",
        type=float,
        default=0.5,
        metavar="S",
        help="with --synthetic-data: the share of training patches drawn from it (default 0.5)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="MODEL",
        help="start from this model folder's weights (local or s3://): fine-tune, or continue a "
        "finished run in a new stage; its config gives --model and --width",
    )
    p.add_argument(
        "--ema",
        type=_finite(positive=True),
        default=None,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999) and save it as the model",
    )
    p.add_argument(
        "--in-memory",
        choices=("auto", "yes", "no"),
        default="auto",
        help="decode the train split once and keep it in the workers' memory (auto: when it fits "
        "half the memory Ray offers; no: stream it with Ray Data every epoch)",
    )
    p.add_argument(
        "--patches-per-image",
        type=_positive,
        default=None,
        help=f"random patches per train image per epoch (default {PATCHES_PER_IMAGE}; streaming, one "
        "decode feeds them all)",
    )
    p.add_argument("--name", required=True, help="run name; re-running the same name resumes it")
    p.add_argument(
        "--epochs", type=_positive, default=None, help="default: 10 (seed-ae), 20 (unet)"
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        help="per worker; default 2 (seed-ae), 8 (unet)",
    )


def _train_command_run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="random crop size; 0 = full images. Default: full (seed-ae), 128 (unet)",
    )
    p.add_argument(
        "--lr", type=_finite(positive=True), default=None, help="Adam learning rate; default 1e-3"
    )
    p.add_argument(
        "--loss",
        choices=("bce", "l1", "charbonnier", "mse"),
        default=None,
        help="default: bce (seed-ae), charbonnier (unet, swift); mse fits PSNR best (a last stage)",
    )
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default=None,
        help="learning-rate schedule per epoch; default: constant (seed-ae), cosine (unet)",
    )
    p.add_argument("--width", type=_positive, default=None, help="base channel width (default 32)")
    p.add_argument(
        "--num-workers", type=_positive, default=1, help="DDP workers (Ray Train actors)"
    )
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (bf16 autocast)")
    p.add_argument(
        "--cpus-per-worker",
        type=_finite(positive=True),
        default=None,
        help="CPUs reserved per worker; torch runs that many threads (default: in memory, all the "
        "cluster's CPUs shared by the workers; streaming, 1, less when the data pipeline would get none)",
    )
    p.add_argument(
        "--max-failures",
        type=_non_negative,
        default=0,
        help="restart the worker group up to K times after a worker or node dies (from the last checkpoint)",
    )
    p.add_argument(
        "--placement",
        choices=("pack", "spread"),
        default="pack",
        help="pack: workers on as few nodes as fit (default, least network); spread: on different "
        "nodes where possible (a lost node takes fewer workers)",
    )
    p.add_argument(
        "--max-steps-per-epoch",
        type=_positive,
        default=None,
        help="cap the optimizer steps of an epoch (quick trials)",
    )
    p.add_argument(
        "--time-limit",
        type=_finite(positive=True),
        default=None,
        help="stop after this many seconds of training",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of weights, patches and synthesized noise (default 0)",
    )
    _add_s3(p)
    _add_ray(p)
