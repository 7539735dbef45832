"""Each command: its arguments turned into a job's config, the job run, its result printed."""

from __future__ import annotations

import argparse

from ..console import console
from ..jobs.denoise import DenoiseConfig, run_denoise
from ..jobs.evaluate import (
    EvaluateConfig,
    run_evaluate,
)
from ..jobs.ingest import IngestConfig, run_ingest
from ..jobs.synth import SynthConfig, run_synth
from ..jobs.train import (
    TrainConfig,
    TrainError,
    init_model_config,
    resolve_config,
    run_train,
)
from ..models.networks import NETWORKS
from ..session import ensure_ray
from .options import config_values
from .signals import _terminate_as_interrupt

RAY_COMMANDS = ("ingest", "train", "denoise", "evaluate", "demo")


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
    cfg = SynthConfig(**config_values(SynthConfig, args))
    res = run_synth(cfg, log=_log)
    _log(f"synth: wrote {len(res.written)} pairs to {args.out} ({len(res.skipped)} skipped)")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    cfg = IngestConfig(**config_values(IngestConfig, args))
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
    values = config_values(TrainConfig, args)
    values.pop("model")
    cfg = resolve_config(model, **values)
    run_train(cfg, log=_log, start_ray=start_ray(args))
    return 0


def cmd_denoise(args: argparse.Namespace) -> int:
    cfg = DenoiseConfig(**config_values(DenoiseConfig, args))
    summary = run_denoise(cfg, log=_log, start_ray=start_ray(args))
    if summary.get("failures"):
        console().error(
            f"raydenoise denoise: {summary['failures']:,} of {summary['count']:,} images failed; "
            f"see {summary['report']}/report.csv"
        )
        return 1
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = EvaluateConfig(**config_values(EvaluateConfig, args))
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

    from ..models.artifacts import load_model_uri, resolve_model_uri
    from ..models.onnx_graph import EngineError, export_onnx
    from ..storage.store import endpoint_from_env, open_store

    endpoint = endpoint_from_env(args.s3_endpoint)
    if not args.out.lower().endswith(".onnx"):
        raise EngineError(f"--out {args.out!r}: an ONNX graph's file name ends in .onnx")
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
    from ..models.artifacts import BUILTIN, builtin_names, load_model_uri

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
