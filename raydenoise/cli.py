"""The ``raydenoise`` command line: each subcommand builds its config and calls one function."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import traceback

from ._version import __version__
from .artifacts import ArtifactError
from .console import capture, console, release
from .dataset import DatasetError
from .denoise import REPORT_DIR, DenoiseConfig, DenoiseError, run_denoise
from .engines import EngineError
from .evaluate import (
    DEFAULT_BASELINES,
    EvaluateConfig,
    EvaluateError,
    parse_baselines,
    run_evaluate,
)
from .images import DEFAULT_MAX_PIXELS, MIN_TILE, ImageError
from .ingest import IngestConfig, IngestError, run_ingest
from .networks import NETWORKS
from .noise import NoiseSpecError
from .pairing import parse_split
from .plan import FORMATS, KEEP
from .session import RayJoinError, ensure_ray
from .storage import StorageError
from .synth import DEFAULT_CLEAN, SynthConfig, run_synth
from .train import (
    PATCHES_PER_IMAGE,
    TrainError,
    init_model_config,
    resolve_config,
    run_train,
)

# The user's mistakes (bad arguments, data, models, storage, cluster): one line, no traceback.
# Anything else is a bug of ours and keeps its traceback.
USER_ERRORS = (
    IngestError,
    DatasetError,
    StorageError,
    NoiseSpecError,
    ImageError,
    ArtifactError,
    EngineError,
    TrainError,
    DenoiseError,
    EvaluateError,
    RayJoinError,
)

DESCRIPTION = """Denoise and enhance folders and buckets of noisy or low-light photos with Ray.

Clean a folder or an s3:// prefix with a built-in model, no training needed:
  raydenoise denoise --input photos/ --output clean/
Or train your own: synth (or your own pairs) -> ingest -> train -> denoise / evaluate.
`raydenoise COMMAND --help` shows each command's options and an example."""

EXAMPLES = {
    "synth": """example:
  raydenoise synth --out pairs --noise gaussian:25            # scikit-image's sample photos
  raydenoise synth --clean photos/ --out pairs --noise low-light --max-side 600""",
    "ingest": """examples:
  raydenoise ingest --low pairs/low --high pairs/high --out dataset
  raydenoise ingest --high s3://bucket/clean/ --out s3://bucket/dataset/ --split 0.9,0.1,0   # clean-only""",
    "train": """examples:
  raydenoise train --data dataset --model swift --storage-path runs --name first --time-limit 900
  raydenoise train --data clean-dataset --init builtin:denoise --degrade gaussian:0-50 \\
      --storage-path s3://bucket/runs --name finetune --epochs 20    # re-run the same name to resume""",
    "denoise": """examples:
  raydenoise denoise --input photos/ --output clean/                       # builtin:denoise
  raydenoise denoise --input s3://bucket/dark/ --output s3://bucket/bright/ --model builtin:low-light
  raydenoise denoise --input noisy/ --output out/ --reference clean/ --model runs/first/model""",
    "evaluate": """example:
  raydenoise evaluate --data dataset --model runs/first/model --baselines identity,nlm,bm3d""",
    "models": """example:
  raydenoise models
  raydenoise denoise --input photos/ --output clean/ --model builtin:low-light""",
    "export": """example:
  raydenoise export --model builtin:denoise --out denoise.onnx
  raydenoise denoise --input photos/ --output clean/ --model denoise.onnx     # or any image-to-image ONNX graph""",
    "demo": """example:
  raydenoise demo --out demo-out        # then open demo-out/denoised/_report/report.html""",
}
RAY_COMMANDS = ("ingest", "train", "denoise", "evaluate", "demo")


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

    p = sub.add_parser("train", help="train a denoiser with Ray Train (DDP) on ingested data")
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
        choices=("bce", "l1", "charbonnier"),
        default=None,
        help="default: bce (seed-ae), charbonnier (unet)",
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

    p = sub.add_parser(
        "denoise", help="denoise every image under a folder or s3:// prefix (Ray Data)"
    )
    p.add_argument("--input", required=True, help="folder or s3:// prefix of images (recursive)")
    p.add_argument(
        "--output", required=True, help="outputs at the same relative keys, same formats"
    )
    p.add_argument(
        "--model",
        default="builtin:denoise",
        help="builtin:NAME (see `raydenoise models`; default builtin:denoise), or a model folder "
        "(config.json + model.safetensors), local or s3://",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="clean images at the same relative keys: adds PSNR/MSE/MAE/SSIM",
    )
    p.add_argument(
        "--report", default=None, help=f"where the report goes (default: OUTPUT/{REPORT_DIR})"
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=4,
        help="images per Ray Data batch (default 4); on GPUs, equal-size images share a forward pass",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="model actors (default: one per CPU, or as many as the GPUs allow with --num-gpus-per-worker)",
    )
    p.add_argument(
        "--num-gpus-per-worker",
        type=_finite(minimum=0),
        default=0.0,
        help="GPUs per model actor, e.g. 1 or 0.5 (default 0: CPU)",
    )
    p.add_argument(
        "--tile",
        type=_tile,
        default=None,
        help=f"process images in tiles of this size (pixels, at least {MIN_TILE}); default: whole images, "
        "tiled automatically when one would not fit in a worker's memory",
    )
    _add_strength(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every image whose output already exists (by default an output is kept when the "
        "earlier report says this input was made into it by the same model and options, and it "
        "is unchanged since)",
    )
    _add_engine(p)
    p.add_argument(
        "--onnx-margin",
        type=int,
        default=None,
        help="for an .onnx --model: the context (pixels each side) its outputs depend on, so tiles of "
        "large images join exactly (default: from the graph's raydenoise metadata, else 64)",
    )
    p.add_argument(
        "--onnx-multiple",
        type=int,
        default=None,
        help="for an .onnx --model: the size multiple its input needs (tiles start on multiples of it; "
        "default: from the graph's metadata, else 8)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=None,
        help="JPEG/WebP quality of lossy outputs, 1-100 (default: a lossy input stays lossy at its own "
        "quality, estimated from its quantization tables; lossless inputs stay lossless)",
    )
    p.add_argument(
        "--format",
        choices=(KEEP, *FORMATS),
        default=KEEP,
        help="the outputs' format (default keep: each input's own, at its key). Another format "
        "renames each output to the format's extension (a/b.bmp -> a/b.png); inputs whose outputs "
        "would share a name are listed in the report, all but the first left out. JPEG and WebP "
        "are 8-bit (JPEG drops transparency, noted per image); PNG and TIFF keep 16 bits",
    )
    p.add_argument(
        "--other-model",
        choices=("redo", "refuse"),
        default="redo",
        help="outputs an earlier run made with another model or options: redo them (default), or "
        "refuse to start, naming both models",
    )
    p.add_argument(
        "--max-megapixels",
        type=_finite(minimum=0),
        default=DEFAULT_MAX_PIXELS / 1e6,
        help=f"refuse larger inputs (default {DEFAULT_MAX_PIXELS / 1e6:.1f}, Pillow's guard against "
        "decompression bombs); raise it for large images you trust, 0 = no limit",
    )
    _add_hidden(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list and plan only (no Ray, nothing written): how many inputs would be done, found done, or "
        "excluded and why, and a rough time estimate from a few inputs denoised here",
    )
    p.add_argument(
        "--pipeline",
        choices=("auto", "fused", "staged"),
        default="auto",
        help="fused: each actor reads, denoises and writes (CPU default); staged: separate read, "
        "model and write stages (GPU default)",
    )
    _add_s3(p)
    _add_ray(p)

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

    sub.add_parser(
        "models",
        help="list the built-in models (usable as --model builtin:NAME, no training needed)",
    )

    p = sub.add_parser("export", help="export a model to an ONNX graph (dynamic height and width)")
    p.add_argument("--model", required=True, help="builtin:NAME, or a model folder, local or s3://")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the graph format (onnx)")
    p.add_argument("--out", required=True, help="the .onnx file to write (local or s3://)")
    _add_s3(p)

    p = sub.add_parser("demo", help="run the whole pipeline on scikit-image's sample photos")
    p.add_argument(
        "--out", default="demo-out", help="folder for everything the demo writes (default demo-out)"
    )
    p.add_argument("--epochs", type=_positive, default=8, help="training epochs (default 8)")
    _add_ray(p)
    return parser


_TERMINATED: list[int] = []  # the signal numbers of SIGTERMs received during this command


def _on_sigterm(signum, frame):
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def _terminate_as_interrupt() -> list[int]:
    """SIGTERM (what `timeout`, schedulers and Kubernetes send) stops a command the way Ctrl-C
    does: the job winds down, writes its report of what was done and says so. Installed again
    once Ray has started (``ray.init`` puts in its own handler, which exits at once with rc 15).
    Returns the list that holds the signal number once one arrived."""
    import signal

    with contextlib.suppress(ValueError):  # not the main thread (embedded use): leave the default
        signal.signal(signal.SIGTERM, _on_sigterm)
    return _TERMINATED


def start_ray(args: argparse.Namespace):
    """The hook a job calls once its arguments are checked: join or start Ray, saying once
    where Ray's log lines go (unless --verbose shows them)."""

    def start() -> float:
        seconds = ensure_ray(args.address, verbose=args.verbose)
        _terminate_as_interrupt()
        path = console().log_path
        if path and seconds:
            _log(f"{args.command}: Ray's log lines go to {path} (--verbose shows them here)")
        return seconds

    return start


def _log(msg: str) -> None:
    console().line(msg)


def cmd_synth(args: argparse.Namespace) -> int:
    cfg = SynthConfig(
        out=args.out,
        noise=args.noise,
        clean=args.clean,
        seed=args.seed,
        limit=args.limit,
        crop=args.crop,
        max_side=args.max_side,
        s3_endpoint=args.s3_endpoint,
    )
    res = run_synth(cfg, log=_log)
    _log(f"synth: wrote {len(res.written)} pairs to {args.out} ({len(res.skipped)} skipped)")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = IngestConfig(
        low=args.low,
        high=args.high,
        out=args.out,
        rows_per_shard=args.rows_per_shard,
        seed=args.seed,
        split=args.split,
        s3_endpoint=args.s3_endpoint,
        include_hidden=args.include_hidden,
        dry_run=args.dry_run,
    )
    run_ingest(cfg, log=_log, start_ray=start_ray(args))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    model = args.model
    if model is None:
        if not args.init:
            raise TrainError(
                f"give --model ({', '.join(NETWORKS)}), or --init with a model to start from"
            )
        model = init_model_config(args.init, args.s3_endpoint)["model"]
    cfg = resolve_config(
        model,
        data=args.data,
        storage_path=args.storage_path,
        name=args.name,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        lr=args.lr,
        loss=args.loss,
        schedule=args.schedule,
        width=args.width,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        max_failures=args.max_failures,
        placement=args.placement,
        max_steps_per_epoch=args.max_steps_per_epoch,
        time_limit_s=args.time_limit,
        seed=args.seed,
        degrade=args.degrade,
        init=args.init,
        ema=args.ema,
        in_memory=args.in_memory,
        patches_per_image=args.patches_per_image,
        s3_endpoint=args.s3_endpoint,
        synthetic_data=args.synthetic_data,
        synthetic_share=args.synthetic_share,
    )
    run_train(cfg, log=_log, start_ray=start_ray(args))
    return 0


def _strength(args: argparse.Namespace) -> dict:
    if args.strength is not None and args.sigma is not None:
        raise DenoiseError(
            "give --strength (a multiple of the estimated noise level) or --sigma (a fixed level), "
            "not both"
        )
    return {"strength": 1.0 if args.strength is None else args.strength, "sigma": args.sigma}


def cmd_denoise(args: argparse.Namespace) -> int:
    cfg = DenoiseConfig(
        input=args.input,
        output=args.output,
        model=args.model,
        reference=args.reference,
        report=args.report,
        batch_size=args.batch_size,
        workers=args.workers,
        num_gpus_per_worker=args.num_gpus_per_worker,
        tile=args.tile,
        overwrite=args.overwrite,
        pipeline=args.pipeline,
        s3_endpoint=args.s3_endpoint,
        include_hidden=args.include_hidden,
        max_megapixels=args.max_megapixels,
        dry_run=args.dry_run,
        other_model=args.other_model,
        quality=args.quality,
        format=args.format,
        engine=args.engine,
        tta=args.tta,
        onnx_margin=args.onnx_margin,
        onnx_multiple=args.onnx_multiple,
        **_strength(args),
    )
    summary = run_denoise(cfg, log=_log, start_ray=start_ray(args))
    if summary.get("failures"):
        console().error(
            f"raydenoise denoise: {summary['failures']:,} of {summary['count']:,} images failed; "
            f"see {summary['report']}/report.csv"
        )
        return 1
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = EvaluateConfig(
        data=args.data,
        model=args.model,
        split=args.split,
        out=args.out,
        workers=args.workers,
        tile=args.tile,
        s3_endpoint=args.s3_endpoint,
        baselines=args.baselines,
        dry_run=args.dry_run,
        engine=args.engine,
        tta=args.tta,
        **_strength(args),
    )
    run_evaluate(cfg, log=_log, start_ray=start_ray(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    out = args.out.rstrip("/")
    _log(f"demo: 1/5 synthesize low-light pairs from scikit-image samples -> {out}/pairs")
    run_synth(SynthConfig(out=f"{out}/pairs", noise="low-light", seed=0), log=_log)
    _log(f"demo: 2/5 ingest the pairs into Parquet shards -> {out}/dataset")
    res = run_ingest(
        IngestConfig(low=f"{out}/pairs/low", high=f"{out}/pairs/high", out=f"{out}/dataset"),
        log=_log,
        start_ray=start_ray(args),
    )
    c = res.manifest["counts"]
    _log(
        f"demo: {c['total']} pairs ({c['train']}/{c['val']}/{c['test']} train/val/test) in {out}/dataset"
    )
    _log(f"demo: 3/5 train a small unet for {args.epochs} epochs -> {out}/runs/demo-unet")
    summary = run_train(
        resolve_config(
            "unet",
            data=f"{out}/dataset",
            storage_path=f"{out}/runs",
            name="demo-unet",
            epochs=args.epochs,
            batch_size=4,
            patch_size=96,
            width=16,
            num_workers=1,
            max_steps_per_epoch=None,
        ),
        log=_log,
    )
    m = summary["best_metrics"]
    _log(
        f"demo: val PSNR {m['val_psnr']:.2f} dB vs {m['input_psnr']:.2f} dB for the noisy input; "
        f"curves in {out}/runs/demo-unet/curves.png"
    )
    _log(f"demo: 4/5 denoise every low-light image (most were seen in training) -> {out}/denoised")
    den = run_denoise(
        DenoiseConfig(
            input=f"{out}/pairs/low",
            output=f"{out}/denoised",
            model=summary["model_dir"],
            reference=f"{out}/pairs/high",
            overwrite=True,
        ),
        log=_log,
    )
    split = "test" if c["test"] else "val"  # 13 photos split 70/20/10 leave the test split empty
    _log(f"demo: 5/5 score the held-out {split} split: model vs noisy input vs Non-Local Means")
    run_evaluate(
        EvaluateConfig(data=f"{out}/dataset", model=summary["model_dir"], split=split), log=_log
    )
    _log(
        f"demo: done. Open {den['report']}/report.html (before/after images and per-image scores) and "
        f"{out}/runs/demo-unet/curves.png; the model is in {summary['model_dir']}"
    )
    return 0 if not den["failures"] else 1


def cmd_export(args: argparse.Namespace) -> int:
    import posixpath

    from .artifacts import load_model_uri, resolve_model_uri
    from .engines import export_onnx
    from .storage import endpoint_from_env, open_store

    endpoint = endpoint_from_env(args.s3_endpoint)
    if not args.out.lower().endswith(".onnx"):
        raise ValueError(f"--out {args.out!r}: an ONNX graph's file name ends in .onnx")
    model, config = load_model_uri(resolve_model_uri(args.model, endpoint), endpoint)
    graph = export_onnx(model, config)  # checked against the torch output before it is written
    folder, name = posixpath.split(args.out.rstrip("/"))
    open_store(folder or ".", endpoint).write_bytes(name, graph)
    _log(
        f"export: {args.model} ({config['model']}) -> {args.out}, {len(graph) / 1e6:.1f} MB, ONNX with dynamic "
        "height and width; checked against the torch output"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .artifacts import BUILTIN, builtin_names, load_model_uri

    names = builtin_names()
    if not names:
        print("no built-in models in this installation")
        return 0
    for name in names:
        model, config = load_model_uri(BUILTIN + name, None)
        card = config.get("card", {})
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{BUILTIN + name:<20} {card.get('task', '-')}; {config['model']}, {params / 1e6:.2f}M parameters; "
            f"{card.get('headline', '')}"
        )
    return 0


COMMANDS = {
    "models": cmd_models,
    "export": cmd_export,
    "synth": cmd_synth,
    "ingest": cmd_ingest,
    "train": cmd_train,
    "denoise": cmd_denoise,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    terminated = _terminate_as_interrupt()
    if args.command in RAY_COMMANDS and not args.verbose:
        capture(args.command)  # Ray's log stream goes to a file; the terminal keeps our lines
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        console().error(f"raydenoise {args.command}: error: {exc}")
        return 1
    except KeyboardInterrupt:
        if terminated:
            console().error(
                f"raydenoise {args.command}: terminated (SIGTERM); what was done is kept, rerun to resume"
            )
            return 143
        console().error(f"raydenoise {args.command}: interrupted")
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so, and where the traceback is
        path = console().log_path
        if path:
            traceback.print_exc()  # into the log file
        else:
            traceback.print_exc(file=console().err)
        console().error(
            f"raydenoise {args.command}: internal error: {type(exc).__name__}: {exc}"
            + (f" (traceback in {path})" if path else "")
        )
        return 2
    finally:
        ray = sys.modules.get("ray")
        if console().log_path and ray is not None and ray.is_initialized():
            ray.shutdown()  # while captured: Ray's shutdown lines go to the log file too
        release()


if __name__ == "__main__":
    sys.exit(main())
