import math

import numpy as np
import pytest
import torch

from raydenoise.imaging.metrics import all_metrics, mae, mse, psnr, ssim
from raydenoise.models.architectures import build_model, count_parameters
from raydenoise.models.artifacts import (
    ArtifactError,
    load_model,
    load_train_state,
    save_model_dir,
    save_optimizer,
)


def test_seed_ae_has_exactly_the_seed_parameter_counts():
    counts = count_parameters(build_model("seed-ae"))
    assert counts == {"total": 30019, "trainable": 29763}


def test_seed_ae_layers_match_the_keras_model():
    layers = [type(m).__name__ for m in build_model("seed-ae").net]
    assert layers == [
        "Conv2d",
        "ReLU",
        "BatchNorm2d",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "BatchNorm2d",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "BatchNorm2d",
        "Upsample",
        "Conv2d",
        "ReLU",
        "BatchNorm2d",
        "Upsample",
        "Conv2d",
        "Sigmoid",
    ]


def test_unet_is_under_two_million_parameters_and_width_is_configurable():
    assert count_parameters(build_model("unet"))["trainable"] < 2_000_000
    assert (
        count_parameters(build_model("unet", 16))["trainable"]
        < count_parameters(build_model("unet"))["trainable"]
    )


@pytest.mark.parametrize("name", ["seed-ae", "unet", "swift"])
@pytest.mark.parametrize("size", [(16, 16), (37, 51), (5, 9)])
def test_any_input_size_comes_back_the_same_size_in_range(name, size):
    model = build_model(name).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, *size))
    assert y.shape == (2, 3, *size) and y.min() >= 0 and y.max() <= 1


def test_swift_is_under_two_million_parameters_with_a_tenth_of_the_unets_macs():
    from raydenoise.models.architectures import macs_per_megapixel

    swift, unet = build_model("swift"), build_model("unet")
    assert count_parameters(swift)["trainable"] < 2_000_000
    assert macs_per_megapixel(swift) < macs_per_megapixel(unet) / 10
    assert macs_per_megapixel(build_model("swift", 16)) < macs_per_megapixel(swift) / 3


@pytest.mark.parametrize("name", ["swift", "swift-global-deep"])
def test_swift_output_depends_only_on_a_local_window(name):
    """No global pooling: a pixel's output ignores input further away than the tiling margin
    (112 px for swift; 176 for swift-global-deep, whose 4 more blocks at 1/16 scale reach 64 px
    further), and does depend on input more than half that far (the margin is not idle)."""
    import torch

    from raydenoise.models.networks import network

    torch.manual_seed(0)
    model = build_model(name).train()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(("beta", "gamma")):
                p.fill_(1.0)
    x = torch.rand(1, 3, 480, 480, requires_grad=True)
    local = getattr(model, "local", model)
    local.residual(x)[0, :, 240, 240].sum().backward()
    ys, xs = (x.grad.abs().sum(1)[0] > 0).nonzero(as_tuple=True)
    reach = max(abs(ys - 240).max().item(), abs(xs - 240).max().item())
    assert network(name).margin / 2 < reach <= network(name).margin


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*seed-ae"):
        build_model("resnet")


@pytest.mark.parametrize("name", ["seed-ae", "unet", "swift"])
def test_saved_and_loaded_model_gives_identical_output(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(name)
    model.train()
    model(torch.rand(4, 3, 24, 24))  # moves BatchNorm statistics away from their init
    model.eval()
    save_model_dir(tmp_path, model, {"model": name, "width": None})
    loaded, config = load_model(tmp_path)
    x = torch.rand(1, 3, 40, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert config["model"] == name
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in tmp_path.iterdir())


def test_load_model_errors_name_the_problem(tmp_path):
    with pytest.raises(ArtifactError, match="missing config.json"):
        load_model(tmp_path)
    save_model_dir(tmp_path, build_model("seed-ae"), {"model": "unet", "width": None})
    with pytest.raises(ArtifactError, match="does not fit the network"):
        load_model(tmp_path)


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    model = build_model("seed-ae")
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    for _ in range(3):
        opt.zero_grad()
        model(torch.rand(2, 3, 16, 16)).mean().backward()
        opt.step()
    save_optimizer(tmp_path, opt, {"epoch": 3, "history": [{"epoch": 1}]})
    opt2 = torch.optim.Adam(build_model("seed-ae").parameters(), lr=1.0)
    state = load_train_state(tmp_path, opt2)
    assert state["epoch"] == 3 and opt2.param_groups[0]["lr"] == 3e-4
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys()
    for k in a:
        assert float(a[k]["step"]) == float(b[k]["step"]) == 3
        assert torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"])


def test_metrics_contracts():
    rng = np.random.default_rng(0)
    t = rng.random((16, 16, 3))
    assert psnr(t, t) == math.inf and ssim(t, t) == pytest.approx(1.0)
    p = np.clip(t + 0.1, 0, 1)
    assert mse(p, t) == pytest.approx(np.mean((p - t) ** 2))
    assert mae(p, t) == pytest.approx(np.mean(np.abs(p - t)))
    assert psnr(p, t) == pytest.approx(10 * math.log10(1 / mse(p, t)))
    assert psnr(np.full((8, 8), 0.5), np.full((8, 8), 0.6)) == pytest.approx(20.0)
    m = all_metrics(p, t)
    assert set(m) == {"psnr", "mse", "mae", "ssim"} and all(
        isinstance(v, float) for v in m.values()
    )
    with pytest.raises(ValueError, match="shape mismatch"):
        mse(t, t[:8])


def test_a_blind_swift_starts_a_conditioned_one_that_then_uses_the_level():
    from raydenoise.models.architectures import expand_state_for_levels, is_conditioned

    torch.manual_seed(0)
    blind = build_model("swift").eval()
    with torch.no_grad():
        for key, p in blind.named_parameters():
            if key.endswith(("beta", "gamma")):
                p.fill_(0.5)
    cond = build_model("swift-cond").eval()
    cond.load_state_dict(expand_state_for_levels(blind.state_dict()))
    assert is_conditioned(cond) and not is_conditioned(blind)
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        for sigma in (
            0.0,
            25.0,
        ):  # the level plane starts with zero weight: exactly the blind network
            assert torch.equal(cond(x, torch.full((2,), sigma)), blind(x))
        cond.head.weight[:, 12].fill_(0.1)
        assert not torch.equal(
            cond(x, torch.tensor([0.0, 0.0])), cond(x, torch.tensor([25.0, 25.0]))
        )
    with pytest.raises(ValueError, match="noise level"):
        cond(x)


def test_swift_global_starts_as_its_local_swift_and_sees_the_numpy_thumbnail():
    from raydenoise.imaging.images import area_thumbnail
    from raydenoise.models.architectures import (
        CONTEXT_SIZE,
        context_of,
        local_state_for_global,
        takes_context,
    )

    torch.manual_seed(0)
    blind = build_model("swift").eval()
    with torch.no_grad():
        for key, p in blind.named_parameters():
            if key.endswith(("beta", "gamma")):
                p.fill_(0.5)
    glob = build_model("swift-global").eval()
    glob.load_state_dict({**glob.state_dict(), **local_state_for_global(blind.state_dict())})
    assert takes_context(glob) and not takes_context(blind)
    assert local_state_for_global(glob.state_dict()) is None  # not a blind swift's state
    x = torch.rand(2, 3, 48, 40) * 0.9 + 0.05
    with (
        torch.no_grad()
    ):  # the global head starts at zero: the blind network (inputs floored at 1e-4)
        assert torch.allclose(glob(x), blind(x), atol=1e-4)
        glob.adjust.bias[0] = 0.7  # a gain of e^0.7 on the whole image
        brighter = glob(x)
        assert (brighter.mean() - blind(x).mean()).item() > 0.1
        # the context decides, not the pixels of the tile: another image's context, another output
        glob.adjust.weight.normal_(0, 0.3)
        brighter = glob(x)
        other = context_of(torch.rand(2, 3, 64, 64) * 0.1)
        assert not torch.allclose(glob(x, other), brighter, atol=1e-3)
    # NumPy's thumbnail (inference, training batches) is torch's adaptive pooling, at any size
    for h, w in ((321, 481), (17, 40), (5, 3)):
        img = np.random.default_rng(h).integers(0, 256, (h, w, 3), np.uint8)
        ref = context_of(torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None])[
            0
        ].numpy()
        assert np.abs(area_thumbnail(img, CONTEXT_SIZE) - ref).max() < 1e-5
        wide = np.random.default_rng(w).integers(0, 65536, (h, w, 3)).astype(np.uint16)
        assert (
            np.abs(
                area_thumbnail(wide, 8) - area_thumbnail(wide.astype(np.float64) / 65535, 8)
            ).max()
            < 1e-6
        )
