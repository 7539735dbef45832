"""Inference engines (raydenoise.models.engines): ONNX export, ONNX Runtime against torch, the contract
a foreign ONNX graph must meet, and self-ensemble."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from raydenoise.models.artifacts import load_model_uri
from raydenoise.models.engines import EngineError, OrtEngine, fast_bf16_cpu
from raydenoise.models.inference import Denoiser
from raydenoise.models.onnx_graph import check_onnx, export_onnx, legacy_exporter

from conftest import rgb


def photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A real photo crop (skimage's astronaut) with Gaussian noise: what the engines must agree on."""
    from skimage import data

    img = data.astronaut()[100 : 100 + h, 150 : 150 + w].astype(np.float32)
    noisy = img + np.random.default_rng(seed).normal(0, 15, img.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def graphs():
    out = {}
    for name in ("builtin:denoise", "builtin:seed-ae"):
        model, config = load_model_uri(name, None)
        out[name] = (model, config, export_onnx(model, config))
    return out


@pytest.mark.parametrize("name", ["builtin:denoise", "builtin:seed-ae"])
def test_onnx_runtime_equals_torch_within_one_level_tiled_and_untiled(graphs, name):
    model, config, graph = graphs[name]
    image = photo(101, 147)  # not a multiple of any stride
    torch_out = Denoiser(model, config["model"], width=config.get("width"))(image)
    for tile in (None, 64):
        ort_out = Denoiser(OrtEngine(graph, name, threads=1), tile=tile)(image)
        assert np.abs(ort_out.astype(int) - torch_out.astype(int)).max() <= 1, tile
    tiny = photo(9, 13)  # smaller than the size multiple (16 for swift)
    diff = Denoiser(OrtEngine(graph, name, threads=1))(tiny).astype(int) - Denoiser(
        model, config["model"]
    )(tiny)
    assert np.abs(diff).max() <= 1
    info = OrtEngine(graph, name).info  # the export carries what tiling needs
    assert (info.margin, info.multiple, info.conditioned) == (
        (112, 16, True) if name == "builtin:denoise" else (32, 4, False)
    )


def test_the_export_shows_no_deprecation_notice_but_other_warnings_still_show():
    model, config = load_model_uri("builtin:seed-ae", None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        export_onnx(model, config)
    assert not [w for w in seen if issubclass(w.category, DeprecationWarning)], seen
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with legacy_exporter():  # silenced by their text: anything else still shows
            warnings.warn("some other notice", DeprecationWarning, stacklevel=1)
            warnings.warn(
                "The feature will be removed. Please remove", DeprecationWarning, stacklevel=1
            )
    assert [str(w.message) for w in seen] == ["some other notice"]


def _foreign(model: nn.Module, shape=(1, 3, 32, 32), dynamic=True, names=("image",)) -> bytes:
    buf = io.BytesIO()
    dyn = {"image": {0: "n", 2: "h", 3: "w"}, "out": {0: "n", 2: "h", 3: "w"}} if dynamic else None
    with legacy_exporter():  # as export_onnx does: its deprecation notice is known
        torch.onnx.export(
            model.eval(),
            (torch.rand(*shape),),
            buf,
            input_names=list(names),
            output_names=["out"],
            dynamic_axes=dyn,
            dynamo=False,
        )
    return buf.getvalue()


class _Blur(nn.Module):
    def __init__(self, ch: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / (9 * ch))

    def forward(self, x):
        return self.conv(x)


class _Classifier(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_a_foreign_graph_that_meets_the_contract_runs_and_others_are_refused_with_the_reason():
    blur = _foreign(_Blur())
    out = Denoiser(OrtEngine(blur, "blur.onnx"), tile=32)(rgb(70, 90))  # margin/multiple: defaults
    assert out.shape == (70, 90, 3) and out.dtype == np.uint8
    assert check_onnx(blur, "blur.onnx")["level"] is None
    with pytest.raises(
        EngineError, match=r"fixed.onnx: input 'image' has a fixed size 32x32.*dynamic height"
    ):
        check_onnx(_foreign(_Blur(), dynamic=False), "fixed.onnx")
    with pytest.raises(
        EngineError, match=r"gray.onnx: input 'image' has 1 channel\(s\).*3 channels"
    ):
        check_onnx(_foreign(_Blur(1), shape=(1, 1, 32, 32)), "gray.onnx")
    with pytest.raises(
        EngineError, match=r"cls.onnx: output 'out' is float of shape \(n, 3\), not an image"
    ):
        check_onnx(_foreign(_Classifier()), "cls.onnx")
    with pytest.raises(EngineError, match="junk.onnx: not an ONNX model"):
        check_onnx(b"not a graph", "junk.onnx")


def test_a_session_is_held_to_the_same_contract_as_the_graph_it_was_made_from():
    """Workers check the graph through ONNX Runtime's session (no import of onnx, 0.7 s of the
    first image); what the session declares gives the same verdict, names and messages."""
    import onnxruntime as ort

    from raydenoise.models.artifacts import load_model_uri
    from raydenoise.models.onnx_graph import check_session

    model, config = load_model_uri("builtin:denoise", None)
    graphs = {
        "denoise.onnx": export_onnx(model, config),
        "blur.onnx": _foreign(_Blur()),
        "gray.onnx": _foreign(_Blur(1), shape=(1, 1, 32, 32)),
        "fixed.onnx": _foreign(_Blur(), dynamic=False),
        "cls.onnx": _foreign(_Classifier()),
    }
    for name, graph in graphs.items():
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        try:
            expected = check_onnx(graph, name)
        except EngineError as exc:
            with pytest.raises(EngineError) as got:
                check_session(session, name)
            assert str(got.value) == str(exc)
        else:
            assert check_session(session, name) == expected
    assert (
        check_session(
            ort.InferenceSession(graphs["denoise.onnx"], providers=["CPUExecutionProvider"]), "d"
        )["level"]
        == "level"
    )


def test_tta_is_the_mean_of_the_eight_transformed_passes():
    torch.manual_seed(0)
    from raydenoise.models.architectures import build_model

    model = build_model("seed-ae", 8).eval()
    image = rgb(24, 36)
    x = image.astype(np.float32)[None] / 255
    den = Denoiser(model, "seed-ae")
    expected = np.zeros_like(x)
    for k in range(4):
        for flip in (False, True):
            t = np.rot90(x, k, axes=(1, 2))
            t = t[:, :, ::-1] if flip else t
            y = den.run_array(np.ascontiguousarray(t))
            expected += np.rot90(y[:, :, ::-1] if flip else y, -k, axes=(1, 2))
    expected = np.rint(np.clip(expected / 8, 0, 1) * 255).astype(np.uint8)[0]
    got = Denoiser(model, "seed-ae", tta=True)(image)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(got, den(image))  # the ensemble is not the single pass


@pytest.mark.slow  # a denoise job on Ray, local and S3
def test_an_exported_builtin_runs_through_denoise_on_local_and_s3_and_a_broken_graph_is_refused_first(
    ray_cluster, s3_server, tmp_path
):
    """`raydenoise export` then `denoise --model m.onnx` (ONNX Runtime) on a folder and on S3:
    outputs within one level of the torch engine's; a graph with a fixed input size stops the
    job before any worker starts, saying what was expected."""
    from raydenoise.imaging.images import decode_rgb8
    from raydenoise.jobs.denoise import DenoiseConfig, DenoiseError, run_denoise

    from conftest import png_bytes, run_cli, write

    r = run_cli("export", "--model", "builtin:seed-ae", "--out", str(tmp_path / "m.onnx"))
    assert r.returncode == 0 and "checked against the torch output" in r.stdout, r.stderr
    for i in range(3):
        write(tmp_path / "in" / f"{i}.png", png_bytes(photo(40 + i, 56, seed=i)))
    quiet = {"log": lambda m: None}
    onnx = run_denoise(
        DenoiseConfig(
            input=str(tmp_path / "in"),
            output=str(tmp_path / "a"),
            model=str(tmp_path / "m.onnx"),
            workers=1,
        ),
        **quiet,
    )
    torch_run = run_denoise(
        DenoiseConfig(
            input=str(tmp_path / "in"),
            output=str(tmp_path / "b"),
            model="builtin:seed-ae",
            engine="torch",
            workers=1,
        ),
        **quiet,
    )
    assert onnx["ok"] == torch_run["ok"] == 3
    for i in range(3):
        a, b = (
            decode_rgb8((tmp_path / d / f"{i}.png").read_bytes()).astype(int) for d in ("a", "b")
        )
        assert np.abs(a - b).max() <= 1
    base = s3_server.prefix()
    fs = s3_server.fs()
    fs.pipe(f"{base[5:]}/models/m.onnx", (tmp_path / "m.onnx").read_bytes())
    for i in range(3):
        fs.pipe(f"{base[5:]}/in/{i}.png", (tmp_path / "in" / f"{i}.png").read_bytes())
    s3 = run_denoise(
        DenoiseConfig(
            input=f"{base}/in",
            output=f"{base}/out",
            model=f"{base}/models/m.onnx",
            s3_endpoint=s3_server.endpoint,
            workers=1,
        ),
        **quiet,
    )
    assert (
        s3["ok"] == 3
        and fs.cat_file(f"{base[5:]}/out/0.png") == (tmp_path / "a" / "0.png").read_bytes()
    )
    (tmp_path / "fixed.onnx").write_bytes(_foreign(_Blur(), dynamic=False))
    with pytest.raises(DenoiseError, match="fixed.onnx: input 'image' has a fixed size 32x32"):
        run_denoise(
            DenoiseConfig(
                input=str(tmp_path / "in"),
                output=str(tmp_path / "c"),
                model=str(tmp_path / "fixed.onnx"),
            ),
            **quiet,
        )
    assert not (tmp_path / "c").exists()
    with pytest.raises(DenoiseError, match="ONNX graph: it runs with --engine onnxruntime"):
        run_denoise(
            DenoiseConfig(
                input=str(tmp_path / "in"),
                output=str(tmp_path / "c"),
                model=str(tmp_path / "m.onnx"),
                engine="torch",
            ),
            **quiet,
        )


def test_torch_bf16_is_refused_where_it_cannot_run_fast_or_at_all(monkeypatch):
    """bfloat16 on a CPU without bfloat16 units is emulated and slower than float32: refused on
    the driver (choose_engine) and in a worker (TorchEngine), saying what to use; an ONNX graph
    is never run by torch."""
    from raydenoise.models import engines

    monkeypatch.setattr(engines, "fast_bf16_cpu", lambda: False)
    with pytest.raises(EngineError, match="no bfloat16 units.*--engine auto"):
        engines.choose_engine("torch-bf16", "builtin:denoise", use_gpu=False)
    with pytest.raises(EngineError, match="no bfloat16 units"):
        engines.make_engine("builtin:seed-ae", None, "torch-bf16", None)
    with pytest.raises(EngineError, match="m.onnx is an ONNX graph.*not torch-bf16"):
        engines.choose_engine("torch-bf16", "m.onnx", use_gpu=False)
    assert engines.choose_engine("torch-bf16", "builtin:denoise", use_gpu=True) == "torch-bf16"


@pytest.mark.skipif(
    not fast_bf16_cpu(),
    reason="this CPU has no bfloat16 units (AMX or AVX-512 BF16): torch-bf16 is refused here",
)
def test_torch_bf16_outputs_are_within_one_level_of_float32_on_a_real_photo():
    """The same network with its convolutions in bfloat16 (autocast): every 8-bit output within
    one level of the float32 engine's, whole and tiled, PSNR within 0.02 dB."""
    from skimage import data

    from raydenoise.imaging.metrics import psnr
    from raydenoise.models.engines import make_engine

    clean = data.astronaut()[::2, ::2]
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(
        np.uint8
    )
    f32 = make_engine("builtin:denoise", None, "torch", None)
    b16 = make_engine("builtin:denoise", None, "torch-bf16", None)
    assert (f32.kind, b16.kind) == ("torch", "torch-bf16")
    for tile in (None, 96):
        a, b = Denoiser(f32, tile=tile)(noisy), Denoiser(b16, tile=tile)(noisy)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert abs(psnr(a / 255, clean / 255) - psnr(b / 255, clean / 255)) < 0.02


def test_an_exported_graph_is_kept_between_jobs_in_a_private_cache(tmp_path, monkeypatch):
    """prepare_graph exports a model once; the next job reads the graph from the user's cache
    (no torch export), a damaged cached file is made again, and a folder others may write into
    is not used."""
    import os

    from raydenoise.models import engines

    monkeypatch.setenv("RAYDENOISE_CACHE_DIR", str(tmp_path / "cache"))
    first = engines.prepare_graph("builtin:seed-ae", None, "onnxruntime")
    cached = list((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].read_bytes() == first
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == oct(0o700)

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(engines, "export_onnx", no_export)
    assert engines.prepare_graph("builtin:seed-ae", None, "onnxruntime") == first
    monkeypatch.undo()
    monkeypatch.setenv("RAYDENOISE_CACHE_DIR", str(tmp_path / "cache"))
    for damage in (b"damaged", _foreign(_Blur())):  # torn, or another graph in its place
        cached[0].write_bytes(damage)
        assert engines.prepare_graph("builtin:seed-ae", None, "onnxruntime") == first
        assert cached[0].read_bytes() == first
    os.chmod(tmp_path / "cache", 0o777)
    assert engines._cache_path("builtin:seed-ae", None) is None
