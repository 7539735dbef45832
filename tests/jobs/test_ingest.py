"""Ingest local -> local on a 2-CPU Ray cluster: round trips, rejects, shards, splits, reruns."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raydenoise.imaging.images import decode_rgb8
from raydenoise.jobs.ingest import IngestConfig, IngestError, run_ingest
from raydenoise.storage.dataset import read_manifest

from conftest import jpeg_bytes, png16_bytes, png_bytes, rgb, run_cli, write

pytestmark = pytest.mark.slow


def quiet(msg):
    pass


def decode(png: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.mode == "RGB"
    return np.asarray(im)


def rows_of(out: Path) -> dict:
    table = pads.dataset(str(out), format="parquet", exclude_invalid_files=True).to_table()
    return {r["id"]: r for r in table.to_pylist()}


@pytest.fixture
def mixed(tmp_path):
    """Good pairs in many formats plus one of every kind of bad input."""
    low, high = tmp_path / "low", tmp_path / "high"
    good = {}
    for i in range(6):  # plain RGB PNG on both sides, nested folders, numeric names
        a, b = rgb(16, 24, seed=i), rgb(16, 24, seed=100 + i)
        write(low / f"set{i % 2}/{i * 5}.png", png_bytes(a))
        write(high / f"set{i % 2}/{i * 5}.png", png_bytes(b))
        good[f"set{i % 2}/{i * 5}"] = (a, b)
    g = rgb(10, 12, seed=7)[..., 0]
    write(low / "gray.png", png_bytes(g))
    write(high / "gray.jpg", jpeg_bytes(rgb(10, 12, seed=8)))
    rgba = np.concatenate([rgb(10, 12, seed=9), np.full((10, 12, 1), 128, np.uint8)], -1)
    write(low / "alpha.png", png_bytes(rgba))
    write(high / "alpha.png", png16_bytes(rgb(10, 12, seed=10).astype(np.uint16) * 257))
    pal = Image.fromarray(rgb(10, 12, seed=11)).quantize(8)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    write(low / "palette.png", buf.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6
    write(high / "palette.jpg", jpeg_bytes(rgb(12, 10, seed=12), exif=exif))  # 10x12 once rotated
    # bad inputs
    write(low / "mismatch.png", png_bytes(rgb(10, 12)))
    write(high / "mismatch.png", png_bytes(rgb(12, 10)))
    write(low / "trunc.png", png_bytes(rgb(64, 64))[:200])
    write(high / "trunc.png", png_bytes(rgb(64, 64)))
    write(low / "notes.png", b"this is a text file")
    write(high / "notes.png", png_bytes(rgb(8, 8)))
    write(low / "lonely.png", png_bytes(rgb(8, 8)))
    write(high / "orphan.png", png_bytes(rgb(8, 8)))
    return tmp_path, good


def test_local_ingest_round_trip_rejects_and_manifest(ray_cluster, mixed):
    root, good = mixed
    out = root / "out"
    logs = []
    plan = run_ingest(
        IngestConfig(
            low=str(root / "low"),
            high=str(root / "high"),
            out=str(out),
            rows_per_shard=3,
            dry_run=True,
        ),
        log=logs.append,
    ).plan
    assert not out.exists() and "nothing was written" in logs[-1]  # a dry run writes nothing
    assert (
        plan["pairs"] == 12
        and sum(plan["splits"].values()) == 12
        and plan["rejected_by_reason"] == {"no partner": 2}
    )
    assert (
        plan["shards"] == sum(-(-n // 3) for n in plan["splits"].values())
        and plan["seconds_per_pair"] > 0
    )
    res = run_ingest(
        IngestConfig(
            low=str(root / "low"), high=str(root / "high"), out=str(out), rows_per_shard=3
        ),
        log=quiet,
    )
    m = read_manifest(str(out))
    assert m == res.manifest and m["schema_version"] == 2 and m["clean_only"] is False
    rows = rows_of(out)
    assert set(rows) == set(good) | {"gray", "alpha", "palette"}
    # bit-exact pixels, checked against Pillow directly for plain files
    for pid, (a, b) in good.items():
        assert np.array_equal(decode(rows[pid]["low"]), a) and np.array_equal(
            decode(rows[pid]["high"]), b
        )
        assert (rows[pid]["height"], rows[pid]["width"]) == (16, 24)
    assert np.array_equal(
        decode(rows["gray"]["low"]), decode_rgb8((root / "low/gray.png").read_bytes())
    )
    jpg = np.asarray(Image.open(root / "high/gray.jpg").convert("RGB"))
    assert np.array_equal(decode(rows["gray"]["high"]), jpg)
    assert np.array_equal(decode(rows["alpha"]["low"]), rgb(10, 12, seed=9))
    assert np.array_equal(decode(rows["alpha"]["high"]), rgb(10, 12, seed=10))
    assert (rows["palette"]["height"], rows["palette"]["width"]) == (10, 12)
    # rejects: every bad file named with a reason; every input accounted for
    rej = {(r["side"], Path(r["file"]).name): r["reason"] for r in m["rejected"]}
    assert rej[("low", "mismatch.png")].startswith("size mismatch") and rej[
        ("high", "mismatch.png")
    ].startswith("size mismatch")
    assert "truncated" in rej[("low", "trunc.png")] and "partner" in rej[("high", "trunc.png")]
    assert "not an image" in rej[("low", "notes.png")]
    assert rej[("low", "lonely.png")].startswith("no partner") and rej[
        ("high", "orphan.png")
    ].startswith("no partner")
    stored = {("low", r["low_file"]) for r in rows.values()} | {
        ("high", r["high_file"]) for r in rows.values()
    }
    rejected_files = {
        (r["side"], os.path.relpath(r["file"], root / r["side"])) for r in m["rejected"]
    }
    all_inputs = {
        (side, str(p.relative_to(root / side)))
        for side in ("low", "high")
        for p in (root / side).rglob("*")
        if p.is_file()
    }
    assert stored | rejected_files == all_inputs and not stored & rejected_files
    # shards: at most rows_per_shard rows, one split each, listed in the manifest with counts
    assert (
        m["counts"]["total"] == len(rows) == sum(m["counts"][s] for s in ("train", "val", "test"))
    )
    for shard in m["shards"]:
        t = pq.read_table(out / shard["path"])
        assert t.num_rows == shard["rows"] <= 3
        assert set(t.column("split").to_pylist()) == {shard["split"]} and shard["path"].startswith(
            shard["split"] + "/"
        )
    assert m["args"]["rows_per_shard"] == 3 and m["args"]["seed"] == 42
    # the plan's pairs are the real run's rows plus the pairs whose files the run rejected on decoding
    assert plan["pairs"] == len(rows) + len({r["id"] for r in m["rejected"]} - {"lonely", "orphan"})


def test_rerun_replaces_previous_shards_and_splits_are_stable(ray_cluster, tmp_path):
    low, high, out = tmp_path / "low", tmp_path / "high", tmp_path / "out"
    for i in range(12):
        write(low / f"{i}.png", png_bytes(rgb(8, 8, seed=i)))
        write(high / f"{i}.png", png_bytes(rgb(8, 8, seed=50 + i)))
    cfg = IngestConfig(low=str(low), high=str(high), out=str(out), rows_per_shard=2)
    first = run_ingest(cfg, log=quiet).manifest
    split1 = {r["id"]: r["split"] for r in rows_of(out).values()}
    for i in range(12, 20):  # the data set grows
        write(low / f"{i}.png", png_bytes(rgb(8, 8, seed=i)))
        write(high / f"{i}.png", png_bytes(rgb(8, 8, seed=50 + i)))
    second = run_ingest(cfg, log=quiet).manifest
    assert second["run"] != first["run"]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert files == sorted(s["path"] for s in second["shards"])  # no old shards left
    rows = rows_of(out)
    assert len(rows) == 20 == second["counts"]["total"]
    assert all(rows[i]["split"] == s for i, s in split1.items())


def test_nothing_valid_is_an_error_and_keeps_previous_output(ray_cluster, tmp_path):
    write(tmp_path / "low/a.png", png_bytes(rgb(8, 8)))
    write(tmp_path / "high/a.png", png_bytes(rgb(8, 8)))
    out = tmp_path / "out"
    run_ingest(
        IngestConfig(low=str(tmp_path / "low"), high=str(tmp_path / "high"), out=str(out)),
        log=quiet,
    )
    before = sorted(p.name for p in out.rglob("*"))
    write(tmp_path / "low2/a.png", b"garbage")
    write(tmp_path / "high2/b.png", png_bytes(rgb(8, 8)))
    with pytest.raises(IngestError, match="no valid pairs"):
        run_ingest(
            IngestConfig(low=str(tmp_path / "low2"), high=str(tmp_path / "high2"), out=str(out)),
            log=quiet,
        )
    assert sorted(p.name for p in out.rglob("*")) == before


def test_cli_reports_user_errors_without_tracebacks(ray_cluster, tmp_path):
    write(tmp_path / "low/a.png", b"garbage")
    write(tmp_path / "high/a.png", png_bytes(rgb(8, 8)))
    r = run_cli(
        "ingest",
        "--low",
        str(tmp_path / "low"),
        "--high",
        str(tmp_path / "high"),
        "--out",
        str(tmp_path / "o"),
        address=ray_cluster,
    )
    assert r.returncode == 1
    assert (
        "no valid pairs" in r.stderr and "not an image" in r.stderr and "Traceback" not in r.stderr
    )
    r = run_cli(
        "ingest",
        "--low",
        str(tmp_path / "missing"),
        "--high",
        str(tmp_path / "high"),
        "--out",
        str(tmp_path / "o"),
        address=ray_cluster,
    )
    assert (
        r.returncode == 1 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    )
    r = run_cli("ingest", "--low", "x", "--high", "y", "--out", "z", "--split", "0.5,0.6")
    assert r.returncode == 2 and "--split" in r.stderr


def test_cli_ingest_success_prints_summary(ray_cluster, tmp_path):
    for i in range(3):
        write(tmp_path / f"low/{i}.png", png_bytes(rgb(8, 8, seed=i)))
        write(tmp_path / f"high/{i}.png", png_bytes(rgb(8, 8, seed=i + 9)))
    write(tmp_path / "low/extra.png", png_bytes(rgb(8, 8)))
    r = run_cli(
        "ingest",
        "--low",
        str(tmp_path / "low"),
        "--high",
        str(tmp_path / "high"),
        "--out",
        str(tmp_path / "o"),
        address=ray_cluster,
    )
    assert r.returncode == 0, r.stderr
    assert "3 pairs" in r.stdout and "rejected 1 file (1 no partner)" in r.stderr
    assert json.loads((tmp_path / "o/manifest.json").read_text())["counts"]["total"] == 3


def test_clean_only_ingest_keeps_every_good_image_and_rejects_the_rest(
    ray_cluster, mixed, tmp_path
):
    root, good = mixed
    write(root / "high/broken.png", b"not an image at all")
    r = run_cli(
        "ingest",
        "--high",
        str(root / "high"),
        "--out",
        str(tmp_path / "clean"),
        "--split",
        "1,0,0",
        address=ray_cluster,
    )
    assert r.returncode == 0, r.stderr
    assert "clean-only data set" in r.stdout
    manifest = read_manifest(str(tmp_path / "clean"))
    assert manifest["clean_only"] is True and manifest["args"]["low"] is None
    rows = rows_of(tmp_path / "clean")
    for pid, (_, b) in good.items():
        assert rows[pid]["low"] is None and rows[pid]["low_file"] is None
        assert np.array_equal(decode(rows[pid]["high"]), b)
    # every high file is either a row or rejected with its reason (no partner is needed)
    high_files = [p for p in (root / "high").rglob("*") if p.is_file()]
    assert len(rows) + manifest["counts"]["rejected_files"] == len(high_files)
    reasons = {r["id"]: r["reason"] for r in manifest["rejected"]}
    assert set(reasons) == {"broken"} and "not an image" in reasons["broken"]
    assert "orphan" in rows and "mismatch" in rows  # alone, they are fine clean images
    from raydenoise.jobs.evaluate import EvaluateConfig, EvaluateError, run_evaluate

    with pytest.raises(EvaluateError, match="clean images only"):
        run_evaluate(
            EvaluateConfig(
                data=str(tmp_path / "clean"), model=str(tmp_path / "no-model"), split="train"
            ),
            log=quiet,
        )


def test_demo_command_runs_end_to_end(ray_cluster, tmp_path):
    r = run_cli("demo", "--out", str(tmp_path / "demo"), "--epochs", "1", address=ray_cluster)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "demo/dataset/manifest.json").read_text())
    assert m["counts"]["total"] == 13 and not m["rejected"]
    assert len(list((tmp_path / "demo/pairs/low").glob("*.png"))) == 13
    run = tmp_path / "demo/runs/demo-unet"
    assert (run / "model/model.safetensors").exists() and (run / "curves.png").exists()
    assert "val PSNR" in r.stdout and "noisy input" in r.stdout
    outputs = sorted(p.name for p in (tmp_path / "demo/denoised").glob("*.png"))
    assert outputs == sorted(p.name for p in (tmp_path / "demo/pairs/low").glob("*.png"))
    summary = json.loads((tmp_path / "demo/denoised/_report/summary.json").read_text())
    assert summary["ok"] == 13 and summary["metrics"]["psnr"]["count"] == 13
    assert (tmp_path / "demo/denoised/_report/report.html").exists()
    table = json.loads((run / "model/eval/val/table.json").read_text())["table"]
    assert set(table) == {"model", "noisy input", "nl-means"}


def test_synth_cli_user_errors(tmp_path):
    r = run_cli("synth", "--out", str(tmp_path / "o"), "--noise", "speckle")
    assert (
        r.returncode == 1
        and "unknown noise kind 'speckle'" in r.stderr
        and "Traceback" not in r.stderr
    )
    r = run_cli(
        "synth",
        "--out",
        str(tmp_path / "o"),
        "--noise",
        "gaussian:5",
        "--clean",
        str(tmp_path / "none"),
    )
    assert (
        r.returncode == 1 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    )
    r = run_cli("synth", "--out", str(tmp_path / "o"), "--noise", "gaussian:5", "--crop", "big")
    assert r.returncode == 2 and "HEIGHT,WIDTH" in r.stderr


def test_pairing_streams_through_sorted_runs_with_the_same_result(mixed, monkeypatch):
    """Pairing merges the two listings as streams sorted by id; with more keys than fit in memory
    (SORT_ROWS, here 2) they go through sorted runs on disk, and the plan is the same."""
    import importlib

    from raydenoise.storage.store import open_store

    ingest = importlib.import_module(
        "raydenoise.jobs.ingest.plan"
    )  # the module (raydenoise.ingest is also a function)
    root, _ = mixed
    cfg = IngestConfig(
        low=str(root / "low"), high=str(root / "high"), out=str(root / "out"), rows_per_shard=2
    )

    def plan():
        p, rejected, listed = ingest._pair(
            cfg, open_store(cfg.low), open_store(cfg.high), None, "", "run"
        )
        return p.specs, dict(p.splits), p.n, sorted(map(json.dumps, rejected)), dict(listed)

    in_memory = plan()
    monkeypatch.setattr(ingest, "SORT_ROWS", 2)
    assert plan() == in_memory
    assert in_memory[2] == 12 and in_memory[4] == {"low": 13, "high": 13}
