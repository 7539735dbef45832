"""Driver memory and planning time over buckets of many objects (issue 14).

For N tiny PNGs in a local folder (1,000 per sub-folder), measured on the driver process alone
(its peak RSS from wait4, so Ray is never involved):

- ``dry-run``: ``raydenoise denoise --dry-run`` with no outputs yet (every input to do);
- ``dry-run, all done``: the same with an output for every input (hard links), as a fully resumed
  job plans it: the two listings merged as sorted streams;
- ``dry-run --format jpeg``: the dry run over the all-done state with every output renamed
  (N.png -> N.jpg): the inputs sorted by output name (5,000 in memory, the rest in sorted runs
  on local disk), merged with the output listing, and sorted back into input order;
- ``resumed job``: the real ``denoise`` (not a dry run) over the same folders after a completed
  run: its report (OUTPUT/_report/report.parquet, one completion row per output with the size
  and tag listed for it, as a finished run leaves it) vouches for every output, so the job plans,
  keeps every output without reading it and writes the full report again: listing, merging,
  report parts and report assembly, all streamed; Ray is not started (nothing to do);
- ``ingest dry-run``: ``raydenoise ingest --dry-run --low IN --high OUTPUT``: every input has a
  partner, so N pairs are planned: both listings streamed, sorted by id (5,000 keys in memory,
  the rest in sorted runs on local disk) and merged;
- ``list + set (before)``: what denoise did before planning, side by side: the whole input listing
  as a list plus the output listing as a set (``Store.list_keys``).

    .venv/bin/python bench/scale.py                      # 10,000 and 100,000
    .venv/bin/python bench/scale.py --sizes 10000 100000 1000000 --s3 100000

``--s3 N`` also plans N objects on a SeaweedFS bucket (started on 127.0.0.1 like the tests').
Trees are kept under --dir between runs (creating 1,000,000 files takes a few minutes).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "raydenoise"
PER_FOLDER = 1000


def tiny_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def keys(n: int):
    return (f"d{i // PER_FOLDER:04d}/{i:07d}.png" for i in range(n))


def make_tree(base: Path, n: int) -> Path:
    """BASE/N/in (N files) and BASE/N/done (a hard link to each: every output present)."""
    root = base / str(n)
    if (root / "complete").exists():
        if not (root / "done" / "_report" / "report.parquet").exists():
            completed_report(str(root / "done"))
        return root
    data = [tiny_png(s) for s in range(16)]
    for i, key in enumerate(keys(n)):
        p = root / "in" / key
        if i % PER_FOLDER == 0:
            p.parent.mkdir(parents=True, exist_ok=True)
            (root / "done" / key).parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data[i % 16])
        os.link(p, root / "done" / key)
    completed_report(str(root / "done"))
    (root / "complete").write_text("ok")
    return root


def completed_report(out_uri: str, env: dict | None = None) -> None:
    """OUTPUT/_report as a completed run leaves it: a completion row per output (status ok, the
    listed size and tag), written as a stream like the job writes it. The rows of a real run are
    trusted the same way (tests/jobs/test_faults.py test_12)."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from raydenoise.ledger import report as rpt
from raydenoise.models.artifacts import resolve_model_uri
from raydenoise.jobs.denoise import DenoiseConfig, made_by, model_spec
from raydenoise.storage.parts import Writer
from raydenoise.storage.store import open_store
out = open_store(sys.argv[1])
rep = open_store(out.uri("_report"))
# What made the outputs, as the job records it: builtin:denoise with the default options (the
# outputs are hard links to the inputs, so the input's size and tag are the output's).
cfg = DenoiseConfig(input="", output=sys.argv[1])
stamp = made_by(cfg, model_spec(cfg, resolve_model_uri(cfg.model, None), None))
with Writer(rep, "report.parquet", rpt.SCHEMA) as w:
    for e in out.iter_entries():
        if not e.key.startswith("_report/"):
            w.write(rpt.blank_row(e.key, status="ok", width=8, height=8, seconds=0.01, output_bytes=e.size,
                                  output_tag=e.tag, input_bytes=e.size, input_tag=e.tag, **stamp))
rep.write_bytes("summary.json", json.dumps({{"run": ""}}).encode())
"""
    subprocess.run(
        [sys.executable, "-c", code, out_uri], check=True, env={**os.environ, **(env or {})}
    )


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(peak RSS MB, seconds, stdout) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out[-2000:]}")
    return usage.ru_maxrss / 1024, seconds, out


BEFORE = """
import sys
from raydenoise.storage.store import open_store
inputs = open_store(sys.argv[1]).list_keys()
existing = set(open_store(sys.argv[2]).list_keys())
print(len(inputs), len(existing))
"""


def run(label: str, n: int, inp: str, out: str, env: dict | None = None) -> list[dict]:
    rows = []
    for case, output in (("dry-run", out + "-none"), ("dry-run, all done", out)):
        rss, s, text = measure(
            [str(EXE), "denoise", "--input", inp, "--output", output, "--dry-run"], env
        )
        assert f"{n:,} input" in text, text
        rows.append(
            {
                "where": label,
                "objects": n,
                "case": case,
                "peak_rss_mb": round(rss, 1),
                "seconds": round(s, 2),
            }
        )
        print(rows[-1], flush=True)
    # --format renames every output (N.png -> N.jpg): the inputs are sorted by output name on
    # local disk (an external sort) to merge them with the output listing, and sorted back.
    rss, s, text = measure(
        [str(EXE), "denoise", "--input", inp, "--output", out, "--dry-run", "--format", "jpeg"],
        env,
    )
    assert f"{n:,} to do" in text, text
    rows.append(
        {
            "where": label,
            "objects": n,
            "case": "dry-run --format jpeg",
            "peak_rss_mb": round(rss, 1),
            "seconds": round(s, 2),
        }
    )
    print(rows[-1], flush=True)
    rss, s, text = measure(
        [str(EXE), "denoise", "--input", inp, "--output", out, "--model", "builtin:denoise"], env
    )
    assert (
        f"{n:,} with an output the earlier report vouches for" in text and f"{n:,} skipped" in text
    ), text
    rows.append(
        {
            "where": label,
            "objects": n,
            "case": "resumed job",
            "peak_rss_mb": round(rss, 1),
            "seconds": round(s, 2),
        }
    )
    print(rows[-1], flush=True)
    rss, s, text = measure(
        [str(EXE), "ingest", "--low", inp, "--high", out, "--out", out + "-dataset", "--dry-run"],
        env,
    )
    assert f"{n:,} pairs" in text, text
    rows.append(
        {
            "where": label,
            "objects": n,
            "case": "ingest dry-run",
            "peak_rss_mb": round(rss, 1),
            "seconds": round(s, 2),
        }
    )
    print(rows[-1], flush=True)
    rss, s, _ = measure([sys.executable, "-c", BEFORE, inp, out], env)
    rows.append(
        {
            "where": label,
            "objects": n,
            "case": "list + set (before)",
            "peak_rss_mb": round(rss, 1),
            "seconds": round(s, 2),
        }
    )
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--s3", type=int, default=0, help="also N objects on a local SeaweedFS bucket")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/raydenoise-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/scale.json")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        root = make_tree(args.dir, n)
        print(f"{n:,} files ready in {time.perf_counter() - t0:.0f} s", flush=True)
        rows += run("local", n, str(root / "in"), str(root / "done"))
    if args.s3:
        rows += run_s3(args.s3, args.dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"-> {args.out}")


def run_s3(n: int, base: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import (
        start_weed,
        stop_weed,
    )  # the tests' SeaweedFS helper (127.0.0.1, free ports)

    proc, server, _ = start_weed(base / "weed")
    try:
        fs = server.fs()
        data = [tiny_png(s) for s in range(16)]
        batch: dict[str, bytes] = {}
        for i, k in enumerate(keys(n)):
            batch[f"{server.bucket}/in/{k}"] = data[i % 16]
            if len(batch) == 5000 or i == n - 1:  # 5,000 PUTs at a time, inputs and their outputs
                fs.pipe(batch)
                fs.pipe({p.replace("/in/", "/done/", 1): v for p, v in batch.items()})
                batch = {}
        env = {
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_ACCESS_KEY_ID": "raydenoise-test-key",
            "AWS_SECRET_ACCESS_KEY": "raydenoise-test-secret",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        completed_report(f"s3://{server.bucket}/done", env)
        return run("SeaweedFS", n, f"s3://{server.bucket}/in", f"s3://{server.bucket}/done", env)
    finally:
        stop_weed(proc)


if __name__ == "__main__":
    main()
