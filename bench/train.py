"""Training benchmark: throughput, data-pipeline overhead, and quality under an equal time budget.

    python bench/train.py --bsds ../shared/data/bsds500            # everything (~25 min on 2 CPUs)
    python bench/train.py --bsds ../shared/data/bsds500 --only overhead

Parts (all in one run, side by side):
  throughput  `unet` (128x128 patches, batch 8) with 1 and 2 DDP workers: pairs/s and megapixels/s
              of the second epoch (the first includes worker and pipeline start-up).
  overhead    step time fed by Ray Data (read -> decode -> augment -> iter_torch_batches) divided by
              step time on the same batches pre-loaded as tensors, same process, same model.
  quality     `seed-ae` (the notebook's recipe: full images, batch 2, BCE) and `unet`, each given
              the same wall-clock budget (--budget seconds) on bsds500/train pairs synthesized with
              `low-light` and `gaussian:25`, scored on bsds500/test against the noisy input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def prepare(bsds: Path, work: Path, noise: str, log) -> tuple[str, str]:
    """Synthesize + ingest bsds500/train (train/val 90/10) and bsds500/test (all test)."""
    from raydenoise.ingest import IngestConfig, run_ingest
    from raydenoise.synth import SynthConfig, run_synth

    tag = noise.replace(":", "")
    out = []
    for part, split in (("train", (0.9, 0.1, 0.0)), ("test", (0.0, 0.0, 1.0))):
        pairs, ds = work / f"{tag}-{part}-pairs", work / f"{tag}-{part}-ds"
        if not (ds / "manifest.json").exists():
            run_synth(SynthConfig(out=str(pairs), clean=str(bsds / part), noise=noise, seed=1), log=lambda m: None)
            run_ingest(IngestConfig(low=str(pairs / "low"), high=str(pairs / "high"), out=str(ds), split=split),
                       log=lambda m: None)
        out.append(str(ds))
    log(f"data ready: {noise}")
    return out[0], out[1]


def score(model_dir: str | None, test_ds: str, limit: int) -> dict[str, float]:
    """Mean PSNR/MSE/MAE/SSIM of a model (or of the noisy input when model_dir is None) on the test split."""
    import pyarrow.dataset as pads
    import torch

    from raydenoise.artifacts import load_model
    from raydenoise.metrics import all_metrics
    from raydenoise.train import decode_png

    model = load_model(model_dir)[0] if model_dir else None
    table = pads.dataset(test_ds, format="parquet", exclude_invalid_files=True).to_table(columns=["id", "low", "high"])
    ids = table.column("id").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: ids[i])[:limit]
    rows = []
    with torch.no_grad():
        for i in order:
            low = decode_png(table.column("low")[i].as_py())
            high = decode_png(table.column("high")[i].as_py()).astype(np.float32) / 255
            x = torch.from_numpy(low).permute(2, 0, 1)[None].float() / 255
            pred = x if model is None else model(x).clamp(0, 1)
            # quantize to 8 bits like a written output file
            out = np.round(pred[0].permute(1, 2, 0).numpy() * 255).astype(np.float32) / 255
            rows.append(all_metrics(out, high))
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"images": len(rows)}


def throughput(train_ds: str, work: Path, log) -> list[dict]:
    from raydenoise.train import resolve_config, run_train

    results = []
    for workers in (1, 2):
        name = f"tp{workers}"
        cfg = resolve_config("unet", data=train_ds, storage_path=str(work / "runs"), name=name, epochs=2,
                             num_workers=workers, max_steps_per_epoch=24 // workers)
        run_train(cfg, log=lambda m: None)
        import csv

        rows = list(csv.DictReader(open(work / "runs" / name / "metrics.csv")))
        r = rows[-1]
        results.append({"workers": workers, "pairs_per_s": float(r["pairs_per_s"]),
                        "megapixels_per_s": float(r["megapixels_per_s"]), "cpus_per_worker": cfg.cpus_per_worker})
        log(f"throughput {workers} worker(s): {results[-1]}")
    return results


def overhead(train_ds: str, model_name: str, steps: int, log) -> dict:
    """Ray Data-fed step time / pre-loaded step time, same process, same batches' shapes."""
    import ray
    import torch

    from raydenoise.ingest import read_manifest
    from raydenoise.models import build_model
    from raydenoise.train import MODEL_DEFAULTS, _collate_class, _loss_fn, read_decode_augment

    d = MODEL_DEFAULTS[model_name]
    patch, batch = d["patch_size"] or 128, d["batch_size"]
    manifest = read_manifest(train_ds)
    ds = ray.data.from_items([{"path": s["path"]} for s in manifest["shards"] if s["split"] == "train"]).map_batches(
        read_decode_augment, batch_size=1, num_cpus=0.5,
        fn_kwargs={"data_uri": train_ds, "endpoint": None, "patch": patch},
    )
    torch.manual_seed(0)
    model = build_model(model_name)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = _loss_fn(d["loss"])

    def step(low, high):
        loss = loss_fn(model(low), high)
        opt.zero_grad()
        loss.backward()
        opt.step()

    it = iter(ds.iter_torch_batches(batch_size=batch, collate_fn=_collate_class()(), prefetch_batches=2,
                                    local_shuffle_buffer_size=4 * batch, drop_last=True))
    warm = 3
    cached = []
    for _ in range(warm):
        step(*next(it))
    t0 = time.perf_counter()
    for _ in range(steps):
        low, high = next(it)
        step(low, high)
        cached.append((low.clone(), high.clone()))
    fed = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for low, high in cached:
        step(low, high)
    pre = (time.perf_counter() - t0) / steps
    out = {"model": model_name, "batch": batch, "patch": patch, "steps": steps,
           "ray_data_step_s": fed, "preloaded_step_s": pre, "overhead": fed / pre}
    log(f"overhead {model_name}: {out}")
    return out


def quality(noise: str, train_ds: str, test_ds: str, work: Path, budget: float, limit: int, log) -> dict:
    from raydenoise.train import resolve_config, run_train

    tag = noise.replace(":", "")
    res = {"noise": noise, "budget_s": budget, "noisy_input": score(None, test_ds, limit)}
    for model in ("seed-ae", "unet"):
        name = f"q-{tag}-{model}"
        cfg = resolve_config(model, data=train_ds, storage_path=str(work / "runs"), name=name, epochs=1000,
                             num_workers=1, time_limit_s=budget)
        summary = run_train(cfg, log=lambda m: None)
        res[model] = score(str(work / "runs" / name / "model"), test_ds, limit) | {"epochs": summary["epochs"]}
        log(f"quality {noise} {model}: {res[model]}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bsds", default=str(HERE.parent.parent / "shared" / "data" / "bsds500"))
    ap.add_argument("--budget", type=float, default=180.0, help="training seconds per model in the quality part")
    ap.add_argument("--test-limit", type=int, default=50, help="bsds500/test images scored per model")
    ap.add_argument("--only", choices=("throughput", "overhead", "quality"), default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(HERE / "out" / "train.json"))
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    work = Path(args.workdir or tempfile.mkdtemp(prefix="raydenoise-bench-train-"))

    def log(msg: str) -> None:
        print(msg, flush=True)

    results: dict = {"cpus": os.cpu_count(), "gpu": None}
    train_g, test_g = prepare(Path(args.bsds), work, "gaussian:25", log)
    if args.only in (None, "throughput"):
        results["throughput"] = throughput(train_g, work, log)
    if args.only in (None, "overhead"):
        results["overhead"] = [overhead(train_g, "unet", 12, log), overhead(train_g, "seed-ae", 30, log)]
    if args.only in (None, "quality"):
        results["quality"] = [quality("gaussian:25", train_g, test_g, work, args.budget, args.test_limit, log)]
        train_l, test_l = prepare(Path(args.bsds), work, "low-light", log)
        results["quality"].append(quality("low-light", train_l, test_l, work, args.budget, args.test_limit, log))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
