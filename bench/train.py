"""Training benchmark: throughput against a plain PyTorch loop, threads vs DDP workers, and
quality under an equal wall-clock budget.

    make setup && .venv/bin/python bench/train.py --only throughput     # ~10 min on 2 CPUs
    make setup && .venv/bin/python bench/train.py --only quality --budget 900   # ~40 min

throughput  Training megapixels/s through `raydenoise train` (second epoch, training steps only:
            the data path, the step, DDP) divided by a plain single-process PyTorch loop on
            pre-loaded tensors with torch using all the machine's cores; same model, same
            batch (8 x 128 x 128), same loss and optimizer. Measured for `swift` and `unet`, and
            for the layouts a user can choose: 1 worker x N threads (the default), N DDP workers
            x 1 thread (global batch kept at 8), and the streaming data path.
precision   `raydenoise train` of `swift-cond` (builtin:denoise's network) with --precision fp32
            and bf16 (bfloat16 autocast on a CPU with bfloat16 units), alternating, --rounds
            each: second-epoch training megapixels/s and the val loss after the two epochs
            (same seed, same patches).
quality     Equal wall-clock budget (--budget s of `--time-limit` each, the same machine, one
            after the other) on bsds500/train: today's recipe (`unet` on `synth --noise
            gaussian:25` pairs, the streaming data path with 1 CPU as before this benchmark's
            issue) vs `swift` trained blind with `--degrade gaussian:0-50` on clean images
            (the new defaults). Both scored on the first --test-limit bsds500/test photos (by
            name) at sigma 15, 25 and 50 (noise clipped and stored as 8 bits, outputs as 8 bits).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PATCH, BATCH = 128, 8


def quiet(msg: str) -> None:
    pass


def ingest(low: str | None, high: str, out: Path, split) -> str:
    from raydenoise.jobs.ingest import IngestConfig, run_ingest

    if not (out / "manifest.json").exists():
        run_ingest(IngestConfig(low=low, high=high, out=str(out), split=split), log=quiet)
    return str(out)


def clean_set(bsds: Path, work: Path) -> str:
    return ingest(None, str(bsds / "train"), work / "clean-train", (0.9, 0.1, 0.0))


def paired_set(bsds: Path, work: Path, noise: str) -> str:
    from raydenoise.jobs.synth import SynthConfig, run_synth

    pairs = work / f"pairs-{noise.replace(':', '')}"
    if not (pairs / "high").exists():
        run_synth(
            SynthConfig(out=str(pairs), clean=str(bsds / "train"), noise=noise, seed=1), log=quiet
        )
    return ingest(
        str(pairs / "low"),
        str(pairs / "high"),
        work / f"ds-{noise.replace(':', '')}",
        (0.9, 0.1, 0.0),
    )


def plain_loop(model_name: str, bsds: Path, steps: int) -> float:
    """Megapixels/s of a plain loop: pre-made noisy/clean 128x128 batches as tensors, torch on
    all cores, no data work inside the timed loop."""
    import torch

    from raydenoise.imaging.images import decode_rgb8
    from raydenoise.jobs.train.scoring import loss_fn
    from raydenoise.models.architectures import build_model

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    files = sorted((bsds / "train").glob("*.jpg"))[:32]
    images = [decode_rgb8(f.read_bytes()) for f in files]
    batches = []
    for _ in range(steps):
        crops = []
        for img in (images[i] for i in rng.integers(0, len(images), BATCH)):
            y, x = rng.integers(0, img.shape[0] - PATCH), rng.integers(0, img.shape[1] - PATCH)
            crops.append(img[y : y + PATCH, x : x + PATCH])
        high = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        batches.append(((high + torch.randn_like(high) * 0.1).clamp(0, 1), high))
    torch.manual_seed(0)
    model = build_model(model_name).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    criterion = loss_fn("charbonnier")

    def step(low, high):
        loss = criterion(model(low), high)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for low, high in batches[:3]:
        step(low, high)
    t0 = time.perf_counter()
    for low, high in batches[3:]:
        step(low, high)
    return (steps - 3) * BATCH * PATCH * PATCH / 1e6 / (time.perf_counter() - t0)


def through_train(model_name: str, data: str, work: Path, name: str, steps: int, **kw) -> dict:
    """Second-epoch megapixels/s of `raydenoise train` (training steps only) and of the whole
    epoch including val and checkpoint."""
    from raydenoise.jobs.train import resolve_config, run_train

    cfg = resolve_config(
        model_name,
        data=data,
        storage_path=str(work / "runs"),
        name=name,
        epochs=2,
        max_steps_per_epoch=steps,
        degrade="gaussian:0-50",
        **kw,
    )
    run_train(cfg, log=quiet)
    rows = list(csv.DictReader(open(work / "runs" / name / "metrics.csv")))
    r = rows[-1]
    epoch_wall = float(rows[-1]["elapsed_s"]) - float(rows[0]["elapsed_s"])
    mp = float(r["megapixels_per_s"]) * float(r["train_seconds"])
    return {
        "megapixels_per_s": float(r["megapixels_per_s"]),
        "epoch_megapixels_per_s": mp / epoch_wall,
        "cpus_per_worker": cfg.cpus_per_worker,
    }


def throughput(bsds: Path, work: Path, log) -> list[dict]:
    import ray

    data = clean_set(bsds, work)
    out = []
    for model_name, steps in (("swift", 40), ("unet", 12)):
        plain = plain_loop(model_name, bsds, steps + 3)
        layouts = [
            ("1 worker x all threads, in memory (default)", dict(num_workers=1)),
            (
                f"{os.cpu_count()} DDP workers x 1 thread, in memory",
                dict(num_workers=os.cpu_count(), batch_size=BATCH // os.cpu_count()),
            ),
            (
                "1 worker x 1 thread, streaming (before)",
                dict(num_workers=1, in_memory="no", cpus_per_worker=1.0, patches_per_image=1),
            ),
        ]
        for label, kw in layouts:
            name = f"tp-{model_name}-{len(out)}"
            res = through_train(model_name, data, work, name, steps, **kw)
            row = {
                "model": model_name,
                "layout": label,
                **res,
                "plain_megapixels_per_s": plain,
                "ratio": res["megapixels_per_s"] / plain,
            }
            log(f"throughput {row}")
            out.append(row)
    ray.shutdown()
    return out


def precision(bsds: Path, work: Path, rounds: int, log) -> list[dict]:
    from raydenoise.models.engines import fast_bf16_cpu

    if not fast_bf16_cpu():
        log("precision: this CPU has no bfloat16 units; nothing to compare")
        return []
    data = clean_set(bsds, work)
    out = []
    for r in range(rounds):
        for prec in ("fp32", "bf16"):
            name = f"prec-{prec}-{r}"
            res = through_train(
                "swift-cond", data, work, name, 30, num_workers=1, precision=prec, seed=r
            )
            rows = list(csv.DictReader(open(work / "runs" / name / "metrics.csv")))
            row = {"precision": prec, "round": r, **res, "val_loss": float(rows[-1]["val_loss"])}
            log(f"precision {row}")
            out.append(row)
    return out


def score(model_dir: str, bsds: Path, sigmas, limit: int) -> dict:
    """Mean PSNR/SSIM of the model (and of the noisy input) on the first `limit` test photos."""
    from raydenoise.imaging.images import decode_rgb8
    from raydenoise.imaging.metrics import all_metrics
    from raydenoise.imaging.noise import apply_noise, parse_noise
    from raydenoise.models.artifacts import load_model
    from raydenoise.models.inference import Denoiser

    model, config = load_model(model_dir)
    den = Denoiser(model, config["model"], width=config.get("width"))
    files = sorted((bsds / "test").glob("*.jpg"))[:limit]
    res = {}
    for sigma in sigmas:
        m_rows, n_rows = [], []
        for i, f in enumerate(files):
            clean = decode_rgb8(f.read_bytes())
            noisy = apply_noise(
                clean, parse_noise(f"gaussian:{sigma}"), np.random.default_rng([sigma, i])
            )
            ref = clean.astype(np.float32) / 255
            m_rows.append(all_metrics(den(noisy).astype(np.float32) / 255, ref))
            n_rows.append(all_metrics(noisy.astype(np.float32) / 255, ref))
        res[sigma] = {
            "psnr": float(np.mean([r["psnr"] for r in m_rows])),
            "ssim": float(np.mean([r["ssim"] for r in m_rows])),
            "input_psnr": float(np.mean([r["psnr"] for r in n_rows])),
            "input_ssim": float(np.mean([r["ssim"] for r in n_rows])),
        }
    return res


def quality(bsds: Path, work: Path, budget: float, limit: int, log) -> list[dict]:
    from raydenoise.jobs.train import resolve_config, run_train

    runs = [
        (
            "today: unet, gaussian:25 pairs, streaming, 1 CPU",
            "unet",
            paired_set(bsds, work, "gaussian:25"),
            dict(in_memory="no", cpus_per_worker=1.0, patches_per_image=1),
        ),
        (
            "new: swift, --degrade gaussian:0-50, defaults",
            "swift",
            clean_set(bsds, work),
            dict(degrade="gaussian:0-50"),
        ),
    ]
    out = []
    for i, (label, model_name, data, kw) in enumerate(runs):
        name = f"q{i}-{model_name}"
        t0 = time.time()
        cfg = resolve_config(
            model_name,
            data=data,
            storage_path=str(work / "runs"),
            name=name,
            epochs=1000,
            num_workers=1,
            time_limit_s=budget,
            **kw,
        )
        summary = run_train(cfg, log=log)
        row = {
            "recipe": label,
            "model": model_name,
            "budget_s": budget,
            "wall_s": time.time() - t0,
            "epochs": summary["epochs"],
            "cpus_per_worker": cfg.cpus_per_worker,
            "scores": score(summary["model_dir"], bsds, (15, 25, 50), limit),
        }
        log(f"quality {json.dumps(row)}")
        out.append(row)
    return out


def start_ray() -> None:
    """A local Ray on all this machine's CPUs, quiet, unless one is running (a part that ends
    shuts its own down: throughput does)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bsds", default=str(HERE.parent.parent / "shared" / "data" / "bsds500"))
    ap.add_argument(
        "--budget",
        type=float,
        default=900.0,
        help="training seconds per recipe in the quality part",
    )
    ap.add_argument(
        "--test-limit", type=int, default=68, help="bsds500/test photos scored (first N by name)"
    )
    ap.add_argument("--only", choices=("throughput", "precision", "quality"), default=None)
    ap.add_argument("--rounds", type=int, default=2, help="runs per precision (precision part)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(HERE / "out" / "train.json"))
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="raydenoise-bench-train-"))
    bsds = Path(args.bsds)

    def log(msg: str) -> None:
        print(msg, flush=True)

    results: dict = {"cpus": os.cpu_count(), "gpu": None}
    if args.only in (None, "throughput"):
        start_ray()
        results["throughput"] = throughput(bsds, work, log)
    if args.only in (None, "precision"):
        start_ray()
        results["precision"] = precision(bsds, work, args.rounds, log)
    if args.only in (None, "quality"):
        start_ray()
        results["quality"] = quality(bsds, work, args.budget, args.test_limit, log)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
