"""The seed notebook's table on BSDS500: `raydenoise evaluate` for trained models, side by side.

    python bench/evaluate.py --bsds ../shared/data/bsds500                 # ~30 min on 2 CPUs
    python bench/evaluate.py --bsds ../shared/data/bsds500 --noises gaussian:25 --budget 120

For each noise: bsds500/train is synthesized and ingested (train/val 90/10), bsds500/test (200
photos) is synthesized and ingested as the test split; `seed-ae` (the notebook's recipe) and
`unet` are each trained with `raydenoise train --time-limit BUDGET` (1 worker), and
`raydenoise evaluate` scores each model, the noisy input and scikit-image Non-Local Means on the
whole test split. Everything runs through the command line, as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import ingest, quiet  # noqa: E402  (bench/train.py: ingest once, shared)


def prepare(bsds: Path, work: Path, noise: str, log) -> tuple[str, str]:
    """Synthesize + ingest bsds500/train (train/val 90/10) and bsds500/test (all test)."""
    from raydenoise.jobs.synth import SynthConfig, run_synth

    tag = noise.replace(":", "")
    out = []
    for part, split in (("train", (0.9, 0.1, 0.0)), ("test", (0.0, 0.0, 1.0))):
        pairs = work / f"{tag}-{part}-pairs"
        if not (pairs / "high").exists():
            run_synth(
                SynthConfig(out=str(pairs), clean=str(bsds / part), noise=noise, seed=1), log=quiet
            )
        out.append(
            ingest(str(pairs / "low"), str(pairs / "high"), work / f"{tag}-{part}-ds", split)
        )
    log(f"data ready: {noise}")
    return out[0], out[1]


def cli(*args: str) -> None:
    exe = str(Path(sys.executable).parent / "raydenoise")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"raydenoise {args[0]} failed")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bsds", required=True, help="folder with train/ and test/ photos")
    ap.add_argument("--noises", default="gaussian:25,low-light")
    ap.add_argument("--budget", type=float, default=240.0, help="training seconds per model")
    ap.add_argument("--work", default=None, help="working folder (default: a new temp folder)")
    ap.add_argument("--out", default=str(HERE / "out" / "evaluate.json"))
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="raydenoise-bench-eval-"))
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    results: dict = {"budget_s": args.budget, "cpus": os.cpu_count(), "tables": {}}
    for noise in args.noises.split(","):
        train_ds, test_ds = prepare(Path(args.bsds), work, noise, log)
        tag = noise.replace(":", "")
        tables = {}
        for model in ("seed-ae", "unet"):
            name = f"{tag}-{model}"
            log(f"train {name} for {args.budget:g} s")
            cli(
                "train",
                "--data",
                train_ds,
                "--model",
                model,
                "--storage-path",
                str(work / "runs"),
                "--name",
                name,
                "--epochs",
                "1000",
                "--time-limit",
                str(args.budget),
                "--num-workers",
                "1",
            )
            log(f"evaluate {name}")
            cli(
                "evaluate",
                "--data",
                test_ds,
                "--model",
                str(work / "runs" / name / "model"),
                "--split",
                "test",
            )
            tables[model] = json.loads(
                (work / "runs" / name / "model/eval/test/table.json").read_text()
            )["table"]
        results["tables"][noise] = tables
        print(noise, json.dumps(tables, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
