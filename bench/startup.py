"""Start-up and terminal output of `raydenoise denoise`, before vs after, side by side in one run.

    .venv/bin/python bench/startup.py --baseline 15ec878 --images 20 --repeats 3

For each version (a git revision checked out in a temporary worktree, and the working tree),
alternating, on the same 20 generated noisy 256x256 PNGs and the builtin:denoise model:
- ``error_s``: seconds from the command to its exit for a missing --input (a user mistake);
- ``first_image_s``: seconds from the command to the first output image on disk;
- ``total_s``: seconds to the command's exit;
- ``lines``: lines the command printed (stdout and stderr), and the first few of them.
Each run starts its own local Ray instance, as a user's first command does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from baseline import checkout  # bench/baseline.py (this folder is on the path when run)
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, n: int) -> None:
    from skimage import data

    photo = data.astronaut()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y, x = (i * 37) % 250, (i * 53) % 250
        clean = photo[y : y + 256, x : x + 256].astype(np.float32)
        noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:03d}.png")


def run(code: Path, args: list[str], cwd: Path, watch: Path | None = None) -> dict:
    # Run from a neutral folder: `python -m` puts the working directory first on sys.path.
    env = {**os.environ, "PYTHONPATH": str(code), "RAY_ADDRESS": ""}
    first: list[float] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "raydenoise.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )
    if watch is not None:

        def poll() -> None:
            while proc.poll() is None and not first:
                if watch.exists() and any(p.suffix == ".png" for p in watch.iterdir()):
                    first.append(time.perf_counter() - t0)
                time.sleep(0.05)

        threading.Thread(target=poll, daemon=True).start()
    out, _ = proc.communicate(timeout=600)
    total = time.perf_counter() - t0
    lines = [line for line in out.splitlines() if line.strip()]
    return {
        "rc": proc.returncode,
        "total_s": total,
        "first_image_s": first[0] if first else None,
        "lines": len(lines),
        "output": lines,
    }


def start_warm_cluster(work: Path):
    """`ray start --head --block` in a session of its own (stopped by killing that session,
    never `ray stop`, which would stop every Ray on the machine); returns (process, address)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="rd-warm-"))
    log = work / "head.log"
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    deadline = time.time() + 120
    while b"block forever" not in log.read_bytes():
        if time.time() > deadline or head.poll() is not None:
            raise SystemExit("the warm cluster did not start: " + log.read_text()[-2000:])
        time.sleep(0.5)
    return head, f"127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--baseline", required=True, help="git revision to compare with the working tree"
    )
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "startup.json"))
    ap.add_argument(
        "--warm",
        action="store_true",
        help="also run the working tree on a local cluster kept warm with `ray start --head` (--address)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rd-startup-"))
    stack = contextlib.ExitStack()  # the baseline worktree, removed in the finally below
    base = stack.enter_context(checkout(args.baseline, work / "baseline"))
    versions: dict[str, tuple[Path, list[str]]] = {"before": (base, []), "after": (ROOT, [])}
    head = None
    inputs = work / "in"
    make_inputs(inputs, args.images)
    results: dict[str, list[dict]] = {v: [] for v in [*versions, "after, warm cluster"]}
    # The cold runs first, with no other Ray on the machine: a warm cluster running beside them
    # would hold the ports and cores a fresh Ray's start-up waits for (BENCHMARKS.md).
    rounds = [(r, name) for r in range(args.repeats) for name in versions]
    if args.warm:
        rounds += [(r, "after, warm cluster") for r in range(args.repeats)]
    else:
        results.pop("after, warm cluster")
    try:
        for r, name in rounds:
            if name == "after, warm cluster" and head is None:
                head, address = start_warm_cluster(work)
                versions[name] = (ROOT, ["--address", address])
            code, extra = versions[name]
            err = run(
                code,
                ["denoise", "--input", str(work / "missing"), "--output", str(work / "x")],
                work,
            )
            out = work / f"out-{name.replace(' ', '-').replace(',', '')}-{r}"
            res = run(
                code,
                ["denoise", "--input", str(inputs), "--output", str(out), *extra],
                work,
                watch=out,
            )
            res["error_s"], res["error_output"] = err["total_s"], err["output"]
            print(
                json.dumps(
                    {
                        "version": name,
                        "repeat": r,
                        **{k: v for k, v in res.items() if k != "output"},
                    }
                ),
                flush=True,
            )
            results[name].append(res)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if head is not None:
            import signal

            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for name, rows in results.items():
        summary[name] = {
            k: statistics.median(r[k] for r in rows)
            for k in ("error_s", "first_image_s", "total_s", "lines")
        }
        summary[name]["example_output"] = rows[-1]["output"]
    ratios = {
        k: summary["after"][k] / summary["before"][k]
        for k in ("error_s", "first_image_s", "total_s")
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"summary": summary, "ratios_after_over_before": ratios, "runs": results}, indent=2
        )
    )
    warm = "after, warm cluster" in summary
    print(
        f"\n| | before ({args.baseline}) | after | after/before |{' after, warm cluster |' if warm else ''}"
        f"\n|---|---|---|---|{'---|' if warm else ''}"
    )
    for k in ("error_s", "first_image_s", "total_s"):
        print(
            f"| {k} (median of {args.repeats}) | {summary['before'][k]:.2f} | {summary['after'][k]:.2f} | "
            f"{ratios[k]:.2f} |" + (f" {summary['after, warm cluster'][k]:.2f} |" if warm else "")
        )
    print(
        f"| lines printed | {summary['before']['lines']:.0f} | {summary['after']['lines']:.0f} | |"
    )
    for name in versions:
        print(f"\n{name}:\n" + "\n".join("    " + line for line in summary[name]["example_output"]))


if __name__ == "__main__":
    main()
