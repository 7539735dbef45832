"""Quality table: built-in and trained models vs classical baselines, one run, every row of a
part on the same images.

    make setup && .venv/bin/python bench/quality.py --parts bsds --methods input,builtin:denoise,nlm
    .venv/bin/pip install bm3d && .venv/bin/python bench/quality.py    # all parts, CBM3D (~10 s/image)
    .venv/bin/python bench/quality.py --parts lol --lol /path/to/LOL/eval15   # low/ and normal/ (or high/)

Parts:
- ``bsds``: denoising on the first ``--limit`` bsds500/test photos by name, Gaussian noise at each
  ``--sigmas`` (sigma 0: the clean photos themselves, which a denoiser should leave alone), mean
  and worst-photo PSNR.
- ``estimator``: the blind noise-level estimate (``noise_level.estimate_sigma``) against the true
  sigma of Gaussian noise from 5 to 50 on every bsds500/test photo.
- ``jpeg``: the same photos with Gaussian noise (sigma 5-25) then stored as JPEG (quality 75-90),
  both drawn per photo: noise as a phone or camera file holds it.
- ``gray``: the same photos in grayscale, sigma 25.
- ``real``: real camera noise (``--real`` holds ``*_real.*`` noisy crops and ``*_mean.*``
  references, as the PolyU data set's ``CroppedImages``); used only to score.
- ``lowlight``: synthetic low light (``synth --noise low-light``, seeded) from bsds500/test photos,
  ``--lol-methods`` scored against the photos, and each method's brightness shift on the
  well-exposed photos themselves.
- ``lol``: low-light enhancement on LOL eval15 (``--lol`` holds ``low/`` and ``normal/``), methods
  ``--lol-methods`` (``input``, ``gamma``, ``builtin:NAME`` or a model folder), PSNR and SSIM.
- ``models``: every built-in's parameters, GMAC per megapixel and CPU megapixels/s (1 thread and
  all threads, a 481x321 image, tiling as ``denoise`` does).

For each sigma, every photo gets Gaussian noise seeded by (sigma, index), clipped and stored as
8 bits (as real files are); every method's output is quantized to 8 bits before scoring. CBM3D
(`bm3d`) is given the true sigma where there is one (Gaussian parts) and the estimate otherwise;
`bm3d-est` always gets the estimate; NLM (scikit-image) gets the estimate, as `raydenoise
evaluate` does. A method is `input`, `nlm`, `bm3d`, `bm3d-est`, `builtin:NAME` or a model folder
(blind: the level is estimated per image), or either of the last two with `+sigma` (a conditioned
model given the true sigma), `+tta` (self-ensemble) or `+bf16` (the torch-bf16 engine).
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
    """name -> f(noisy uint8, sigma or None) -> uint8."""
    from raydenoise.imaging.noise_level import estimate_sigma

    if name == "input":
        return lambda noisy, sigma: noisy
    if name == "nlm":
        from raydenoise.jobs.evaluate import nl_means

        return lambda noisy, sigma: nl_means(noisy)
    if name in ("bm3d", "bm3d-est"):
        try:
            import bm3d
        except ImportError:
            sys.exit("bench/quality.py: CBM3D needs the bm3d package: .venv/bin/pip install bm3d")

        def run(noisy, sigma):
            if sigma is None or name == "bm3d-est":
                sigma = max(estimate_sigma(noisy), 0.1)
            x = noisy.astype(np.float32) / 255
            out = (
                bm3d.bm3d_rgb(x, sigma_psd=sigma / 255)
                if noisy.ndim == 3
                else bm3d.bm3d(x, sigma_psd=sigma / 255)
            )
            return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)

        return run
    from raydenoise.models.artifacts import load_model_uri, resolve_model_uri
    from raydenoise.models.inference import Denoiser

    uri, _, given = name.partition("+")
    model, config = load_model_uri(resolve_model_uri(uri, None), None)
    den = Denoiser(model, config["model"], width=config.get("width"), tta=given == "tta")
    if given == "bf16":  # NAME+bf16: the torch-bf16 engine (CPUs with bfloat16 units only)
        from raydenoise.models.engines import TorchEngine

        den = Denoiser(TorchEngine(model, config["model"], width=config.get("width"), bf16=True))
    if given == "sigma":
        return lambda noisy, sigma: Denoiser(
            model, config["model"], width=config.get("width"), sigma=sigma
        )(noisy)
    return lambda noisy, sigma: den(noisy)  # NAME+tta: the mean of the 8 flips/rotations


def score(fn, inputs: list[np.ndarray], refs: list[np.ndarray]) -> dict:
    """Mean PSNR/SSIM/MAE of ``fn(input)`` (uint8 in, uint8 out) against ``refs``, and its
    seconds per image."""
    from raydenoise.imaging.metrics import all_metrics

    rows, t0 = [], time.perf_counter()
    for x, ref in zip(inputs, refs):
        out = fn(x)
        rows.append(all_metrics(out.astype(np.float32) / 255, ref.astype(np.float32) / 255))
    psnrs = [min(r["psnr"], 100.0) for r in rows]  # identical images: inf, counted as 100 dB
    return {
        "images": len(rows),
        "s_per_image": (time.perf_counter() - t0) / len(inputs),
        **{k: float(np.mean([r[k] for r in rows])) for k in ("ssim", "mae")},
        "psnr": float(np.mean(psnrs)),
        "psnr_min": float(np.min(psnrs)),
    }


def table(title: str, results: list[dict], key: str) -> None:
    print(
        f"\n| {title} | method | PSNR (dB) | worst PSNR | SSIM | s/image (1 core) |\n|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r[key]} | {r['method']} | {r['psnr']:.2f} | {r['psnr_min']:.2f} | {r['ssim']:.3f} | "
            f"{r['s_per_image']:.2f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bsds", default=str(HERE.parent.parent / "shared" / "data" / "bsds500"))
    ap.add_argument("--methods", default="input,builtin:denoise,nlm,bm3d")
    ap.add_argument("--sigmas", default="0,15,25,50")
    ap.add_argument("--limit", type=int, default=68, help="first N bsds500/test photos by name")
    ap.add_argument("--parts", default="bsds,estimator,jpeg,gray,real,lol,lowlight,models")
    ap.add_argument(
        "--real",
        default="/work/data/polyu/CroppedImages",
        help="*_real.* noisy crops, *_mean.* references",
    )
    ap.add_argument(
        "--real-every", type=int, default=1, help="score every N-th real crop by name (1: all)"
    )
    ap.add_argument(
        "--lol", default="/work/data/lol/dataset/test", help="LOL eval15: low/ and normal/"
    )
    ap.add_argument("--lol-methods", default="input,gamma,builtin:seed-ae,builtin:low-light")
    ap.add_argument("--out", default=str(HERE / "out" / "quality.json"))
    args = ap.parse_args()
    parts = args.parts.split(",")
    report = {}
    if "bsds" in parts:
        report["bsds"] = bsds_part(args)
    if "estimator" in parts:
        report["estimator"] = estimator_part(args)
    if "jpeg" in parts:
        report["jpeg"] = jpeg_part(args)
    if "gray" in parts:
        report["gray"] = gray_part(args)
    if "real" in parts:
        report["real"] = real_part(args)
    if "lol" in parts:
        report["lol"] = lol_part(args)
    if "lowlight" in parts:
        report["lowlight"] = lowlight_part(args)
    if "models" in parts:
        report["models"] = models_part()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


def bsds_part(args) -> dict:
    import torch

    from raydenoise.imaging.noise import apply_noise, parse_noise

    torch.set_num_threads(1)  # every method on one core, so seconds per image compare
    files, cleans = bsds_test(args, args.limit)
    methods = args.methods.split(",")
    fns = {m: method_fn(m) for m in methods}
    results = []
    for sigma in (int(s) for s in args.sigmas.split(",")):
        noisy = [
            apply_noise(c, parse_noise(f"gaussian:{sigma}"), np.random.default_rng([sigma, i]))
            for i, c in enumerate(cleans)
        ]
        for m in methods:
            if sigma == 0 and m.startswith("bm3d"):
                continue  # CBM3D with sigma 0 is the identity
            row = {"sigma": sigma, "method": m, **score(lambda n: fns[m](n, sigma), noisy, cleans)}
            print(json.dumps(row), flush=True)
            results.append(row)
    table("σ", results, "sigma")
    return {"photos": [f.name for f in files], "rows": results}


def bsds_test(args, limit: int | None) -> tuple[list[Path], list[np.ndarray]]:
    from raydenoise.imaging.images import decode_rgb8

    files = sorted((Path(args.bsds) / "test").glob("*.jpg"))[:limit]
    return files, [decode_rgb8(f.read_bytes()) for f in files]


def estimator_part(args) -> dict:
    """estimate_sigma / true sigma on every bsds500/test photo, Gaussian noise 5-50."""
    from raydenoise.imaging.noise import apply_noise, parse_noise
    from raydenoise.imaging.noise_level import estimate_sigma

    _, cleans = bsds_test(args, None)
    rows = []
    print(
        "\n| true σ | photos | mean estimate / σ | worst error | within 15% |\n|---|---|---|---|---|"
    )
    for sigma in (5, 10, 15, 25, 35, 50):
        ratios = np.array(
            [
                estimate_sigma(
                    apply_noise(
                        c, parse_noise(f"gaussian:{sigma}"), np.random.default_rng([sigma, i])
                    )
                )
                / sigma
                for i, c in enumerate(cleans)
            ]
        )
        row = {
            "sigma": sigma,
            "photos": len(ratios),
            "mean_ratio": float(ratios.mean()),
            "worst_error": float(np.abs(ratios - 1).max()),
            "within_15pct": float((np.abs(ratios - 1) <= 0.15).mean()),
        }
        rows.append(row)
        print(
            f"| {sigma} | {len(ratios)} | {row['mean_ratio']:.3f} | {100 * row['worst_error']:.1f}% | "
            f"{100 * row['within_15pct']:.1f}% |",
            flush=True,
        )
    clean = [estimate_sigma(c) for c in cleans]
    print(f"clean photos: estimate mean {np.mean(clean):.2f}, max {np.max(clean):.2f}")
    # Time per image: the photos as they are, and one tiled up to 12 megapixels (3000x4000).
    noisy = [
        apply_noise(c, parse_noise("gaussian:25"), np.random.default_rng(i))
        for i, c in enumerate(cleans[:20])
    ]
    t0 = time.perf_counter()
    for x in noisy:
        estimate_sigma(x)
    small_ms = 1000 * (time.perf_counter() - t0) / len(noisy)
    big = np.tile(noisy[0], (3000 // noisy[0].shape[0] + 1, 4000 // noisy[0].shape[1] + 1, 1))[
        :3000, :4000
    ]
    t0 = time.perf_counter()
    estimate_sigma(big)
    big_ms = 1000 * (time.perf_counter() - t0)
    print(
        f"estimate_sigma: {small_ms:.1f} ms per {noisy[0].shape[1]}x{noisy[0].shape[0]} photo, {big_ms:.0f} ms at 12 MP"
    )
    return {
        "rows": rows,
        "clean_mean": float(np.mean(clean)),
        "clean_max": float(np.max(clean)),
        "ms_per_photo": small_ms,
        "ms_12mp": big_ms,
    }


def jpeg_part(args) -> dict:
    """Gaussian noise (sigma 5-25), then JPEG (quality 75-90), drawn per photo."""
    from raydenoise.imaging.noise import apply_noise, parse_noise

    _, cleans = bsds_test(args, args.limit)
    spec = parse_noise("gaussian:5-25,jpeg=75-90")
    noisy = [apply_noise(c, spec, np.random.default_rng([1975, i])) for i, c in enumerate(cleans)]
    return _score_methods(args, "JPEG noisy", noisy, cleans)


def gray_part(args) -> dict:
    """Grayscale photos (one channel) with Gaussian noise sigma 25."""
    from raydenoise.imaging.noise import apply_noise, parse_noise
    from raydenoise.imaging.patches import to_gray

    _, cleans = bsds_test(args, args.limit)
    grays = [to_gray(c) for c in cleans]
    noisy = [
        apply_noise(g[..., None], parse_noise("gaussian:25"), np.random.default_rng([25, i]))[
            ..., 0
        ]
        for i, g in enumerate(grays)
    ]
    return _score_methods(args, "gray σ25", noisy, grays, sigma=25.0)


def real_part(args) -> dict:
    """Real camera noise: ``*_real.*`` crops against their ``*_mean.*`` references."""
    from raydenoise.imaging.images import decode_rgb8

    root = Path(args.real)
    reals = sorted(p for p in root.glob("*_real.*"))[:: args.real_every]
    if not reals:
        sys.exit(f"bench/quality.py: {root} has no *_real.* images (--real)")
    noisy = [decode_rgb8(p.read_bytes()) for p in reals]
    refs = [
        decode_rgb8(p.with_name(p.name.replace("_real.", "_mean.")).read_bytes()) for p in reals
    ]
    return _score_methods(args, "real noise", noisy, refs)


def _score_methods(
    args, title: str, noisy: list[np.ndarray], refs: list[np.ndarray], sigma: float | None = None
) -> dict:
    import torch

    torch.set_num_threads(1)
    results = []
    for m in args.methods.split(","):
        if m.endswith("+sigma") and sigma is None:
            continue
        fn = method_fn(m)
        row = {"set": title, "method": m, **score(lambda n: fn(n, sigma), noisy, refs)}
        print(json.dumps(row), flush=True)
        results.append(row)
    table("set", results, "set")
    return {"images": len(noisy), "rows": results}


def lol_part(args) -> dict:
    """LOL eval15 (or any folder of low/ + normal/ pairs): enhanced low vs normal, 8-bit outputs."""
    import torch

    from raydenoise.imaging.images import decode_rgb8
    from raydenoise.jobs.evaluate import gamma_curve

    torch.set_num_threads(1)
    root = Path(args.lol)
    high_dir = root / "normal" if (root / "normal").is_dir() else root / "high"
    files = sorted((root / "low").glob("*.png"))
    if not files or not high_dir.is_dir():
        sys.exit(
            f"bench/quality.py: {root} needs low/*.png and normal/ (or high/) with the same names"
        )
    lows = [decode_rgb8(f.read_bytes()) for f in files]
    highs = [decode_rgb8((high_dir / f.name).read_bytes()) for f in files]
    results = []
    for m in args.lol_methods.split(","):
        fn = gamma_curve if m == "gamma" else (lambda low, f=method_fn(m): f(low, None))  # noqa: B008
        row = {"method": m, **score(fn, lows, highs)}
        print(json.dumps(row), flush=True)
        results.append(row)
    print("\n| LOL eval15 method | PSNR (dB) | SSIM | s/image (1 core) |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['s_per_image']:.2f} |")
    for name, value in PUBLISHED_LOL.items():
        print(f"| {name} (published) | {value:.2f} | | |")
    return {"images": [f.name for f in files], "rows": results, "published_psnr": PUBLISHED_LOL}


# LOL eval15 PSNR as the papers report it (not measured here), for the table beside ours.
PUBLISHED_LOL = {
    "RetinexNet": 16.77,
    "KinD": 20.86,
    "IAT (90k parameters)": 23.38,
    "Retinexformer": 25.16,
}


def lowlight_part(args) -> dict:
    """Synthetic low light from bsds500/test photos no model saw: each photo darkened with noise
    exactly as ``raydenoise synth --noise low-light`` does (seed 0, per-image seeds from the
    file name), enhanced by ``--lol-methods`` and scored against the photo; and the same methods
    on the photos themselves, already well exposed: how far the mean brightness moves (a
    low-light model must not push a bright photo to white)."""
    import torch

    from raydenoise.imaging.images import decode_rgb8
    from raydenoise.imaging.noise import apply_noise, parse_noise
    from raydenoise.jobs.evaluate import gamma_curve
    from raydenoise.jobs.synth import image_seed

    torch.set_num_threads(1)
    files = sorted((Path(args.bsds) / "test").glob("*"))[: args.limit]
    highs = [decode_rgb8(f.read_bytes()) for f in files]
    spec = parse_noise("low-light")
    lows = [
        apply_noise(h, spec, np.random.default_rng(image_seed(0, f.name)))
        for f, h in zip(files, highs)
    ]
    results = []
    for m in args.lol_methods.split(","):
        fn = gamma_curve if m == "gamma" else (lambda low, f=method_fn(m): f(low, None))  # noqa: B008
        row = {"method": m, **score(fn, lows, highs)}
        shifts = [
            float(fn(h).astype(np.float64).mean() - h.astype(np.float64).mean()) / 255
            for h in highs
        ]
        row |= {
            "bright_mean_shift": float(np.mean(shifts)),
            "bright_max_shift": float(np.max(np.abs(shifts))),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    print(
        f"\n| synthetic low light, {len(files)} bsds500/test photos | PSNR (dB) | SSIM | "
        "well-exposed photo: mean brightness shift (mean, largest) |\n|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['bright_mean_shift']:+.3f}, "
            f"{r['bright_max_shift']:.3f} |"
        )
    return {"images": [f.name for f in files], "rows": results}


def matmul_peak_gflops(threads: int) -> float:
    """This CPU's measured float32 matrix-multiply rate (GFLOP/s) on ``threads`` threads: the
    ceiling a convolution network's MACs could reach."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(1024, 1024), torch.rand(1024, 1024)
    a @ b
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 2 or n < 5:
        a @ b
        n += 1
    return n * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


def models_part() -> dict:
    """Parameters, GMAC/MP and CPU MP/s (1 thread and all threads) of every built-in, for each
    engine (torch, ONNX Runtime, torch-bf16 where the CPU has bfloat16 units), and as a fraction of
    the CPU's measured matmul peak (float32)."""
    import os

    import torch

    from raydenoise.models.architectures import macs_per_megapixel
    from raydenoise.models.artifacts import BUILTIN, builtin_names, load_model_uri
    from raydenoise.models.engines import OrtEngine, TorchEngine, fast_bf16_cpu
    from raydenoise.models.inference import Denoiser
    from raydenoise.models.onnx_graph import export_onnx

    image = np.random.default_rng(0).integers(0, 256, (321, 481, 3), dtype=np.uint8)
    all_threads = os.cpu_count() or 1
    peak = {t: matmul_peak_gflops(t) for t in (1, all_threads)}
    rows = []
    for name in builtin_names():
        model, config = load_model_uri(BUILTIN + name, None)
        graph = export_onnx(model, config)
        row = {
            "model": BUILTIN + name,
            "network": config["model"],
            "params": sum(p.numel() for p in model.parameters()),
            "gmac_per_mp": macs_per_megapixel(model),
        }
        for threads in (1, all_threads):
            torch.set_num_threads(threads)
            engines = {
                "torch": Denoiser(model, config["model"], width=config.get("width")),
                "onnxruntime": Denoiser(OrtEngine(graph, name, threads=threads)),
            }
            if fast_bf16_cpu():  # bfloat16 only where the CPU computes it natively
                engines["torch-bf16"] = Denoiser(
                    TorchEngine(model, config["model"], width=config.get("width"), bf16=True)
                )
            for engine, den in engines.items():
                den(image)  # warm-up
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < 3 or n < 3:
                    den(image)
                    n += 1
                mps = n * image.shape[0] * image.shape[1] / 1e6 / (time.perf_counter() - t0)
                row[f"{engine}_mp_per_s_{threads}t"] = mps
                row[f"{engine}_of_peak_{threads}t"] = 2 * row["gmac_per_mp"] * mps / peak[threads]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"rows": rows, "cpu_threads": all_threads, "matmul_peak_gflops": peak}


if __name__ == "__main__":
    main()
