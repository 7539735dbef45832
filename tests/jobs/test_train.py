"""Ray Train on a 2-CPU local cluster with tiny data: DDP, checkpoints, resume, crash recovery."""

import csv
import io
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raydenoise.jobs.ingest import IngestConfig, run_ingest
from raydenoise.jobs.synth import SynthConfig, run_synth
from raydenoise.jobs.train import CRASH_ENV, TrainError, resolve_config, run_train
from raydenoise.models.architectures import build_model
from raydenoise.models.artifacts import load_model, save_model_dir

from conftest import png_bytes, rgb, run_cli, write

pytestmark = pytest.mark.slow


def quiet(msg):
    pass


def make_dataset(
    root: Path, n: int = 16, uri: str | None = None, endpoint: str | None = None
) -> str:
    clean = root / "clean"
    for i in range(n):
        write(clean / f"{i}.png", png_bytes(rgb(32, 48, seed=i)))
    pairs = uri + "/pairs" if uri else str(root / "pairs")
    out = uri + "/ds" if uri else str(root / "ds")
    run_synth(
        SynthConfig(out=pairs, clean=str(clean), noise="gaussian:25", s3_endpoint=endpoint),
        log=quiet,
    )
    run_ingest(
        IngestConfig(
            low=pairs + "/low",
            high=pairs + "/high",
            out=out,
            split=(0.75, 0.25, 0.0),
            s3_endpoint=endpoint,
        ),
        log=quiet,
    )
    return out


@pytest.fixture(scope="module")
def cluster(s3_server, ray_cluster):
    return ray_cluster  # S3 server first, so the Ray workers inherit the test credentials


@pytest.fixture(scope="module")
def dataset(cluster, tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


def cfg(data, storage, name, **kw):
    base = dict(
        data=data,
        storage_path=str(storage),
        name=name,
        epochs=2,
        patch_size=32,
        batch_size=2,
        lr=3e-3,
        num_workers=2,
        patches_per_image=1,
    )
    base.update(kw)
    return resolve_config(
        kw.pop("model", "seed-ae"), **{k: v for k, v in base.items() if k != "model"}
    )


def history(run: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))


def test_two_worker_ddp_loss_goes_down_and_artifacts_are_complete(dataset, tmp_path):
    logs = []
    # The streaming data path (Ray Data decodes every epoch); the other tests use the default, in memory.
    summary = run_train(cfg(dataset, tmp_path, "ddp", epochs=3, in_memory="no"), log=logs.append)
    assert any("data path: stream" in line for line in logs)
    run = tmp_path / "ddp"
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    n_val = json.loads((Path(dataset) / "manifest.json").read_text())["counts"]["val"]
    assert n_val > 0 and all(
        int(r["val_images"]) == n_val for r in rows
    )  # each val image once, across 2 ranks
    for key in ("val_psnr", "val_mse", "val_mae", "val_ssim", "pairs_per_s", "megapixels_per_s"):
        assert np.isfinite(float(rows[-1][key]))
    assert Image.open(run / "curves.png").format == "PNG"
    _model, config = load_model(run / "model")
    assert config["model"] == "seed-ae" and config["parameters"] == {
        "total": 30019,
        "trainable": 29763,
    }
    assert config["train_config"]["num_workers"] == 2 and config["data"]["manifest"].endswith(
        "manifest.json"
    )
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert config["epoch"] == int(best["epoch"]) == summary["best_epoch"]
    assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.pt"))


def test_interrupted_run_resumes_with_optimizer_state(dataset, tmp_path, monkeypatch):
    c = cfg(dataset, tmp_path, "resume", epochs=3, num_workers=1)
    monkeypatch.setenv(CRASH_ENV, f"1:0:{tmp_path / 'crashed'}")
    with pytest.raises(TrainError, match="training failed"):
        run_train(c, log=quiet)  # crashes at the start of epoch 2, no retries allowed
    assert (tmp_path / "crashed").exists()
    monkeypatch.delenv(CRASH_ENV)
    logs = []
    run_train(c, log=logs.append)  # the same command again
    rows = history(tmp_path / "resume")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    latest = sorted(p for p in (tmp_path / "resume").glob("checkpoint_*") if p.is_dir())[-1]
    state = json.loads((latest / "train_state.json").read_text())
    assert state["epoch"] == 3
    from safetensors.torch import load_file

    steps = load_file(str(latest / "optimizer.safetensors"))["0.step"].item()
    n_train = json.loads((Path(dataset) / "manifest.json").read_text())["counts"]["train"]
    # one worker, batch 2 -> ceil(n/2) Adam steps per epoch; the resumed optimizer kept counting
    assert steps == 3 * -(-n_train // 2)


def test_checkpoints_and_model_in_s3(s3_server, cluster, tmp_path):
    """A level-conditioned network trained on camera noise with JPEG, streamed from S3, its
    checkpoints in S3; the same command again with more epochs resumes from them."""
    base = s3_server.prefix()
    data = make_dataset(tmp_path, n=8, uri=base, endpoint=s3_server.endpoint)
    # the clean side streams from S3 and the inputs are synthesized on the worker
    mix = "gaussian:0,camera:peak=30-300,jpeg=60-90"
    c = cfg(
        data,
        f"{base}/runs",
        "s3run",
        epochs=1,
        num_workers=1,
        model="swift-cond",
        width=8,
        patch_size=16,
        s3_endpoint=s3_server.endpoint,
        in_memory="no",
        degrade=mix,
    )
    logs = []
    run_train(c, log=logs.append)
    assert any("data path: stream" in line and mix in line for line in logs)
    run_train(replace(c, epochs=2), log=quiet)  # resumes from the checkpoint in S3
    fs = s3_server.fs()
    run = f"{base[5:]}/runs/s3run"
    rows = list(csv.DictReader(io.StringIO(fs.cat_file(f"{run}/metrics.csv").decode())))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    local = tmp_path / "model"
    fs.get(f"{run}/model/", str(local), recursive=True)
    model, config = load_model(local)
    assert config["model"] == "swift-cond" and config["width"] == 8
    assert config["train_config"]["storage_path"] == f"{base}/runs"
    assert config["train_config"]["degrade"] == mix
    with torch.no_grad():
        assert model(torch.rand(1, 3, 20, 30), torch.tensor([20.0])).shape == (1, 3, 20, 30)
    assert fs.exists(f"{run}/curves.png") and fs.glob(f"{run}/checkpoint_*/model.safetensors")


def test_bad_input_fails_fast_with_clear_messages(dataset, cluster, tmp_path):
    with pytest.raises(TrainError, match="manifest.json not found"):
        run_train(cfg(str(tmp_path), tmp_path / "s", "x"), log=quiet)
    empty = tmp_path / "empty"
    write(empty / "low/a.png", png_bytes(rgb(16, 16)))
    write(empty / "high/a.png", png_bytes(rgb(16, 16)))
    run_ingest(
        IngestConfig(
            low=str(empty / "low"),
            high=str(empty / "high"),
            out=str(empty / "ds"),
            split=(0.0, 1.0, 0.0),
        ),
        log=quiet,
    )
    with pytest.raises(TrainError, match="train split is empty"):
        run_train(cfg(str(empty / "ds"), tmp_path / "s", "x"), log=quiet)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(TrainError, match="--storage-path.*cannot write"):
        run_train(cfg(dataset, tmp_path / "afile" / "runs", "x"), log=quiet)
    with pytest.raises(TrainError, match="leave no CPU"):
        run_train(
            cfg(dataset, tmp_path / "s", "x", num_workers=2, cpus_per_worker=1.0, in_memory="no"),
            log=quiet,
        )
    with pytest.raises(TrainError, match="the cluster has 2"):
        run_train(cfg(dataset, tmp_path / "s", "x", num_workers=2, cpus_per_worker=1.5), log=quiet)
    with pytest.raises(TrainError, match="--degrade: 'gaussian:lots': sigma must be a number"):
        run_train(cfg(dataset, tmp_path / "s", "x", degrade="gaussian:lots"), log=quiet)
    with pytest.raises(TrainError, match="--ema must be a decay between 0 and 1"):
        run_train(cfg(dataset, tmp_path / "s", "x", ema=1.5), log=quiet)
    with pytest.raises(TrainError, match="--init: .*missing config.json"):
        run_train(cfg(dataset, tmp_path / "s", "x", init=str(tmp_path / "no-model")), log=quiet)
    clean = tmp_path / "clean"
    for i in range(4):
        write(clean / f"{i}.png", png_bytes(rgb(16, 16, seed=i)))
    run_ingest(
        IngestConfig(
            low=None, high=str(clean), out=str(tmp_path / "clean-ds"), split=(1.0, 0.0, 0.0)
        ),
        log=quiet,
    )
    with pytest.raises(TrainError, match="clean images only .* give --degrade"):
        run_train(cfg(str(tmp_path / "clean-ds"), tmp_path / "s", "x"), log=quiet)
    r = run_cli(
        "train", "--data", dataset, "--model", "vgg", "--storage-path", str(tmp_path), "--name", "x"
    )
    assert r.returncode == 2 and "invalid choice: 'vgg'" in r.stderr
    r = run_cli(
        "train",
        "--data",
        str(tmp_path / "nope"),
        "--model",
        "unet",
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
        address=cluster,
    )
    assert (
        r.returncode == 1 and "manifest.json not found" in r.stderr and "Traceback" not in r.stderr
    )
    r = run_cli("train", "--data", dataset, "--storage-path", str(tmp_path), "--name", "x")
    assert r.returncode == 1 and "give --model" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(
        "train",
        "--data",
        dataset,
        "--init",
        str(tmp_path / "no-model"),
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
    )  # no --model: the --init folder would give it
    assert r.returncode == 1 and "--init" in r.stderr and "missing config.json" in r.stderr


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A clean, smooth photo-like image: a few random low-frequency waves per channel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(3):
            fy, fx, ph = rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.uniform(0, 6.3)
            img[..., c] += np.sin(2 * np.pi * (fy * y + fx * x) + ph)
    return np.clip(128 + 30 * img, 0, 255).astype(np.uint8)


def test_blind_training_on_clean_images_raises_psnr_at_several_sigmas(cluster, tmp_path):
    from raydenoise.imaging.metrics import psnr
    from raydenoise.imaging.noise import apply_noise, parse_noise

    clean = tmp_path / "clean"
    for i in range(12):
        write(clean / f"{i}.png", png_bytes(smooth(48, 64, seed=i)))
    ds = str(tmp_path / "ds")
    manifest = run_ingest(
        IngestConfig(low=None, high=str(clean), out=ds, split=(0.75, 0.25, 0.0)), log=quiet
    ).manifest
    assert manifest["clean_only"] and manifest["counts"]["total"] == 12
    logs = []
    summary = run_train(
        cfg(
            ds,
            tmp_path / "runs",
            "blind",
            model="swift",
            width=16,
            degrade="gaussian:5-50",
            epochs=4,
            patches_per_image=16,
            patch_size=32,
            batch_size=4,
            num_workers=1,
        ),
        log=logs.append,
    )
    assert any("data path: memory" in line and "gaussian:5-50" in line for line in logs)
    rows = history(tmp_path / "runs" / "blind")
    # the val split is degraded once, with a fixed seed: the noisy input scores the same every epoch
    assert len({r["input_psnr"] for r in rows}) == 1
    model, config = load_model(summary["model_dir"])
    assert config["train_config"]["degrade"] == "gaussian:5-50"
    rng = np.random.default_rng(0)
    for sigma in (10, 30, 50):
        gains = []
        for seed in (100, 101, 102):  # photos the model never saw
            img = smooth(48, 64, seed)
            noisy = apply_noise(img, parse_noise(f"gaussian:{sigma}"), rng)
            with torch.no_grad():
                out = (
                    model(torch.from_numpy(noisy).permute(2, 0, 1)[None].float() / 255)[0]
                    .permute(1, 2, 0)
                    .numpy()
                )
            ref = img.astype(np.float32) / 255
            gains.append(psnr(out, ref) - psnr(noisy.astype(np.float32) / 255, ref))
        assert np.mean(gains) > 1.0, (sigma, gains)


def test_init_starts_from_a_model_and_ema_is_saved_as_the_model(dataset, tmp_path, monkeypatch):
    """Stage 2 starts from stage 1's weights; --data, --storage-path and --init are given
    relative to the driver's folder although the workers run elsewhere."""
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    data = os.path.relpath(dataset, tmp_path)
    assert not os.path.isabs(data)
    torch.manual_seed(123)  # stage 1: a model that is not what seed 0 would build
    save_model_dir(
        "stage1/model", build_model("seed-ae").eval(), {"model": "seed-ae", "width": None}
    )
    first = {"model_dir": str(tmp_path / "stage1/model")}
    # With a negligible learning rate stage 2 keeps stage 1's weights.
    stage2 = dict(num_workers=1, init="stage1/model", ema=0.5)
    second = run_train(cfg(data, "runs", "stage2", epochs=1, lr=1e-12, **stage2), log=quiet)
    assert second["epochs"] == 1 and Path(second["model_dir"]) == tmp_path / "runs/stage2/model"
    # an untrained autoencoder outputs grey: worse than the noisy input, and the run says so
    assert "worse than leaving them alone" in second["warnings"][0]
    run = tmp_path / "runs/stage2"
    assert json.loads((run / "summary.json").read_text())["warnings"] == second["warnings"]
    w1, w2 = (load_file(str(Path(s["model_dir"]) / "model.safetensors")) for s in (first, second))
    # what a run without --init would start from (the workers seed 0 the same way)
    torch.manual_seed(0)
    w0 = {k: v.detach() for k, v in build_model("seed-ae").state_dict().items()}
    learned = [
        k for k in w1 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert all(torch.allclose(w1[k], w2[k], atol=1e-6) for k in learned)
    assert not all(torch.allclose(w1[k], w0[k], atol=1e-6) for k in learned)
    config = json.loads((Path(second["model_dir"]) / "config.json").read_text())
    assert config["weights"] == "exponential moving average"
    assert config["train_config"]["init"] == first["model_dir"]  # resolved on the driver
    ckpt = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())[-1]
    assert (ckpt / "train_weights.safetensors").exists()
    # continuing the EMA run resumes both the weights and their average; where this CPU has
    # bfloat16 units, in bfloat16 (--precision bf16 trains, and the model says how)
    from raydenoise.models.engines import fast_bf16_cpu

    precision = "bf16" if fast_bf16_cpu() else "auto"
    third = run_train(
        cfg(data, "runs", "stage2", epochs=2, lr=1e-3, precision=precision, **stage2), log=quiet
    )
    assert [int(r["epoch"]) for r in history(run)] == [1, 2]
    assert all(math.isfinite(float(r["val_loss"])) for r in history(run))
    config3 = json.loads((Path(third["model_dir"]) / "config.json").read_text())
    assert config3["train_config"]["precision"] == precision
    with pytest.raises(
        TrainError, match="is a seed-ae of width 32; this command asks for --model unet"
    ):
        run_train(cfg(data, "runs", "x", model="unet", init="stage1/model"), log=quiet)
    with pytest.raises(TrainError, match="--width 16"):
        run_train(cfg(data, "runs", "x", width=16, init="stage1/model"), log=quiet)


def test_a_swift_global_trains_on_real_pairs_mixed_with_synthetic_ones_from_a_clean_set(
    dataset, cluster, tmp_path
):
    torch.manual_seed(6)
    blind = build_model("swift", 8).eval()
    with torch.no_grad():
        for key, p in blind.named_parameters():
            if key.endswith(("beta", "gamma")):
                p.fill_(0.3)
    save_model_dir(tmp_path / "blind", blind, {"model": "swift", "width": 8})
    clean = tmp_path / "clean"
    for i in range(8):
        write(clean / f"{i}.png", png_bytes(rgb(40, 56, seed=100 + i)))
    ingested = run_ingest(
        IngestConfig(
            low=None, high=str(clean), out=str(tmp_path / "clean-ds"), split=(0.5, 0.5, 0.0)
        ),
        log=quiet,
    )
    assert ingested.manifest["counts"]["val"] > 0
    lines: list[str] = []
    mix = dict(
        degrade="low-light:exposure=0.1-0.3",
        synthetic_data=str(tmp_path / "clean-ds"),
        synthetic_share=0.5,
    )
    run = run_train(
        cfg(
            dataset,
            tmp_path,
            "glob",
            model="swift-global",
            epochs=1,
            num_workers=1,
            lr=1e-12,
            init=str(tmp_path / "blind"),
            **mix,
        ),
        log=lines.append,
    )
    assert any("50% of the patches from 1 shard(s) of" in line for line in lines)
    assert any("checkpoint chosen on both, weighted 50%/50%" in line for line in lines)
    model, config = load_model(run["model_dir"])
    assert config["model"] == "swift-global" and config["width"] == 8
    x = torch.rand(1, 3, 32, 48) * 0.8 + 0.1
    with (
        torch.no_grad()
    ):  # (almost) no step taken: the blind network, its global path still at zero
        assert torch.allclose(model(x), blind(x), atol=1e-4)
    # val is the real pairs' (sigma 25 noise: ~20 dB), not inputs darkened by --degrade (under 12 dB)
    rows = history(tmp_path / "glob")
    assert 17 < float(rows[0]["input_psnr"]) < 24
    # the clean set's val split is scored too, its inputs darkened by --degrade (seeded), and
    # the checkpoint is chosen on both domains as training mixes them
    row = {k: float(v) for k, v in rows[0].items() if v not in ("", None)}
    assert row["synthetic_input_psnr"] < 14 and row["synthetic_val_psnr"] < 17
    assert row["select_loss"] == pytest.approx(
        0.5 * row["val_loss"] + 0.5 * row["synthetic_val_loss"]
    )
    for kw, message in (
        (dict(degrade=None), "--synthetic-data needs --degrade"),
        (dict(synthetic_share=1.5), "--synthetic-share must be between 0 and 1"),
        (dict(synthetic_data=str(tmp_path / "nothing")), "--synthetic-data"),
        (dict(in_memory="no"), "trains from memory"),
    ):
        with pytest.raises(TrainError, match=message):
            run_train(
                cfg(dataset, tmp_path, "bad", model="swift-global", **{**mix, **kw}), log=quiet
            )
    with pytest.raises(TrainError, match="holds clean images only"):
        run_train(cfg(str(tmp_path / "clean-ds"), tmp_path, "bad", model="swift", **mix), log=quiet)


def test_precision_bf16_is_refused_where_the_cpu_has_no_bfloat16_units(
    dataset, tmp_path, monkeypatch
):
    from raydenoise.models import engines

    monkeypatch.setattr(engines, "fast_bf16_cpu", lambda: False)
    with pytest.raises(
        TrainError, match="--precision bf16: this CPU has no bfloat16 units.*--precision auto"
    ):
        run_train(cfg(dataset, tmp_path / "runs", "nobf16", precision="bf16"), log=quiet)
    assert not (tmp_path / "runs/nobf16").exists()  # refused before anything was written
