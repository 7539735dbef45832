"""Quality table: built-in and trained models vs classical baselines, one run, every row of a
part on the same images.

    make setup && .venv/bin/python bench/quality.py --parts bsds --methods input,builtin:denoise,nlm
    .venv/bin/pip install bm3d && .venv/bin/python bench/quality.py    # all parts, CBM3D (~10 s/image)
    .venv/bin/python bench/quality.py --parts lol --lol /path/to/LOL/eval15   # low/ and normal/ (or high/)

Parts:
- ``bsds``: denoising on the first ``--limit`` bsds500/test photos by name.
- ``lol``: low-light enhancement on LOL eval15 (``--lol`` holds ``low/`` and ``normal/``), methods
  ``--lol-methods`` (``input``, ``gamma``, ``builtin:NAME`` or a model folder), PSNR and SSIM.
- ``models``: every built-in's parameters, GMAC per megapixel and CPU megapixels/s (1 thread and
  all threads, a 481x321 image, tiling as ``denoise`` does).

For each sigma, every photo gets Gaussian noise seeded by (sigma, index), clipped and stored as
8 bits (as real files are); every method's output is quantized to 8 bits before scoring. CBM3D
is given the true sigma; NLM (scikit-image) estimates it, as `raydenoise evaluate` does.
A method is `input`, `nlm`, `bm3d`, `builtin:NAME` or a model folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def method_fn(name: str):
    """name -> f(noisy uint8, sigma) -> uint8."""
    if name == "input":
        return lambda noisy, sigma: noisy
    if name == "nlm":
        from raydenoise.evaluate import nl_means

        return lambda noisy, sigma: nl_means(noisy)
    if name == "bm3d":
        try:
            import bm3d
        except ImportError:
            sys.exit("bench/quality.py: CBM3D needs the bm3d package: .venv/bin/pip install bm3d")

        def run(noisy, sigma):
            out = bm3d.bm3d_rgb(noisy.astype(np.float32) / 255, sigma_psd=sigma / 255)
            return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)

        return run
    from raydenoise.artifacts import load_model_uri, resolve_model_uri
    from raydenoise.inference import Denoiser

    model, config = load_model_uri(resolve_model_uri(name, None), None)
    den = Denoiser(model, config["model"], width=config.get("width"))
    return lambda noisy, sigma: den(noisy)


def score(fn, inputs: list[np.ndarray], refs: list[np.ndarray]) -> dict:
    """Mean PSNR/SSIM/MAE of ``fn(input)`` (uint8 in, uint8 out) against ``refs``, and its
    seconds per image."""
    from raydenoise.metrics import all_metrics

    rows, t0 = [], time.perf_counter()
    for x, ref in zip(inputs, refs):
        out = fn(x)
        rows.append(all_metrics(out.astype(np.float32) / 255, ref.astype(np.float32) / 255))
    return {"images": len(rows), "s_per_image": (time.perf_counter() - t0) / len(inputs),
            **{k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "mae")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bsds", default=str(HERE.parent.parent / "shared" / "data" / "bsds500"))
    ap.add_argument("--methods", default="input,builtin:denoise,nlm,bm3d")
    ap.add_argument("--sigmas", default="15,25,50")
    ap.add_argument("--limit", type=int, default=68, help="first N bsds500/test photos by name")
    ap.add_argument("--parts", default="bsds,lol,models")
    ap.add_argument("--lol", default="/work/data/lol/dataset/test", help="LOL eval15: low/ and normal/")
    ap.add_argument("--lol-methods", default="input,gamma,builtin:seed-ae,builtin:low-light")
    ap.add_argument("--out", default=str(HERE / "out" / "quality.json"))
    args = ap.parse_args()
    parts = args.parts.split(",")
    report = {}
    if "bsds" in parts:
        report["bsds"] = bsds_part(args)
    if "lol" in parts:
        report["lol"] = lol_part(args)
    if "models" in parts:
        report["models"] = models_part()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


def bsds_part(args) -> dict:
    import torch

    from raydenoise.images import decode_rgb8
    from raydenoise.noise import apply_noise, parse_noise

    torch.set_num_threads(1)  # every method on one core, so seconds per image compare
    files = sorted((Path(args.bsds) / "test").glob("*.jpg"))[: args.limit]
    cleans = [decode_rgb8(f.read_bytes()) for f in files]
    methods = args.methods.split(",")
    fns = {m: method_fn(m) for m in methods}
    results = []
    for sigma in (int(s) for s in args.sigmas.split(",")):
        noisy = [apply_noise(c, parse_noise(f"gaussian:{sigma}"), np.random.default_rng([sigma, i]))
                 for i, c in enumerate(cleans)]
        for m in methods:
            row = {"sigma": sigma, "method": m, **score(lambda n: fns[m](n, sigma), noisy, cleans)}
            print(json.dumps(row), flush=True)
            results.append(row)
    print("\n| σ | method | PSNR (dB) | SSIM | s/image (1 core) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['sigma']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['s_per_image']:.2f} |")
    return {"photos": [f.name for f in files], "rows": results}


def lol_part(args) -> dict:
    """LOL eval15 (or any folder of low/ + normal/ pairs): enhanced low vs normal, 8-bit outputs."""
    import torch

    from raydenoise.evaluate import gamma_curve
    from raydenoise.images import decode_rgb8

    torch.set_num_threads(1)
    root = Path(args.lol)
    high_dir = root / "normal" if (root / "normal").is_dir() else root / "high"
    files = sorted((root / "low").glob("*.png"))
    if not files or not high_dir.is_dir():
        sys.exit(f"bench/quality.py: {root} needs low/*.png and normal/ (or high/) with the same names")
    lows = [decode_rgb8(f.read_bytes()) for f in files]
    highs = [decode_rgb8((high_dir / f.name).read_bytes()) for f in files]
    results = []
    for m in args.lol_methods.split(","):
        fn = gamma_curve if m == "gamma" else (lambda low, f=method_fn(m): f(low, None))
        row = {"method": m, **score(fn, lows, highs)}
        print(json.dumps(row), flush=True)
        results.append(row)
    print("\n| LOL eval15 method | PSNR (dB) | SSIM | s/image (1 core) |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['s_per_image']:.2f} |")
    return {"images": [f.name for f in files], "rows": results}


def models_part() -> dict:
    """Parameters, GMAC/MP and CPU MP/s (1 thread and all threads) of every built-in."""
    import os

    import torch

    from raydenoise.artifacts import BUILTIN, builtin_names, load_model_uri
    from raydenoise.inference import Denoiser
    from raydenoise.models import macs_per_megapixel

    image = np.random.default_rng(0).integers(0, 256, (321, 481, 3), dtype=np.uint8)
    rows = []
    for name in builtin_names():
        model, config = load_model_uri(BUILTIN + name, None)
        den = Denoiser(model, config["model"], width=config.get("width"))
        row = {"model": BUILTIN + name, "network": config["model"],
               "params": sum(p.numel() for p in model.parameters()),
               "gmac_per_mp": macs_per_megapixel(model)}
        for threads in (1, os.cpu_count() or 1):
            torch.set_num_threads(threads)
            den(image)  # warm-up
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < 3 or n < 3:
                den(image)
                n += 1
            row[f"mp_per_s_{threads}t"] = n * image.shape[0] * image.shape[1] / 1e6 / (time.perf_counter() - t0)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"rows": rows, "cpu_threads": os.cpu_count()}


if __name__ == "__main__":
    main()
