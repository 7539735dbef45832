"""Bulk denoising with Ray Data on a 2-CPU cluster, against local folders and SeaweedFS."""

import io
import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from raydenoise.imaging.images import decode_rgb8
from raydenoise.imaging.metrics import psnr
from raydenoise.jobs.denoise import DenoiseConfig, DenoiseError, run_denoise
from raydenoise.models.architectures import build_model
from raydenoise.models.artifacts import save_model_dir

from conftest import jpeg_bytes, png_bytes, rgb, run_cli, write

pytestmark = pytest.mark.slow


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def cluster(s3_server, ray_cluster):
    return ray_cluster


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("unet", 8)
    d = tmp_path_factory.mktemp("model")
    save_model_dir(d, model.eval(), {"model": "unet", "width": 8})
    return d


def noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)


def make_images(put, n=20):
    """Mixed sizes and formats (PNG, JPEG, grayscale), nested keys, plus one corrupt file."""
    keys = {}
    for i in range(n - 1):
        h, w = (24 + 4 * (i % 3), 32 + 8 * (i % 4))
        clean = rgb(h, w, seed=i)
        key = f"set{i % 2}/img{i}." + ("jpg" if i % 5 == 0 else "png")
        enc = jpeg_bytes if key.endswith(".jpg") else png_bytes
        if i % 7 == 3:  # grayscale input
            g = clean[..., 0]
            put("in", key, enc(noisy(g, i)))
            put("ref", key, png_bytes(g))
        else:
            put("in", key, enc(noisy(clean, i)))
            put("ref", key, png_bytes(clean))
        keys[key] = (h, w)
    put("in", "broken.png", b"\x89PNG\r\n\x1a\nthis is not a png")
    return keys


def check_run(summary, rows, read_out, read_ref, keys):
    assert (
        summary["count"] == len(keys) + 1
        and summary["failures"] == 1
        and summary["ok"] == len(keys)
    )
    by_key = {r["key"]: r for r in rows}
    assert (
        by_key["broken.png"]["status"] == "error"
        and "not a usable image" in by_key["broken.png"]["error"]
    )
    for key, (h, w) in keys.items():
        r = by_key[key]
        assert r["status"] == "ok" and (r["height"], r["width"]) == (h, w)
        im = Image.open(io.BytesIO(read_out(key)))
        assert im.format == ("JPEG" if key.endswith(".jpg") else "PNG")
        assert im.size == (w, h)
    for key in list(keys)[:4]:  # recompute PSNR from the written files
        out = decode_rgb8(read_out(key)).astype(np.float32) / 255
        ref = decode_rgb8(read_ref(key)).astype(np.float32) / 255
        assert by_key[key]["psnr"] == pytest.approx(psnr(out, ref), abs=1e-6)
        assert by_key[key]["input_psnr"] is not None


def test_local_folder_with_reference_rerun_and_overwrite(cluster, model_dir, tmp_path):
    keys = make_images(lambda side, k, d: write(tmp_path / side / k, d))
    cfg = DenoiseConfig(
        input=str(tmp_path / "in"),
        output=str(tmp_path / "out"),
        model=str(model_dir),
        reference=str(tmp_path / "ref"),
        batch_size=3,
        workers=2,
    )
    summary = run_denoise(cfg, log=quiet)
    rep = tmp_path / "out" / "_report"
    rows = pq.read_table(rep / "report.parquet").to_pylist()
    check_run(
        summary,
        rows,
        lambda k: (tmp_path / "out" / k).read_bytes(),
        lambda k: (tmp_path / "ref" / k).read_bytes(),
        keys,
    )
    gray_key = next(k for k in keys if int(k.split("img")[1].split(".")[0]) % 7 == 3)
    assert Image.open(tmp_path / "out" / gray_key).mode == "L"
    for key in keys:  # every image's noise level, before and after, with no reference needed
        r = next(r for r in rows if r["key"] == key)
        assert (
            r["input_noise"] > 8 and r["output_noise"] is not None and r["sigma"] is None
        )  # blind model
    saved = json.loads((rep / "summary.json").read_text())
    assert saved["metrics"]["psnr"]["count"] == len(keys) and (
        rep / "report.csv"
    ).read_text().startswith("key,")
    html = (rep / "report.html").read_text()
    assert "best 1" in html and "worst 1" in html and "data:image/jpeg;base64," in html
    # re-run: everything written is skipped (but scored again from the existing outputs), the
    # broken input is tried (and fails) again
    before = (tmp_path / "out" / next(iter(keys))).stat().st_mtime_ns
    again = run_denoise(cfg, log=quiet)
    assert again["skipped"] == len(keys) and again["failures"] == 1 and again["ok"] == 0
    assert (tmp_path / "out" / next(iter(keys))).stat().st_mtime_ns == before
    rerun = {r["key"]: r for r in pq.read_table(rep / "report.parquet").to_pylist()}
    for r in rows:
        if r["status"] == "ok":
            assert rerun[r["key"]]["status"] == "skipped"
            assert rerun[r["key"]]["psnr"] == pytest.approx(r["psnr"], abs=1e-9)
            assert rerun[r["key"]]["input_ssim"] == pytest.approx(r["input_ssim"], abs=1e-9)
    assert again["metrics"]["psnr"]["mean"] == pytest.approx(
        summary["metrics"]["psnr"]["mean"], abs=1e-9
    )
    # a damaged existing output is not trusted: it is redone, and the report says so
    write(tmp_path / "out" / next(iter(keys)), b"garbage")
    damaged = run_denoise(cfg, log=quiet)
    assert damaged["failures"] == 1 and damaged["ok"] == 1 and damaged["skipped"] == len(keys) - 1
    redone = {r["key"]: r for r in pq.read_table(rep / "report.parquet").to_pylist()}[
        next(iter(keys))
    ]
    assert redone["status"] == "ok" and "redone" in redone["note"]
    assert (
        decode_rgb8((tmp_path / "out" / next(iter(keys))).read_bytes()).shape[:2]
        == keys[next(iter(keys))]
    )
    over = run_denoise(DenoiseConfig(**{**cfg.__dict__, "overwrite": True}), log=quiet)
    assert over["ok"] == len(keys)


def test_s3_prefix_to_s3_with_missing_reference(s3_server, cluster, model_dir):
    fs = s3_server.fs()
    base = s3_server.prefix()

    def put(side, key, data):
        fs.pipe_file(f"{base[5:]}/{side}/{key}", data)

    keys = make_images(put)
    fs.rm(
        f"{base[5:]}/ref/{next(iter(keys))}"
    )  # one reference missing -> an error row, not a crash
    model_uri = f"{base}/model"
    for f in model_dir.iterdir():
        fs.pipe_file(f"{model_uri[5:]}/{f.name}", f.read_bytes())
    r = run_cli(
        "denoise",
        "--input",
        f"{base}/in",
        "--output",
        f"{base}/out",
        "--model",
        model_uri,
        "--reference",
        f"{base}/ref",
        "--s3-endpoint",
        s3_server.endpoint,
        "--workers",
        "1",
        "--tile",
        "32",
        "--pipeline",
        "staged",
        address=cluster,
    )
    assert r.returncode == 1, r.stderr
    assert (
        "2 of 20 images failed" in r.stderr
        and f"{base}/out/_report" in r.stderr
        and "Traceback" not in r.stderr
    )
    rows = pq.read_table(
        io.BytesIO(fs.cat_file(f"{base[5:]}/out/_report/report.parquet"))
    ).to_pylist()
    missing = next(r for r in rows if r["key"] == next(iter(keys)))
    assert missing["status"] == "error" and "no reference" in missing["error"]
    rest = dict(keys)
    rest.pop(next(iter(keys)))
    fake_summary = {"count": len(rows) - 1, "failures": 1, "ok": len(rest)}
    check_run(
        fake_summary,
        [r for r in rows if r["key"] != next(iter(keys))],
        lambda k: fs.cat_file(f"{base[5:]}/out/{k}"),
        lambda k: fs.cat_file(f"{base[5:]}/ref/{k}"),
        rest,
    )


def test_plan_workers():
    from raydenoise.jobs.denoise import plan_workers

    def plan(**kw):
        return plan_workers(
            DenoiseConfig(input="i", output="o", model="m", **kw), {"CPU": 2.0, "GPU": 4.0}
        )

    assert plan() == (False, 2, 1.0)  # fused: one single-threaded actor per CPU
    assert plan(workers=4) == (False, 4, 0.5)
    assert plan(pipeline="staged") == (True, 1, 1.0)  # one CPU left for the read/write tasks
    assert plan(pipeline="staged", workers=2) == (True, 2, 0.5)
    assert plan(num_gpus_per_worker=1) == (True, 4, 0.5)
    assert plan(num_gpus_per_worker=0.5, pipeline="fused") == (False, 8, 0.5)
    # A head that runs no work and no worker node yet (autoscaling from zero): 0 = a pool that grows
    cfg = DenoiseConfig(input="i", output="o", model="m")
    assert plan_workers(cfg, {}) == (False, 0, 1.0)
    assert plan_workers(replace(cfg, workers=3), {}) == (
        False,
        3,
        1.0,
    )  # asked for: the autoscaler adds nodes
    assert plan_workers(replace(cfg, num_gpus_per_worker=1), {})[1] == 0
    assert (
        plan_workers(replace(cfg, num_gpus_per_worker=1), {"CPU": 4.0})[1] == 1
    )  # no GPU on a CPU machine: an error later


def test_report_counts_images_per_node():
    from raydenoise.ledger import report as rpt

    rows = [
        rpt.blank_row("a", status="ok", node="n1"),
        rpt.blank_row("b", status="error", node="n2"),
        rpt.blank_row("c", status="ok", node="n1"),
        rpt.blank_row("d", status="not-done"),
        rpt.blank_row("e", status="excluded"),
    ]
    summary = rpt.summarize(rows, 1.0)
    assert summary["nodes"] == {"n1": 2, "n2": 1}
    assert rpt.table(rows).column("node").to_pylist() == ["n1", "n2", "n1", None, None]


def test_bad_arguments_fail_fast(cluster, model_dir, tmp_path):
    write(tmp_path / "in/a.png", png_bytes(rgb(8, 8)))
    with pytest.raises(DenoiseError, match="missing config.json"):
        run_denoise(
            DenoiseConfig(
                input=str(tmp_path / "in"), output=str(tmp_path / "o"), model=str(tmp_path)
            ),
            log=quiet,
        )
    with pytest.raises(DenoiseError, match="inside --input"):
        run_denoise(
            DenoiseConfig(
                input=str(tmp_path / "in"), output=str(tmp_path / "in/out"), model=str(model_dir)
            ),
            log=quiet,
        )
    with pytest.raises(DenoiseError, match="no such file"):
        run_denoise(
            DenoiseConfig(
                input=str(tmp_path / "nope"), output=str(tmp_path / "o"), model=str(model_dir)
            ),
            log=quiet,
        )


def test_strength_and_sigma(cluster, model_dir, tmp_path):
    clean = rgb(40, 56, seed=3)
    for i in range(3):
        write(tmp_path / f"in/{i}.png", png_bytes(noisy(clean, i)))
    base = DenoiseConfig(
        input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=str(model_dir), workers=1
    )
    summary = run_denoise(replace(base, strength=0.0), log=quiet)
    assert summary["ok"] == 3
    for i in range(3):  # strength 0: the input, bit for bit
        assert np.array_equal(
            decode_rgb8((tmp_path / f"out/{i}.png").read_bytes()),
            decode_rgb8((tmp_path / f"in/{i}.png").read_bytes()),
        )
    with pytest.raises(DenoiseError, match="conditioned on the noise level"):
        run_denoise(replace(base, sigma=15.0), log=quiet)  # the unet here is blind
    for bad, match in (
        (dict(strength=-1.0), "--strength"),
        (dict(strength=float("nan")), "--strength"),
        (dict(sigma=300.0), "--sigma"),
    ):
        with pytest.raises(DenoiseError, match=match):
            run_denoise(replace(base, **bad), log=quiet)


def test_evaluate_table_model_vs_input_vs_nl_means(cluster, model_dir, tmp_path):
    from raydenoise.jobs.evaluate import EvaluateConfig, EvaluateError, run_evaluate
    from raydenoise.jobs.ingest import IngestConfig, run_ingest

    for i in range(6):
        clean = rgb(24, 32, seed=i)
        write(tmp_path / f"low/{i}.png", png_bytes(noisy(clean, i)))
        write(tmp_path / f"high/{i}.png", png_bytes(clean))
    run_ingest(
        IngestConfig(
            low=str(tmp_path / "low"),
            high=str(tmp_path / "high"),
            out=str(tmp_path / "ds"),
            split=(0.0, 0.0, 1.0),
        ),
        log=quiet,
    )
    logs = []
    plan = run_evaluate(
        EvaluateConfig(data=str(tmp_path / "ds"), model=str(model_dir), dry_run=True),
        log=logs.append,
    )
    assert not (model_dir / "eval").exists()  # a dry run writes nothing
    assert (plan["pairs"], plan["sampled"], plan["methods"]) == (
        6,
        3,
        ["model", "noisy input", "nl-means"],
    )
    assert plan["seconds_per_pair"]["nl-means"] > 0 and plan["cpu_seconds"] > 0
    assert "6 test pairs in 1 shard" in logs[0] and "nothing was written" in logs[-1]
    table = run_evaluate(EvaluateConfig(data=str(tmp_path / "ds"), model=str(model_dir)), log=quiet)
    assert set(table) == {"model", "noisy input", "nl-means"} and all(
        v["images"] == 6 for v in table.values()
    )
    direct = np.mean(
        [psnr(noisy(rgb(24, 32, seed=i), i) / 255, rgb(24, 32, seed=i) / 255) for i in range(6)]
    )
    assert table["noisy input"]["psnr"] == pytest.approx(direct, abs=1e-6)
    assert table["nl-means"]["psnr"] > table["noisy input"]["psnr"]  # NLM does denoise
    out = model_dir / "eval" / "test"
    assert json.loads((out / "table.json").read_text())["table"]["model"]["images"] == 6
    assert (out / "per_image.csv").read_text().count("\n") == 1 + 18
    page = (out / "report.html").read_text()  # methods side by side per image, the extremes at 1:1
    assert "6 images scored by 3 methods" in page and "psnr nl-means" in page
    data = json.loads(page.split('id="rows-data">')[1].split("</script>")[0])
    assert (
        len(data["rows"]) == 6 and len(data["compare"]) == 4
    )  # largest and smallest gains, 2 each
    assert (
        page.count("<figcaption>nl-means</figcaption>") >= 4
        and "<figcaption>reference</figcaption>" in page
    )
    with pytest.raises(EvaluateError, match="val split is empty"):
        run_evaluate(
            EvaluateConfig(data=str(tmp_path / "ds"), model=str(model_dir), split="val"), log=quiet
        )
    table = run_evaluate(
        EvaluateConfig(
            data=str(tmp_path / "ds"),
            model=str(model_dir),
            out=str(tmp_path / "e2"),
            baselines=("bm3d", "gamma"),
        ),
        log=quiet,
    )
    assert set(table) == {"model", "cbm3d", "gamma"} and all(
        v["images"] == 6 for v in table.values()
    )
    assert table["cbm3d"]["psnr"] > direct  # CBM3D denoises
    import sys

    sys.modules["bm3d"] = None  # as if the optional package were not installed
    try:
        with pytest.raises(EvaluateError, match="needs the optional bm3d package"):
            run_evaluate(
                EvaluateConfig(
                    data=str(tmp_path / "ds"), model=str(model_dir), baselines=("bm3d",)
                ),
                log=quiet,
            )
    finally:
        del sys.modules["bm3d"]


def test_dry_run_writes_nothing_and_its_counts_match_the_real_run(
    cluster, model_dir, s3_server, tmp_path
):
    for i in range(8):
        write(tmp_path / f"in/s{i % 2}/{i}.png", png_bytes(noisy(rgb(24, 32, seed=i), i)))
    write(tmp_path / "in/bad.png", b"not an image")
    write(tmp_path / "in/.hidden.png", png_bytes(rgb(8, 8)))
    for i in range(0, 8, 2):  # outputs for s0/ already, which no report vouches for: redone
        write(tmp_path / f"out/s0/{i}.png", (tmp_path / f"in/s0/{i}.png").read_bytes())
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    logs = []
    cfg = DenoiseConfig(
        input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=str(model_dir), dry_run=True
    )
    plan = run_denoise(cfg, log=logs.append)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert (
        plan["inputs"],
        plan["to_do"],
        plan["redo"],
        plan["existing"],
        sum(plan["excluded"].values()),
    ) == (10, 5, 4, 0, 1)
    assert any("4 to redo (an output of another model" in line for line in logs)
    assert plan["estimate"]["cpu_seconds"] > 0 and any(
        "nothing was written" in line for line in logs
    )
    real = run_denoise(replace(cfg, dry_run=False), log=quiet)
    assert (real["ok"] + real["failures"], real["skipped"], real["excluded"]) == (
        plan["to_do"] + plan["redo"],
        plan["existing"],
        sum(plan["excluded"].values()),
    )
    # after the run, its report vouches for every output it wrote or verified: they are kept unread
    again = run_denoise(cfg, log=quiet)
    assert (again["to_do"], again["existing"], again["trusted"]) == (
        1,
        0,
        8,
    )  # bad.png is tried again
    # the same on S3 (its listing, merged with the output's), and through the CLI
    base = s3_server.prefix()
    fs = s3_server.fs()
    for p in (tmp_path / "in").rglob("*"):
        if p.is_file():
            fs.pipe(f"{base[5:]}/in/{p.relative_to(tmp_path / 'in')}", p.read_bytes())
    fs.pipe(f"{base[5:]}/out/s1/1.png", (tmp_path / "out/s1/1.png").read_bytes())
    r = run_cli(
        "denoise",
        "--input",
        f"{base}/in",
        "--output",
        f"{base}/out",
        "--model",
        str(model_dir),
        "--s3-endpoint",
        s3_server.endpoint,
        "--dry-run",
    )
    assert r.returncode == 0 and "10 inputs" in r.stdout and "8 to do, 1 to redo" in r.stdout, (
        r.stdout + r.stderr
    )
    assert "1 excluded (1 hidden" in r.stdout and "Ray" not in r.stdout
    assert sorted(fs.find(f"{base[5:]}/out")) == [f"{base[5:]}/out/s1/1.png"]
    # on S3 the tag is the ETag, the MD5 of what was written: a rerun trusts the outputs unread
    s3cfg = DenoiseConfig(
        input=f"{base}/in",
        output=f"{base}/out",
        model=str(model_dir),
        s3_endpoint=s3_server.endpoint,
    )
    first = run_denoise(s3cfg, log=quiet)
    assert (first["ok"], first["skipped"], first["trusted"]) == (
        8,
        0,
        0,
    )  # s1/1.png: no report vouched for it
    rerun = run_denoise(s3cfg, log=quiet)
    assert (rerun["ok"], rerun["skipped"], rerun["trusted"], rerun["failures"]) == (0, 8, 8, 1)
