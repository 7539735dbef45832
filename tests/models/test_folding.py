"""The inference form of a network (raydenoise.models.folding): the same function as the trained
network, with its constants folded, for every network that has swift blocks."""

from __future__ import annotations

import pytest
import torch

from raydenoise.models.architectures import _NAFBlock, build_model
from raydenoise.models.artifacts import load_model_uri
from raydenoise.models.folding import inference_form


def _randomized(name: str) -> torch.nn.Module:
    """A fresh network whose folded constants are random: a fresh swift block starts with zero
    beta and gamma and an identity LayerNorm, which would hide a wrong fold (and the global
    path's heads start at zero, which would hide its steering)."""
    torch.manual_seed(0)
    model = build_model(name, width=16)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key or key.endswith(("beta", "gamma")) or "adjust" in key or "film" in key:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if key.endswith("norm1.weight") else 0.0))
    return model.eval()


def _run(model, x, name):
    return model(x, torch.tensor([12.0])) if name == "swift-cond" else model(x)


@pytest.mark.parametrize("name", ["swift", "swift-cond", "swift-global"])
def test_the_inference_form_is_the_same_function_with_no_swift_block_left(name):
    model = _randomized(name)
    folded = inference_form(model)
    assert not any(isinstance(m, _NAFBlock) for m in folded.modules())
    assert any(isinstance(m, _NAFBlock) for m in model.modules())  # the original is untouched
    x = torch.rand(2, 3, 45, 70)  # not a multiple of 16
    with torch.no_grad():
        ref, out = _run(model, x, name), _run(folded, x, name)
    assert ref.abs().mean() > 0.01  # a function worth comparing
    assert torch.allclose(out, ref, atol=2e-5), float((out - ref).abs().max())


def test_the_builtin_denoisers_inference_form_matches_on_a_photo():
    from skimage import data

    model, _ = load_model_uri("builtin:denoise", None)
    image = data.astronaut()[:96, :128].astype("float32") / 255.0
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        ref = model(noisy, torch.tensor([25.0]))
        out = inference_form(model)(noisy, torch.tensor([25.0]))
    assert float((out - ref).abs().max()) < 1e-5
