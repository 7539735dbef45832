"""Quality table: built-in and trained models vs classical baselines on bsds500/test, one run,
every row on the same photos and the same noise.

    make setup && .venv/bin/python bench/quality.py --methods input,builtin:denoise,nlm --limit 68
    .venv/bin/pip install bm3d && .venv/bin/python bench/quality.py    # adds CBM3D (~10 s per image)

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bsds", default=str(HERE.parent.parent / "shared" / "data" / "bsds500"))
    ap.add_argument("--methods", default="input,builtin:denoise,nlm,bm3d")
    ap.add_argument("--sigmas", default="15,25,50")
    ap.add_argument("--limit", type=int, default=68, help="first N bsds500/test photos by name")
    ap.add_argument("--out", default=str(HERE / "out" / "quality.json"))
    args = ap.parse_args()

    import torch

    from raydenoise.images import decode_rgb8
    from raydenoise.metrics import all_metrics
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
            rows, t0 = [], time.perf_counter()
            for c, n in zip(cleans, noisy):
                out = fns[m](n, sigma)
                rows.append(all_metrics(out.astype(np.float32) / 255, c.astype(np.float32) / 255))
            seconds = (time.perf_counter() - t0) / len(cleans)
            row = {"sigma": sigma, "method": m, "images": len(rows), "s_per_image": seconds,
                   **{k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "mae")}}
            print(json.dumps(row), flush=True)
            results.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"photos": [f.name for f in files], "rows": results}, indent=2))
    print(f"\n| σ | method | PSNR (dB) | SSIM | s/image (1 core) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['sigma']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['s_per_image']:.2f} |")


if __name__ == "__main__":
    main()
