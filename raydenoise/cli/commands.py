"""Each command: its arguments turned into a job's config, the job run, its result printed."""

from __future__ import annotations

import argparse

from ..console import console
from ..jobs.denoise import DenoiseConfig, DenoiseError, run_denoise
from ..jobs.evaluate import (
    EvaluateConfig,
    run_evaluate,
)
from ..jobs.ingest import IngestConfig, run_ingest
from ..jobs.synth import SynthConfig, run_synth
from ..jobs.train import (
    TrainError,
    init_model_config,
    resolve_config,
    run_train,
)
from ..models.networks import NETWORKS
from ..session import ensure_ray
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

    from ..models.artifacts import load_model_uri, resolve_model_uri
    from ..models.onnx_graph import export_onnx
    from ..storage.store import endpoint_from_env, open_store

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
