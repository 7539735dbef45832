"""Denoise benchmark: `raydenoise denoise` vs a plain single-process PyTorch loop vs Non-Local Means.

    python bench/denoise.py                      # 200 images of 400x600, seed-ae and unet
    python bench/denoise.py --images 40 --models builtin:denoise    # each --engine side by side

Same files, same run, in this order per model:
  plain    one Python process: for each file read -> decode -> model (torch's default threads)
           -> encode PNG -> write; timed from the first read to the last write;
  plain-fast  the same loop with raydenoise's in-process Denoiser and encoder (no Ray), which
           separates the speed of the pipeline from that of the inference kernels;
  ray      `raydenoise denoise --engine E` for each of --engines (torch, onnxruntime, torch-bf16), one fused
           actor per CPU by default, as a subprocess with
           its own local Ray; "pipeline" is the job's own timing (summary.json `seconds`: from
           submitting the dataset to the last row, actor start-up included), "steady" the rate
           after the first result (summary.json `steady_images_per_s`), "end to end" includes
           Ray's own start-up and the report. Then the same command once more: every output
           already exists and the report vouches for it, so it is kept unread and Ray is not
           started: the whole command's seconds ("resume_command_s").
  baseline  with --baseline REV: the same `raydenoise denoise` command run by the code of git
           revision REV (a temporary worktree, its default engine, on the same files and the same
           weights: a built-in's folder is given as a folder), so a change is measured against
           what users had, side by side in one run.
  --repeats N  every job (each engine and the baseline) N times, the order reversed every
           other round, and the median of each figure: one run's figures depend on what ran
           just before it (file caches, a previous Ray's leftovers).
Non-Local Means (scikit-image, as in `raydenoise evaluate`) runs in one process on the first
--nlm-images files: it is the seed notebook's classical baseline.
Throughput does not depend on the weights, so the models are freshly initialized.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from baseline import checkout  # bench/baseline.py (this folder is on the path when run)
from PIL import Image

HERE = Path(__file__).resolve().parent


def make_images(root: Path, n: int) -> None:
    from skimage import data

    photo = data.coffee()
    big = np.concatenate([photo, photo[:, ::-1]], axis=1)
    root.mkdir(parents=True)

    def one(i: int) -> None:
        off = (i * 7) % 600
        clean = big[:, off : off + 600]
        noisy = np.clip(clean + np.random.default_rng(i).normal(0, 25, clean.shape), 0, 255).astype(
            np.uint8
        )
        Image.fromarray(noisy).save(root / f"{i:04d}.png", compress_level=1)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))


def plain_loop(model_dir: str, src: Path, dst: Path) -> float:
    import torch

    from raydenoise.imaging.noise_level import estimate_sigma
    from raydenoise.models.architectures import is_conditioned
    from raydenoise.models.artifacts import load_model_uri

    model, _ = load_model_uri(str(model_dir), None)
    dst.mkdir(parents=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        for f in sorted(src.iterdir()):
            rgb = np.asarray(Image.open(f).convert("RGB"))
            x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
            level = (torch.tensor([estimate_sigma(rgb)]),) if is_conditioned(model) else ()
            y = model(x, *level).clamp(0, 1)[0].permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(np.round(y * 255).astype(np.uint8)).save(buf, format="PNG")
            (dst / f.name).write_bytes(buf.getvalue())
    return time.perf_counter() - t0


def plain_fast_loop(model_dir: str, src: Path, dst: Path) -> float:
    """The same loop with raydenoise's in-process pieces (Denoiser's channels-last inference mode,
    its PNG encoder): what is left of the speed-up is the pipeline's own."""
    from raydenoise.imaging.encode import encode_like
    from raydenoise.models.artifacts import load_model_uri
    from raydenoise.models.inference import Denoiser

    model, config = load_model_uri(str(model_dir), None)
    denoiser = Denoiser(model, config["model"], width=config.get("width"))
    dst.mkdir(parents=True)
    t0 = time.perf_counter()
    for f in sorted(src.iterdir()):
        y = denoiser(np.asarray(Image.open(f).convert("RGB")))
        (dst / f.name).write_bytes(encode_like(y, None, False, "PNG"))
    return time.perf_counter() - t0


def nlm_rate(src: Path, n: int) -> float:
    from raydenoise.jobs.evaluate import nl_means

    files = sorted(src.iterdir())[:n]
    t0 = time.perf_counter()
    for f in files:
        nl_means(np.asarray(Image.open(f).convert("RGB")))
    return len(files) / (time.perf_counter() - t0)


@dataclass(frozen=True)
class Job:
    """How to run one `raydenoise denoise` side of the bench: the command, its environment and
    the flags it adds (``--engine E``; none for the baseline, which runs its own default)."""

    command: list[str]
    env: dict[str, str]
    extra: list[str]


@dataclass(frozen=True)
class Files:
    """What every job of the run shares: the noisy images, the scratch folder, their count and
    the --workers flag (None: raydenoise's own)."""

    src: Path
    work: Path
    images: int
    workers: int | None


def job_figures(job: Job, label: str, model_dir: str, files: Files, plain: dict) -> dict:
    """One `raydenoise denoise` run of ``job`` and the same command again (a resume): the job's
    figures, and its speedups over the plain loops' ``plain`` figures. ``label`` names its
    output folder."""
    mp = files.images * 400 * 600 / 1e6
    out = files.work / f"ray-{label}"
    workers = ["--workers", str(files.workers)] if files.workers else []
    args = [*job.command, "denoise", "--input", str(files.src), "--output", str(out)]
    args += ["--model", model_dir, *job.extra, *workers]
    # cwd: a neutral folder: `python -m` puts the working directory first on sys.path
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=job.env, cwd=files.work)
    ray_e2e = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"raydenoise denoise failed for {label}")
    summary = json.loads((out / "_report" / "summary.json").read_text())
    assert summary["ok"] == files.images, summary
    # The same command again: every output is vouched for by the report (a resume).
    t1 = time.perf_counter()
    again = subprocess.run(args, capture_output=True, text=True, env=job.env, cwd=files.work)
    resume_s = time.perf_counter() - t1
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((out / "_report" / "summary.json").read_text())
    assert rerun["skipped"] == files.images, rerun
    e = {
        "images_per_s_end_to_end": files.images / ray_e2e,
        "images_per_s_pipeline": files.images / summary["seconds"],
        "megapixels_per_s_pipeline": mp / summary["seconds"],
        "startup_s": summary.get("startup_s"),
        "images_per_s_steady": summary.get("steady_images_per_s"),
        # the whole second command: every output vouched for, kept unread, Ray not started
        "resume_command_s": resume_s,
        "resume_trusted": rerun.get("trusted"),
    }
    e["speedup_pipeline_vs_plain"] = e["images_per_s_pipeline"] / plain["plain_images_per_s"]
    e["speedup_steady_vs_plain"] = (e["images_per_s_steady"] or 0) / plain["plain_images_per_s"]
    e["speedup_pipeline_vs_plain_fast"] = (
        e["images_per_s_pipeline"] / plain["plain_fast_images_per_s"]
    )
    return e


def baseline_job(rev: str, work: Path, env: dict[str, str], stack: contextlib.ExitStack) -> Job:
    """The denoise command of git revision ``rev`` (a worktree removed when ``stack`` closes),
    run as a module with its package first on the path (the console script names today's
    module layout), checked to import that package and not today's."""
    base = stack.enter_context(checkout(rev, work / "baseline-code"))
    job = Job([sys.executable, "-m", "raydenoise"], {**env, "PYTHONPATH": str(base)}, [])
    # Before 2026-12-02 these runs started in the repository, whose own package then came
    # first on the path: the "baseline" ran today's code. Check which package runs.
    where = subprocess.run(
        [sys.executable, "-c", "import raydenoise; print(raydenoise.__file__)"],
        env=job.env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(base.resolve()):
        raise SystemExit(f"the baseline would run {where}, not the code of {rev}")
    return job


def medians(trials: list[dict]) -> dict:
    """The median of each figure over a job's runs (figures some run lacks left out), the number
    of runs, and each run's pipeline and steady rates."""
    m: dict = {
        k: statistics.median(t[k] for t in trials)
        for k in trials[0]
        if all(t[k] is not None for t in trials)
    }
    m["runs"] = len(trials)
    for k in ("pipeline", "steady"):
        m[f"each_run_images_per_s_{k}"] = [t[f"images_per_s_{k}"] for t in trials]
    return m


def ratios(r: dict, jobs: list[str]) -> None:
    """Adds to ``r`` (one model's figures) ONNX Runtime's over torch's and each job's over the
    baseline's, for the pipeline and steady rates."""

    def rate(job: str, k: str) -> float:
        return r[job][f"images_per_s_{k}"] or 0

    if "torch" in r and "onnxruntime" in r:
        for k in ("pipeline", "steady"):
            r[f"onnxruntime_vs_torch_{k}"] = rate("onnxruntime", k) / (rate("torch", k) or 1)
    if "baseline" in r:
        for job in jobs:
            if job != "baseline":
                for k in ("pipeline", "steady"):
                    r[f"{job}_vs_baseline_{k}"] = rate(job, k) / (rate("baseline", k) or 1)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--models", default="seed-ae,unet")
    ap.add_argument(
        "--workers", type=int, default=None, help="model actors (default: raydenoise's own)"
    )
    ap.add_argument(
        "--engines",
        default="torch,onnxruntime",
        help="--engine values to run the raydenoise job with, side by side (auto = onnxruntime on CPU)",
    )
    ap.add_argument("--nlm-images", type=int, default=10)
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also run the denoise command of this git revision on the same files and weights",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each job, alternating their order; the median of each figure",
    )
    ap.add_argument("--out", default=str(HERE / "out" / "denoise.json"))
    args = ap.parse_args()

    import torch

    from raydenoise.models.architectures import build_model
    from raydenoise.models.artifacts import save_model_dir

    work = Path(tempfile.mkdtemp(prefix="raydenoise-bench-denoise-"))
    src = work / "noisy"
    make_images(src, args.images)
    mp = args.images * 400 * 600 / 1e6
    results = {
        "images": args.images,
        "size": "400x600",
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "models": {},
    }
    exe = str(Path(sys.executable).parent / "raydenoise")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with contextlib.ExitStack() as stack:  # the baseline worktree, removed however the run ends
        jobs = {e: Job([exe], env, ["--engine", e]) for e in args.engines.split(",")}
        if args.baseline:
            jobs["baseline"] = baseline_job(args.baseline, work, env, stack)
        files = Files(src, work, args.images, args.workers)
        for name in args.models.split(","):
            torch.manual_seed(0)
            if name.startswith("builtin:"):
                # the shipped weights (builtin:denoise is conditioned on the noise level), as a
                # folder so that a baseline revision runs the same weights
                from raydenoise.models.artifacts import builtin_dir

                model_dir = str(builtin_dir(name))
            else:
                model_dir = str(work / f"model-{name}")
                save_model_dir(model_dir, build_model(name).eval(), {"model": name, "width": None})
            tag = name.replace(":", "-")
            plain_s = plain_loop(model_dir, src, work / f"plain-{tag}")
            fast_s = plain_fast_loop(model_dir, src, work / f"fast-{tag}")
            r = {
                "plain_images_per_s": args.images / plain_s,
                "plain_megapixels_per_s": mp / plain_s,
                "plain_fast_images_per_s": args.images / fast_s,
            }
            # Each run --repeats times, the order reversed every other round (a run's figures
            # depend on what ran before it: caches, Ray's leftovers), then the median of each figure.
            trials: dict[str, list[dict]] = {job: [] for job in jobs}
            for round_ in range(args.repeats):
                order = list(jobs) if round_ % 2 == 0 else list(jobs)[::-1]
                for job in order:
                    label = f"{tag}-{job}-{round_}"
                    trials[job].append(job_figures(jobs[job], label, model_dir, files, r))
            for job in jobs:
                r[job] = medians(trials[job])
            ratios(r, list(jobs))
            results["models"][name] = r
            print(name, json.dumps(r, indent=1), flush=True)
        results["nl_means_images_per_s"] = nlm_rate(src, args.nlm_images)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
