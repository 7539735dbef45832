"""Training's pure parts, without Ray: CPU planning, the below-input warning, the losses, and
--init into a network with more inputs."""

from dataclasses import replace

import pytest
import torch

from raydenoise.jobs.train import resolve_config
from raydenoise.jobs.train.config import LOSSES
from raydenoise.models.architectures import build_model
from raydenoise.models.artifacts import save_model_dir


def test_auto_cpus_per_worker_fits_every_worker_on_a_node():
    from raydenoise.jobs.train import auto_cpus_per_worker

    c = resolve_config("seed-ae", data="d", storage_path="s", name="n", num_workers=2)
    assert auto_cpus_per_worker(c, [2.0], streaming=False) == 1.0  # one machine: the CPUs shared
    assert auto_cpus_per_worker(replace(c, num_workers=1), [2.0], streaming=False) == 2.0
    # not 12: a worker cannot span nodes
    assert auto_cpus_per_worker(c, [16.0, 8.0], streaming=False) == 8.0
    assert auto_cpus_per_worker(replace(c, num_workers=3), [16.0, 8.0], streaming=False) == 8.0
    assert auto_cpus_per_worker(replace(c, num_workers=4), [2.0], streaming=False) == 0.5
    # no node yet (autoscaling from zero)
    assert auto_cpus_per_worker(c, [], streaming=False) == 1.0
    assert auto_cpus_per_worker(c, [4.0], streaming=True) == 1.0


def test_a_best_epoch_below_the_noisy_input_is_a_warning():
    from raydenoise.jobs.train import below_input_warning

    assert below_input_warning({"val_psnr": 27.0, "input_psnr": 20.0}) is None
    assert below_input_warning({"val_psnr": None, "input_psnr": 20.0}) is None
    assert "below the noisy input's 20.00 dB" in below_input_warning(
        {"val_psnr": 18.5, "input_psnr": 20.0}
    )
    # a val mix with clean images: their input PSNR is infinite (capped at 100 dB), the loss is fair
    mixed = {"val_psnr": 36.0, "input_psnr": 38.7, "val_loss": 0.015, "input_loss": 0.04}
    assert below_input_warning(mixed) is None
    assert "val loss 0.0500 is above" in below_input_warning({**mixed, "val_loss": 0.05})


def test_each_loss_is_zero_on_a_perfect_output_and_mse_is_what_psnr_measures():
    from raydenoise.jobs.train.scoring import loss_fn

    target = torch.rand(2, 3, 8, 8)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    for name in LOSSES:  # every loss --loss offers has its function
        assert float(loss_fn(name)(pred, target)) > float(loss_fn(name)(target, target))
    mse = float(loss_fn("mse")(pred, target))
    assert abs(mse - float(((pred - target) ** 2).mean())) < 1e-7
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        loss_fn("l3")


def test_a_blind_swift_starts_a_level_conditioned_one_that_equals_it_at_every_level(tmp_path):
    """--init of a swift-cond from a blind swift: the level plane starts at zero, so before any
    step the conditioned network is exactly the blind one, whatever the level."""
    from raydenoise.jobs.train.worker import load_init

    torch.manual_seed(5)
    blind = build_model("swift", 8).eval()
    with torch.no_grad():
        for key, p in blind.named_parameters():
            if key.endswith(("beta", "gamma")):
                p.fill_(0.3)  # not the identity a fresh swift's blocks start as
    save_model_dir(tmp_path / "blind", blind, {"model": "swift", "width": 8})
    cond = build_model("swift-cond", 8).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert not torch.allclose(cond(x, torch.tensor([30.0])), blind(x), atol=1e-3)
    cfg = resolve_config(
        "swift-cond", data="d", storage_path="s", name="n", width=8, init=str(tmp_path / "blind")
    )
    load_init(cond, cfg)
    with torch.no_grad():
        for sigma in (0.0, 30.0):
            assert torch.allclose(cond(x, torch.tensor([sigma])), blind(x), atol=1e-5)


def test_a_network_starts_the_deeper_one_it_deepens_exactly_and_not_the_other_way(tmp_path):
    """--init of a swift-global-deep from a swift-global: its 4 new middle blocks start as the
    identity, so before any step the deeper network gives the shallower one's output; a deeper
    network cannot start a shallower one."""
    from raydenoise.jobs.train.config import TrainError, _apply_init
    from raydenoise.jobs.train.worker import load_init

    torch.manual_seed(6)
    shallow = build_model("swift-global", 8).eval()
    with torch.no_grad():
        for key, p in shallow.named_parameters():
            p.normal_(0, 0.3 if key.endswith(("beta", "gamma")) else 0.05)
    save_model_dir(tmp_path / "shallow", shallow, {"model": "swift-global", "width": 8})
    deep = build_model("swift-global-deep", 8).eval()
    assert len(deep.local.middle) == 6 and len(shallow.local.middle) == 2
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        assert not torch.allclose(deep(x), shallow(x), atol=1e-3)
    cfg = _apply_init(
        resolve_config(
            "swift-global-deep",
            data="d",
            storage_path="s",
            name="n",
            init=str(tmp_path / "shallow"),
        )
    )
    assert cfg.width == 8
    load_init(deep, cfg)
    with torch.no_grad():
        assert torch.equal(deep(x), shallow(x))
    save_model_dir(tmp_path / "deep", deep, {"model": "swift-global-deep", "width": 8})
    with pytest.raises(TrainError, match="is a swift-global-deep of width 8.*--model swift-global"):
        _apply_init(
            resolve_config(
                "swift-global", data="d", storage_path="s", name="n", init=str(tmp_path / "deep")
            )
        )


def test_bf16_autocast_runs_on_gpus_by_default_and_on_cpus_only_when_asked():
    from raydenoise.jobs.train.worker import autocast_bf16

    assert autocast_bf16("auto", "cuda") and not autocast_bf16("auto", "cpu")
    assert autocast_bf16("bf16", "cpu") and autocast_bf16("bf16", "cuda")
    assert not autocast_bf16("fp32", "cuda") and not autocast_bf16("fp32", "cpu")
