"""Peak memory of denoising one large photo: automatic tiling vs --tile 512 vs untiled.

Each variant runs in its own process (so peaks do not mix) and does what one fused denoise
actor does per image: decode the file, denoise, encode the output in the input's format. The
figure is the process's peak resident memory (VmHWM) minus its resident memory just before the
file is decoded (torch and the model loaded).

    make setup && .venv/bin/python bench/memory.py                  # 8000x6000 JPEG, seed-ae (~2 min)
    .venv/bin/python bench/memory.py --model unet --size 4000x3000  # unet untiled needs ~10 GB here
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photo(path: Path, h: int, w: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [127 + 100 * np.sin(x / 97), 127 + 100 * np.cos(y / 71), 127 + 60 * np.sin((x + y) / 53)],
        -1,
    )
    noisy = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, format="JPEG", quality=90)


def _status_kb(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process in KiB. Not
    ru_maxrss: Linux carries that across exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def one(model_dir: str, photo: str, mode: str) -> None:
    """Child process: report {"peak_mb", "seconds", "tile"} as JSON on stdout."""
    import torch

    from raydenoise.imaging.encode import encode_like
    from raydenoise.imaging.images import decode_for_denoise
    from raydenoise.models.artifacts import load_model
    from raydenoise.models.inference import Denoiser

    torch.set_num_threads(1)  # what a 1-CPU actor gets
    model, config = load_model(model_dir)
    kw = (
        {"tile": 512}
        if mode == "tile512"
        else {"memory_budget": 1 << 50}
        if mode == "untiled"
        else {}
    )
    d = Denoiser(model, config["model"], width=config.get("width"), **kw)
    data = Path(photo).read_bytes()
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    dec = decode_for_denoise(data, max_pixels=None)
    out = d(dec.rgb)
    encoded = encode_like(out, dec.alpha, dec.gray, dec.format)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    print(
        json.dumps(
            {
                "peak_mb": (peak - base) / 1024,
                "seconds": seconds,
                "tile": d.tile_for(*dec.rgb.shape[:2]),
                "budget_mb": d.memory_budget / 2**20,
                "bytes_out": len(encoded),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="seed-ae", choices=("seed-ae", "unet"))
    p.add_argument("--size", default="8000x6000", help="WIDTHxHEIGHT of the photo")
    p.add_argument("--modes", default="auto,tile512,untiled")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        one(*args.child)
        return
    import torch

    from raydenoise.models.architectures import build_model
    from raydenoise.models.artifacts import save_model_dir

    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        save_model_dir(
            tmp / "model", build_model(args.model).eval(), {"model": args.model, "width": 32}
        )
        make_photo(tmp / "photo.jpg", h, w)
        print(
            f"{args.model}, one {w}x{h} JPEG ({w * h / 1e6:.0f} MP), 1 thread; peak = process peak RSS minus "
            "RSS just before decoding"
        )
        print(f"{'mode':<9} {'tile':>6} {'peak MB':>9} {'seconds':>8}")
        for mode in args.modes.split(","):
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--model",
                    args.model,
                    "--child",
                    str(tmp / "model"),
                    str(tmp / "photo.jpg"),
                    mode,
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode:
                print(
                    f"{mode:<9} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
                )
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            print(
                f"{mode:<9} {res['tile'] or '-'!s:>6} {res['peak_mb']:>9.0f} {res['seconds']:>8.1f}"
                + (f"   (budget {res['budget_mb']:.0f} MB)" if mode == "auto" else "")
            )


if __name__ == "__main__":
    main()
