"""Where the time of one denoised image goes, in one process, as a CPU `denoise` actor spends it.

    .venv/bin/python bench/per_image.py --bsds ../shared/data/bsds500 --images 10

On noisy 400x600 photos (``bsds500/train`` photos resized, Gaussian noise σ 15 stored as 8 bits,
as the job benchmark's inputs): decoding, the input's noise-level estimate (which conditions the
network), the network of ``builtin:denoise`` per engine at one thread (level given; ONNX Runtime also with
the network exported as trained, without ``models/folding.py``'s inference form), the
output's estimate (the report's residual level), and PNG encoding of the output by Pillow at
zlib level 1 (what raydenoise used before) and by raydenoise's writer (imaging/png.py), side by
side, with their file sizes. Every figure is the best of ``--repeats`` per image, averaged over
the images (milliseconds).

``--actor``: also the whole path of one image through a CPU actor's own functions (read_one,
denoise_states, finish_one: read, decode, both estimates, the network, encode, write), per
engine, in one process alone and in two processes at once (as the job's two actors run on a
2-core machine): milliseconds per image, each process over ``--images`` images after one warm-up.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def best_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def pillow_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bsds", default="../shared/data/bsds500")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", default="onnxruntime,torch,torch-bf16")
    ap.add_argument(
        "--actor", action="store_true", help="also the actor path, alone and two at once"
    )
    ap.add_argument("--actor-run", nargs=2, metavar=("ENGINE", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "out" / "per_image.json"))
    args = ap.parse_args()
    if args.actor_run:
        print(json.dumps(actor_ms(*args.actor_run)))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from raydenoise.imaging.encode import encode_like
    from raydenoise.imaging.images import decode_rgb8
    from raydenoise.imaging.noise_level import REPORT_PATCHES, estimate_sigma
    from raydenoise.models.artifacts import load_model_uri
    from raydenoise.models.engines import EngineError, OrtEngine, make_engine, prepare_graph
    from raydenoise.models.inference import Denoiser
    from raydenoise.models.onnx_graph import export_onnx

    files = sorted(Path(args.bsds, "train").glob("*.jpg"))[: args.images]
    if not files:
        sys.exit(f"no photos in {args.bsds}/train")
    rng = np.random.default_rng(0)
    noisy = []
    for f in files:
        clean = np.asarray(Image.open(f).convert("RGB").resize((600, 400), Image.BICUBIC))
        noisy.append(
            np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).round().astype(np.uint8)
        )
    files_png = [pillow_png(x) for x in noisy]

    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    graph = prepare_graph("builtin:denoise", None, "onnxruntime")
    engines = {}
    for name in args.engines.split(","):
        try:
            engine = make_engine(
                "builtin:denoise", None, name, graph if name == "onnxruntime" else None, threads=1
            )
        except EngineError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        engines[name] = Denoiser(engine, sigma=15.0)
        if name == "onnxruntime":  # the same network exported as trained, without folding
            model, config = load_model_uri("builtin:denoise", None)
            trained = OrtEngine(export_onnx(model, config, fold=False), "unfolded", threads=1)
            engines["onnxruntime, unfolded"] = Denoiser(trained, sigma=15.0)
    for den in engines.values():
        den(noisy[0])  # warm-up
    for x, data in zip(noisy, files_png):
        add("decode", best_ms(lambda: decode_rgb8(data), args.repeats))
        add("input estimate", best_ms(lambda: estimate_sigma(x), args.repeats))
        out = None
        for name, den in engines.items():
            add(f"network, {name}", best_ms(lambda: den(x), args.repeats))
            out = den(x)
        assert out is not None
        add("output estimate", best_ms(lambda: estimate_sigma(out, REPORT_PATCHES), args.repeats))
        add("encode, Pillow level 1", best_ms(lambda: pillow_png(out), args.repeats))
        add(
            "encode, raydenoise",
            best_ms(lambda: encode_like(out, None, False, "PNG"), args.repeats),
        )
        ours = encode_like(out, None, False, "PNG")
        add("kB, Pillow level 1", len(pillow_png(out)) / 1000)
        add("kB, raydenoise", len(ours) / 1000)
        back = np.asarray(Image.open(io.BytesIO(ours)))
        assert np.array_equal(back, out), "the PNG writer must be lossless"

    result = {k: round(float(np.mean(v)), 2) for k, v in rows.items()}
    result["encode speed-up"] = round(
        result["encode, Pillow level 1"] / result["encode, raydenoise"], 2
    )
    result["size ratio"] = round(result["kB, raydenoise"] / result["kB, Pillow level 1"], 3)
    result["images"] = len(noisy)
    if "network, onnxruntime, unfolded" in result:
        result["network speed-up of folding"] = round(
            result["network, onnxruntime, unfolded"] / result["network, onnxruntime"], 3
        )
    if args.actor:
        result.update(actor_part(noisy, [e for e in args.engines.split(",") if e in engines]))
    for k, v in result.items():
        print(f"{k:28s} {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


def actor_ms(engine: str, folder: str) -> float:
    """Milliseconds per image of a CPU actor's path (the job's own functions, no Ray) over the
    PNGs in ``folder``/in, written to ``folder``/out-PID; the first image is a warm-up."""
    from raydenoise.jobs.denoise.image import denoise_states, finish_one, read_one
    from raydenoise.jobs.denoise.stages import ModelActor, ModelSpec
    from raydenoise.jobs.denoise.state import _Stores
    from raydenoise.models.engines import prepare_graph

    spec = ModelSpec(
        "builtin:denoise", None, engine, prepare_graph("builtin:denoise", None, engine)
    )
    actor = ModelActor(spec, False)
    stores = _Stores(f"{folder}/in", f"{folder}/out-{os.getpid()}", None, None, None)
    keys = sorted(os.listdir(f"{folder}/in"))

    def one(key: str) -> None:
        state = read_one(key, False, stores)
        denoise_states(actor.denoiser, [state])
        row = finish_one(state, stores)
        assert row["status"] == "ok", row

    one(keys[0])
    t0 = time.perf_counter()
    for key in keys[1:]:
        one(key)
    return (time.perf_counter() - t0) / max(len(keys) - 1, 1) * 1000.0


def actor_part(noisy: list[np.ndarray], engines: list[str]) -> dict:
    import subprocess
    import tempfile

    result = {}
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(f"{folder}/in")
        for i, x in enumerate(noisy):
            Path(folder, "in", f"{i:03d}.png").write_bytes(pillow_png(x))
        cmd = [sys.executable, __file__, "--actor-run"]
        for engine in engines:
            alone = subprocess.run(
                [*cmd, engine, folder], capture_output=True, text=True, check=True
            )
            result[f"actor, {engine}, alone"] = round(json.loads(alone.stdout.splitlines()[-1]), 1)
            procs = [
                subprocess.Popen([*cmd, engine, folder], stdout=subprocess.PIPE, text=True)
                for _ in range(2)
            ]
            both = [json.loads(p.communicate()[0].splitlines()[-1]) for p in procs]
            result[f"actor, {engine}, two at once"] = round(float(np.mean(both)), 1)
    return result


if __name__ == "__main__":
    main()
