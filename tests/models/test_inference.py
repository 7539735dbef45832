import numpy as np
import pytest
import torch

from raydenoise.models.architectures import build_model
from raydenoise.models.inference import Denoiser


def trained_like(name: str) -> torch.nn.Module:
    """Random weights with BatchNorm statistics moved off their defaults (eval mode uses them)."""
    torch.manual_seed(0)
    model = build_model(name)
    model.train()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(
                ("beta", "gamma")
            ):  # swift's residual scales start at 0 (identity blocks)
                p.fill_(0.5)
        model(torch.rand(2, 3, 32, 32), *([torch.full((2,), 20.0)] if name == "swift-cond" else []))
    return model.eval()


@pytest.mark.parametrize("name", ["seed-ae", "unet", "swift"])
def test_tiled_output_equals_untiled(name):
    model = trained_like(name)
    x = torch.rand(1, 3, 150, 203) if name != "swift" else torch.rand(1, 3, 300, 370)
    whole = Denoiser(model, name).run_tensor(x)
    tiled = Denoiser(model, name, tile=64).run_tensor(x)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() < 1e-3


def test_uint8_interface_keeps_shape_and_grayscale():
    d = Denoiser(trained_like("seed-ae"), "seed-ae", tile=32)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (45, 70), dtype=np.uint8)
    other = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = d.run_many([rgb, gray, other, rgb])
    assert [o.shape for o in out] == [(45, 70, 3), (45, 70), (20, 30, 3), (45, 70, 3)]
    assert all(o.dtype == np.uint8 for o in out)
    assert np.array_equal(out[0], out[3])
    with pytest.raises(ValueError, match="expected uint8"):
        d(rgb.astype(np.float32))


@pytest.mark.parametrize("name", ["seed-ae", "unet", "swift"])
def test_denoiser_matches_the_plain_model(name):
    """The fast path (channels-last, inference mode) computes what model(x) computes."""
    model = trained_like(name)
    x = torch.rand(2, 3, 40, 52)
    with torch.no_grad():
        expected = model(x).clamp(0, 1)
    got = Denoiser(model, name).run_tensor(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("name", ["seed-ae", "unet", "swift"])
def test_gpu_denoiser_matches_cpu(name):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    cpu = Denoiser(trained_like(name), name).run_many(images)
    gpu = Denoiser(trained_like(name), name, device="cuda").run_many(images)  # one batched pass
    for a, b in zip(cpu, gpu):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # TF32 convolutions: within 1/255


def conditioned() -> torch.nn.Module:
    model = trained_like("swift-cond")
    with torch.no_grad():  # make the level plane matter
        model.head.weight[:, 12].normal_(0, 0.5)
    return model


def test_a_conditioned_network_shares_one_estimated_level_across_tiles():
    from raydenoise.imaging.noise_level import estimate_sigma

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(128, 20, (176, 200, 3)), 0, 255).astype(np.uint8)
    model = conditioned()
    whole = Denoiser(model, "swift-cond").run_many([img])[0]
    tiled = Denoiser(model, "swift-cond", tile=96).run_many([img])[0]
    assert np.abs(whole.astype(int) - tiled).max() <= 1  # exact up to rounding
    fixed = Denoiser(model, "swift-cond", sigma=estimate_sigma(img)).run_many([img])[0]
    assert np.array_equal(fixed, whole)  # the default is the estimate
    stronger = Denoiser(model, "swift-cond", strength=2.0).run_many([img])[0]
    assert not np.array_equal(stronger, whole)


def test_strength_zero_returns_the_input_bit_for_bit_and_blind_models_blend():
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),
        rng.integers(0, 256, (33, 20), dtype=np.uint8),
    ]
    for model, name in ((conditioned(), "swift-cond"), (trained_like("swift"), "swift")):
        out = Denoiser(model, name, strength=0.0).run_many(images)
        assert all(np.array_equal(a, b) for a, b in zip(out, images))
    blind = trained_like("swift")
    full, half = (
        Denoiser(blind, "swift", strength=s).run_many(images[:1])[0].astype(float)
        for s in (1.0, 0.5)
    )
    assert np.abs(half - (images[0] + 0.5 * (full - images[0]))).max() <= 1.0
    with pytest.raises(ValueError, match="conditioned on the noise level"):
        Denoiser(blind, "swift", sigma=10.0)
    with pytest.raises(ValueError, match="--strength"):
        Denoiser(blind, "swift", strength=9.0)
    assert np.array_equal(Denoiser(conditioned(), "swift-cond", sigma=0.0)(images[0]), images[0])


def global_network(name: str = "swift-global") -> torch.nn.Module:
    """A swift-global whose global path matters (its zero-initialized heads given weights)."""
    model = trained_like(name)
    with torch.no_grad():
        model.adjust.weight.normal_(0, 0.3)
        model.adjust.bias.copy_(torch.tensor([1.0] + [0.0] * 13))
        model.film.weight.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("name", ["swift-global", "swift-global-deep"])
def test_a_global_network_gives_every_tile_the_whole_images_context(name):
    from raydenoise.models.engines import OrtEngine
    from raydenoise.models.networks import network
    from raydenoise.models.onnx_graph import export_onnx

    rng = np.random.default_rng(1)
    img = (rng.random((200, 260, 3)) * np.linspace(10, 90, 260)[None, :, None]).astype(
        np.uint8
    )  # dark to grey
    model = global_network(name)
    whole = Denoiser(model, name).run_many([img])[0]
    tiled = Denoiser(model, name, tile=64).run_many([img])[0]
    assert np.abs(whole.astype(int) - tiled).max() <= 1  # exact up to rounding
    # ... which it could not be if each tile saw only itself: a tile run alone sees another context
    alone = Denoiser(model, name).run_many([np.ascontiguousarray(img[:, :64])])[0]
    assert np.abs(alone.astype(int) - whole[:, :64]).max() > 10
    # the same through an ONNX graph (the context an input of its own) and ONNX Runtime
    graph = export_onnx(model, {"model": name, "width": 32})
    engine = OrtEngine(graph, f"{name}.onnx", threads=1)
    assert engine.info.context == 32 and engine.info.margin == network(name).margin
    for tile in (None, 64):
        out = Denoiser(engine, tile=tile).run_many([img])[0]
        assert np.abs(out.astype(int) - whole).max() <= 1


@pytest.mark.parametrize("name", ["swift", "swift-global"])
def test_self_ensemble_stays_exact_when_tiled_at_sizes_off_the_networks_grid(name):
    model = global_network() if name == "swift-global" else trained_like(name)
    img = np.random.default_rng(2).integers(0, 200, (150, 197, 3), np.uint8)  # not multiples of 16
    whole = Denoiser(model, name, tta=True).run_many([img])[0]
    tiled = Denoiser(model, name, tta=True, tile=64).run_many([img])[0]
    assert np.abs(whole.astype(int) - tiled).max() <= 1
