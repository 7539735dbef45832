"""The Python API: `import raydenoise` for notebooks and programs."""

import subprocess
import sys

import numpy as np
import pytest
from skimage import data as skdata

import raydenoise
from raydenoise.imaging.metrics import psnr
from raydenoise.imaging.noise import apply_noise, parse_noise

from conftest import png_bytes, write


def noisy_photo(sigma=25, seed=0):
    clean = skdata.astronaut()[100:228, 140:300]
    return clean, apply_noise(clean, parse_noise(f"gaussian:{sigma}"), np.random.default_rng(seed))


def db(img, ref):
    return psnr(img.astype(np.float32) / 255, ref.astype(np.float32) / 255)


def test_every_public_name_is_listed_and_loads():
    assert set(raydenoise.__all__) == {"__version__", *raydenoise._LAZY}
    assert all(getattr(raydenoise, name) is not None for name in raydenoise.__all__)


def test_importing_the_package_loads_neither_torch_nor_ray():
    code = "import sys, raydenoise; print(raydenoise.__version__, 'torch' in sys.modules, 'ray' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == [raydenoise.__version__, "False", "False"], r.stdout + r.stderr


@pytest.mark.parametrize(
    "module, heavy",
    [
        # what a denoise worker imports when it unpickles its actor, before its first image
        ("raydenoise.jobs.denoise.stages", ["scipy.stats", "scipy.ndimage", "onnx", "torch"]),
        # the command line, before it checks anything
        ("raydenoise.cli.main", ["scipy.stats", "scipy.ndimage", "onnx", "torch", "ray"]),
    ],
)
def test_the_start_up_path_imports_nothing_heavy_it_does_not_use(module, heavy):
    """Each of these took 0.4-0.8 s of the first image (BENCHMARKS.md, start-up): the package's
    names load lazily, SSIM loads SciPy on first use, and workers check a graph through ONNX
    Runtime rather than the onnx package."""
    code = f"import sys, {module}; print([m for m in {heavy!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_a_worker_loads_a_graph_and_denoises_without_onnx_or_scipy_stats(tmp_path):
    """What a denoise actor does before its first image, in a fresh process: the engine from the
    graph the driver prepared, then one noisy image through the Denoiser (noise-level estimate
    included)."""
    from raydenoise.models.engines import prepare_graph

    (tmp_path / "g.onnx").write_bytes(prepare_graph("builtin:denoise", None, "onnxruntime"))
    code = (
        "import sys, numpy as np\n"
        "from raydenoise.models.engines import make_engine\n"
        "from raydenoise.models.inference import Denoiser\n"
        f"graph = open({str(tmp_path / 'g.onnx')!r}, 'rb').read()\n"
        "engine = make_engine('builtin:denoise', None, 'onnxruntime', graph, threads=1)\n"
        "img = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)\n"
        "assert Denoiser(engine)(img).shape == img.shape\n"
        "print([m for m in ('onnx', 'scipy.stats', 'torch') if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_load_model_denoises_arrays_in_three_lines():
    clean, noisy = noisy_photo()
    model = raydenoise.load_model("builtin:denoise")
    out = model(noisy)
    assert out.shape == noisy.shape and out.dtype == np.uint8
    assert db(out, clean) > db(noisy, clean) + 5
    gray = noisy[..., 1]
    g = model(gray)
    assert (
        g.shape == gray.shape
        and g.dtype == np.uint8
        and db(g, clean[..., 1]) > db(gray, clean[..., 1]) + 1
    )
    assert model.network == "swift-cond" and model.conditioned and model.parameters > 100_000
    assert "builtin:denoise" in repr(model)


def test_tiling_gives_the_same_image_and_tensors_work_too():
    import torch

    _, noisy = noisy_photo()
    whole = raydenoise.load_model("builtin:denoise")(noisy)
    tiled = raydenoise.load_model("builtin:denoise", tile=64)(noisy)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    model = raydenoise.load_model("builtin:denoise")
    x = torch.from_numpy(np.stack([noisy, noisy])).permute(0, 3, 1, 2).float() / 255
    y = model.tensor(x)
    assert (
        y.shape == x.shape
        and y.dtype == torch.float32
        and float(y.min()) >= 0
        and float(y.max()) <= 1
    )
    assert np.abs((y[0].permute(1, 2, 0).numpy() * 255).round() - whole).max() <= 1


def test_strength_zero_gives_the_input_back_and_the_noise_level_is_measured():
    clean, noisy = noisy_photo()
    assert np.array_equal(raydenoise.load_model("builtin:denoise", strength=0)(noisy), noisy)
    model = raydenoise.load_model("builtin:denoise")
    assert model.noise_level(noisy) == pytest.approx(25, rel=0.15) and model.noise_level(clean) < 3
    weak, strong = (raydenoise.load_model("builtin:denoise", strength=s)(noisy) for s in (0.3, 1.0))
    assert db(weak, noisy) > db(strong, noisy)  # a lower strength changes the photo less
    with pytest.raises(ValueError, match="--strength must be"):
        raydenoise.load_model("builtin:denoise", strength=-1)


def test_paths_and_missing_models_are_handled_not_raw_library_errors(tmp_path):
    import pathlib

    with pytest.raises(raydenoise.ArtifactError, match="expected builtin:NAME, a model folder"):
        raydenoise.load_model(None)
    with pytest.raises(raydenoise.ArtifactError, match="missing config.json"):
        raydenoise.load_model(pathlib.Path(tmp_path))
    with pytest.raises(
        raydenoise.DenoiseError, match="no such file"
    ):  # a Path is a path, not a crash
        raydenoise.denoise(
            input=pathlib.Path(tmp_path / "missing"), output=pathlib.Path(tmp_path / "out")
        )


def test_bad_inputs_are_exceptions_with_reasons():
    model = raydenoise.load_model("builtin:denoise")
    with pytest.raises(
        ValueError, match=r"expected uint8 or uint16 \(H, W, 3\) or \(H, W\), got float64"
    ):
        model(np.zeros((8, 8, 3)))
    with pytest.raises(TypeError, match="expected a numpy uint8 array, got list"):
        model([[1, 2]])
    import torch

    with pytest.raises(ValueError, match=r"expected a float tensor \(N, 3, H, W\)"):
        model.tensor(torch.zeros(3, 8, 8))
    with pytest.raises(raydenoise.ArtifactError, match="available: builtin:denoise"):
        raydenoise.load_model("builtin:nope")
    with pytest.raises(TypeError, match="DenoiseConfig has no field outptu"):
        raydenoise.denoise(input="a", outptu="b")


def test_job_errors_are_exceptions_before_ray_starts(tmp_path):
    code = (
        "import raydenoise, ray\n"
        "try:\n"
        f"    raydenoise.denoise(input={str(tmp_path / 'missing')!r}, output={str(tmp_path / 'o')!r})\n"
        "except raydenoise.DenoiseError as e:\n"
        "    print('DenoiseError', e)\n"
        "print('ray started:', ray.is_initialized())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (
        "DenoiseError" in r.stdout
        and "no such file" in r.stdout
        and "ray started: False" in r.stdout
    ), r.stdout + r.stderr


def test_builtin_models_lists_cards():
    cards = raydenoise.builtin_models()
    assert "builtin:denoise" in cards and cards["builtin:denoise"]["task"]


@pytest.mark.slow
def test_denoise_and_evaluate_jobs_return_their_summaries(ray_cluster, tmp_path):
    clean, _ = noisy_photo()
    for i in range(3):
        write(tmp_path / f"high/{i}.png", png_bytes(clean))
        write(tmp_path / f"low/{i}.png", png_bytes(noisy_photo(seed=i)[1]))
    lines = []
    summary = raydenoise.denoise(
        raydenoise.DenoiseConfig(
            input=str(tmp_path / "low"),
            output=str(tmp_path / "out"),
            reference=str(tmp_path / "high"),
        ),
        log=lines.append,
    )
    assert (
        summary["ok"] == 3 and summary["failures"] == 0 and summary["metrics"]["psnr"]["mean"] > 28
    )
    assert lines[-1].startswith("denoise: 3 written")
    res = raydenoise.ingest(
        low=str(tmp_path / "low"),
        high=str(tmp_path / "high"),
        out=str(tmp_path / "data"),
        split=(0.0, 0.0, 1.0),
        log=lines.append,
    )
    assert res.manifest["counts"]["test"] == 3 and res.manifest["phases"]["check_s"] >= 0
    table = raydenoise.evaluate(
        data=str(tmp_path / "data"),
        model="builtin:denoise",
        out=str(tmp_path / "eval"),
        log=lines.append,
    )
    assert table["model"]["psnr"] > table["noisy input"]["psnr"] + 5
