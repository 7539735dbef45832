"""Built-in models: shipped in the package, loaded offline, listed by `raydenoise models`, the
default of `denoise`."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from raydenoise.imaging.images import decode_rgb8
from raydenoise.imaging.metrics import psnr
from raydenoise.imaging.noise import apply_noise, parse_noise
from raydenoise.models.artifacts import ArtifactError, builtin_names, load_model_uri
from raydenoise.models.inference import Denoiser

from conftest import png_bytes, run_cli, write

ROOT = Path(__file__).resolve().parents[2]


def photo() -> np.ndarray:
    return skdata.astronaut()[100:260, 140:340]  # 160 x 200, a face and textures


def gain(model_uri: str, clean: np.ndarray, noise: str) -> float:
    model, config = load_model_uri(model_uri, None)
    noisy = apply_noise(clean, parse_noise(noise), np.random.default_rng(0))
    out = Denoiser(model, config["model"], width=config.get("width"))(noisy)
    ref = clean.astype(np.float32) / 255
    return psnr(out.astype(np.float32) / 255, ref) - psnr(noisy.astype(np.float32) / 255, ref)


def test_the_denoiser_ships_and_raises_psnr_at_every_level():
    assert "denoise" in builtin_names()
    for noise, at_least in (
        ("gaussian:15", 4.0),
        ("gaussian:25", 6.0),
        ("gaussian:50", 8.0),
        ("poisson-gaussian:peak=30,read=5", 5.0),
    ):
        assert gain("builtin:denoise", photo(), noise) > at_least, noise


def test_the_denoiser_leaves_clean_photos_alone_and_takes_a_level():
    """A clean photo (no noise added) comes back nearly as it was; the model is conditioned on
    the noise level, which it estimates per image, and strength 0 is the input bit for bit."""
    model, config = load_model_uri("builtin:denoise", None)
    assert config["model"] == "swift-cond"
    clean = photo()
    out = Denoiser(model, config["model"])(clean)
    assert psnr(out.astype(np.float32) / 255, clean.astype(np.float32) / 255) > 40
    assert np.array_equal(Denoiser(model, config["model"], strength=0.0)(clean), clean)
    gray = clean[..., 1]
    noisy = apply_noise(gray[..., None], parse_noise("gaussian:25"), np.random.default_rng(0))[
        ..., 0
    ]
    den = Denoiser(model, config["model"])(noisy)
    ref = gray.astype(np.float32) / 255
    assert (
        psnr(den.astype(np.float32) / 255, ref) - psnr(noisy.astype(np.float32) / 255, ref) > 5.0
    )  # grayscale too


BRIGHT_BAND = 0.12  # see MODELS.md, builtin:low-light: the measured shifts are 0.02-0.10


@pytest.mark.parametrize("name, at_least", [("seed-ae", 6.0), ("low-light", 12.0)])
def test_the_low_light_models_ship_and_brighten_a_dark_noisy_photo(name, at_least):
    """A LOL-like capture (darkened, gamma, shot and read noise) of a photo no model saw."""
    assert name in builtin_names()
    assert gain(f"builtin:{name}", photo(), "low-light") > at_least


def test_the_low_light_model_sees_the_whole_image_and_leaves_well_exposed_photos_near_their_brightness():
    """builtin:low-light is a swift-global: tiled and untiled outputs agree (the whole image's
    context reaches every tile), and a photo that is already well exposed is not pushed to
    white: its mean brightness moves by at most BRIGHT_BAND (of full scale)."""

    model, config = load_model_uri("builtin:low-light", None)
    assert config["model"] == "swift-global"
    dark = apply_noise(photo(), parse_noise("low-light"), np.random.default_rng(1))
    whole = Denoiser(model, config["model"])(dark)
    tiled = Denoiser(model, config["model"], tile=96)(dark)
    assert np.abs(whole.astype(int) - tiled).max() <= 1
    for name in ("astronaut", "coffee", "chelsea"):  # means 0.37-0.49 of full scale
        bright = np.ascontiguousarray(getattr(skdata, name)()[:256, :256])
        out = Denoiser(model, config["model"])(bright)
        shift = (out.astype(np.float64).mean() - bright.astype(np.float64).mean()) / 255
        assert abs(shift) <= BRIGHT_BAND, (name, shift)
        assert (out >= 250).mean() < (bright >= 250).mean() + 0.02  # no new blown highlights


def test_unknown_builtin_names_the_available_ones():
    with pytest.raises(
        ArtifactError, match="unknown built-in model 'builtin:nope'; available: .*builtin:denoise"
    ):
        load_model_uri("builtin:nope", None)


def test_models_command_lists_every_builtin():
    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(builtin_names())
    assert any(
        line.startswith("builtin:denoise") and "swift" in line and "parameters" in line
        for line in lines
    )


@pytest.mark.slow
def test_denoise_needs_no_model_argument(ray_cluster, tmp_path):
    clean = photo()
    for i in range(2):
        write(
            tmp_path / f"in/{i}.png",
            png_bytes(apply_noise(clean, parse_noise("gaussian:25"), np.random.default_rng(i))),
        )
    r = run_cli(
        "denoise",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        address=ray_cluster,
    )
    assert r.returncode == 0, r.stderr
    ref = clean.astype(np.float32) / 255
    for i in range(2):
        noisy = decode_rgb8((tmp_path / f"in/{i}.png").read_bytes()).astype(np.float32) / 255
        out = decode_rgb8((tmp_path / f"out/{i}.png").read_bytes()).astype(np.float32) / 255
        assert psnr(out, ref) > psnr(noisy, ref) + 5
    r = run_cli(
        "denoise",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "o2"),
        "--model",
        "builtin:nope",
        address=ray_cluster,
    )
    assert (
        r.returncode == 1
        and "available: builtin:denoise" in r.stderr
        and "Traceback" not in r.stderr
    )


@pytest.mark.slow
def test_a_wheel_built_from_the_repo_carries_the_weights(tmp_path):
    """The wheel holds every built-in's files, and they load from the unpacked wheel alone."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("raydenoise-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in builtin_names():
            assert {
                f"raydenoise/models/weights/{name}/config.json",
                f"raydenoise/models/weights/{name}/model.safetensors",
            } <= names
        z.extractall(tmp_path / "unpacked")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import raydenoise.models.artifacts as a; "
        "assert a.__file__.startswith(sys.argv[1]), a.__file__; m, c = a.load_model_uri('builtin:denoise', None); "
        "print(c['model'])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "unpacked")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and r.stdout.strip() == "swift-cond", r.stderr
