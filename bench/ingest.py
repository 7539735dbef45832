"""Ingest benchmark: `raydenoise ingest` vs the seed notebook's approach, side by side.

For each size (default 100 and 1,000 synthetic 400x600 pairs) it runs, in this order:
  seed     — a subprocess that reads every pair sequentially into memory (PIL -> numpy) and
             pickles chunks of 100 pairs, as the notebook did (pickle appears only here, to
             reproduce the baseline; raydenoise itself never pickles data);
  ray      — `raydenoise ingest` as a subprocess, starting its own local Ray instance.
Peak RSS is the maximum, over time, of the summed RSS of the subprocess and all its descendants
(Ray's GCS, raylet and workers included), sampled every 50 ms with psutil.

    python bench/ingest.py                  # 100 and 1000 pairs, results in bench/out/ingest.json
    python bench/ingest.py --sizes 100      # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

HERE = Path(__file__).resolve().parent

SEED_BASELINE = r"""
import pickle, sys, os
import numpy as np
from PIL import Image
low_dir, high_dir, out_dir = sys.argv[1:4]
names = sorted(os.listdir(low_dir), key=lambda n: int(n.split(".")[0]))
low, high = [], []
for n in names:  # everything is read into memory first, as in the notebook
    low.append(np.asarray(Image.open(os.path.join(low_dir, n)).convert("RGB")))
    high.append(np.asarray(Image.open(os.path.join(high_dir, n)).convert("RGB")))
for i in range(0, len(names), 100):
    with open(os.path.join(out_dir, f"chunk_{i // 100}.pkl"), "wb") as f:
        pickle.dump((low[i:i + 100], high[i:i + 100]), f)
"""


def make_pairs(root: Path, n: int) -> None:
    """n pairs of 400x600: the high side is a shifted crop of a photo, the low side gaussian:25."""
    from skimage import data

    photo = data.coffee()  # 400x600x3, ships with scikit-image
    big = np.concatenate([photo, photo[:, ::-1]], axis=1)
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir(parents=True)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        off = (i * 7) % 600
        high = np.ascontiguousarray(big[:, off : off + 600])
        low = np.clip(high + rng.normal(0, 25, high.shape), 0, 255).astype(np.uint8)
        Image.fromarray(high).save(root / "high" / f"{i}.png", compress_level=1)
        Image.fromarray(low).save(root / "low" / f"{i}.png", compress_level=1)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd; return wall seconds, peak summed RSS of its process tree (bytes), exit code."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    t0 = time.perf_counter()
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        print(out.decode(errors="replace")[-3000:], file=sys.stderr)
    return {
        "seconds": wall,
        "peak_rss": peak,
        "rc": proc.returncode,
        "log": out.decode(errors="replace"),
    }


def bench_size(n: int, work: Path) -> dict:
    root = work / f"pairs{n}"
    make_pairs(root, n)
    in_bytes = sum(p.stat().st_size for p in root.rglob("*.png"))
    seed_out = work / f"seed{n}"
    seed_out.mkdir()
    seed = run_measured(
        [sys.executable, "-c", SEED_BASELINE, str(root / "low"), str(root / "high"), str(seed_out)]
    )
    exe = str(Path(sys.executable).parent / "raydenoise")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a fresh local Ray
    ray = run_measured(
        [
            exe,
            "ingest",
            "--low",
            str(root / "low"),
            "--high",
            str(root / "high"),
            "--out",
            str(work / f"ds{n}"),
        ],
        env=env,
    )
    manifest = json.loads((work / f"ds{n}" / "manifest.json").read_text())
    assert manifest["counts"]["total"] == n, manifest["counts"]
    result = {
        "pairs": n,
        "input_mb": in_bytes / 1e6,
        "seed_seconds": seed["seconds"],
        "seed_pairs_per_s": n / seed["seconds"],
        "seed_peak_rss_mb": seed["peak_rss"] / 1e6,
        "ray_seconds": ray["seconds"],
        "ray_pairs_per_s": n / ray["seconds"],
        # time from the first shard task to the manifest: excludes Ray start-up and listing
        "ray_pipeline_seconds": manifest["seconds"],
        "ray_pipeline_pairs_per_s": n / manifest["seconds"],
        "ray_peak_rss_mb": ray["peak_rss"] / 1e6,
        "ray_shards": len(manifest["shards"]),
    }
    shutil.rmtree(root)
    shutil.rmtree(seed_out)
    shutil.rmtree(work / f"ds{n}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--out", default=str(HERE / "out" / "ingest.json"))
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="raydenoise-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"benchmarking {n} pairs ...", flush=True)
        results.append(bench_size(n, work))
        print(json.dumps(results[-1], indent=1), flush=True)
    summary = {"cpus": os.cpu_count(), "results": results}
    if len(results) >= 2:
        a, b = results[0], results[-1]
        summary["rss_growth"] = {
            "seed": b["seed_peak_rss_mb"] / a["seed_peak_rss_mb"],
            "ray": b["ray_peak_rss_mb"] / a["ray_peak_rss_mb"],
        }
    for r in results:
        r["speedup_end_to_end"] = r["ray_pairs_per_s"] / r["seed_pairs_per_s"]
        r["speedup_pipeline"] = r["ray_pipeline_pairs_per_s"] / r["seed_pairs_per_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(
        "\n| pairs | seed pairs/s | raydenoise pairs/s (end to end) | (pipeline) | speedup e2e | speedup pipeline | seed peak RSS MB | raydenoise peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['pairs']} | {r['seed_pairs_per_s']:.1f} | {r['ray_pairs_per_s']:.1f} | {r['ray_pipeline_pairs_per_s']:.1f} | "
            f"{r['speedup_end_to_end']:.2f}x | {r['speedup_pipeline']:.2f}x | {r['seed_peak_rss_mb']:.0f} | {r['ray_peak_rss_mb']:.0f} |"
        )
    if "rss_growth" in summary:
        g = summary["rss_growth"]
        print(
            f"\npeak RSS growth {results[0]['pairs']} -> {results[-1]['pairs']} pairs: seed {g['seed']:.2f}x, raydenoise {g['ray']:.2f}x"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
