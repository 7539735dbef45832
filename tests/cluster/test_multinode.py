"""A real three-node Ray cluster (a head that runs no work, as in cluster.yaml, and two 2-CPU
worker nodes, each a separate `ray start` in a session of its own) with the SeaweedFS bucket as the shared
storage: work spreads over the nodes and equals a single-node run's; a local path that a node
cannot see is refused before any work; a node killed in the middle of `denoise` and of `train`
loses nothing. Worker node `b` runs in a mount namespace of its own, where the folder
`driver-only/` does not exist (a machine that does not see the driver's disk)."""

import csv
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import png_bytes, rgb, run_cli, write
from raynodes import LocalCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """Head (0 CPUs) + nodes a and b (2 CPUs each); b cannot see BASE/driver-only. Started once
    for the module and stopped even when a test fails."""
    base = tmp_path_factory.mktemp("multinode")
    hidden = base / "driver-only"
    hidden.mkdir()
    c = LocalCluster(tmp_path_factory.mktemp("ray"))
    c.base, c.hidden = base, hidden
    try:
        c.start_head(cpus=0)
        c.add_node("a", cpus=2)
        c.add_node("b", cpus=2, hide=[hidden])
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def s3_dataset(cluster, s3_server):
    """A paired data set ingested on the cluster from S3 into S3: (its URI, the high images)."""
    fs, base = s3_server.fs(), s3_server.prefix()
    highs = put_images(s3_server, f"{base}/pairs/high", 16, 32, noisy=False)
    for key, img in highs.items():
        fs.pipe(
            f"{base[5:]}/pairs/low/{key}",
            png_bytes(np.clip(img.astype(int) + 30, 0, 255).astype(np.uint8)),
        )
    r = cli(
        cluster,
        "ingest",
        "--low",
        f"{base}/pairs/low",
        "--high",
        f"{base}/pairs/high",
        "--out",
        f"{base}/ds",
        "--rows-per-shard",
        "2",
        "--split",
        "0.75,0.25,0",
        "--s3-endpoint",
        s3_server.endpoint,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return f"{base}/ds", highs


def cli(c: LocalCluster, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, address=c.address, env=c.env, timeout=timeout)


MANY = """
import json, sys
from raydenoise.cli import main
for args in json.loads(sys.argv[1]):
    print("\\n=== case", file=sys.stderr, flush=True)
    rc = main(args)
    print(f"\\n=== rc {rc}", file=sys.stderr, flush=True)
"""


def cli_many(c: LocalCluster, cases: list[list[str]]) -> list[tuple[int, str]]:
    """Several commands, one after the other, in one process (``raydenoise.cli.main``: the same
    code as the console script, without a Python start and imports per command): their exit
    codes and stderr."""
    argv = [
        [*a, "--address", c.address] if a[0] in ("ingest", "train", "denoise") else a for a in cases
    ]
    r = subprocess.run(
        [sys.executable, "-c", MANY, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **c.env},
    )
    results = []
    for chunk in r.stderr.split("\n=== case")[1:]:
        text, _, rc = chunk.rpartition("\n=== rc ")
        results.append((int(rc.split()[0]), text))
    assert len(results) == len(cases), r.stderr[-3000:]
    return results


def put_images(s3, prefix: str, n: int, size: int, noisy: bool = True) -> dict[str, np.ndarray]:
    """n PNGs under prefix (an s3:// URI); returns {key: pixels}."""
    fs, images = s3.fs(), {}
    rng = np.random.default_rng(0)
    for i in range(n):
        clean = rgb(size, size, seed=i)
        img = (
            np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
            if noisy
            else clean
        )
        key = f"batch{i % 3}/{i:03d}.png"
        fs.pipe(f"{prefix[5:]}/{key}", png_bytes(img))
        images[key] = img
    return images


def read_png(fs, path: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(fs.cat_file(path))).convert("RGB"))


def report_rows(fs, report_prefix: str) -> list[dict]:
    return pq.read_table(io.BytesIO(fs.cat_file(f"{report_prefix[5:]}/report.parquet"))).to_pylist()


def test_ingest_and_denoise_spread_over_nodes_and_equal_a_single_node_run(
    cluster, s3_server, s3_dataset
):
    fs, base = s3_server.fs(), s3_server.prefix()
    ids = cluster.node_ids()
    assert set(ids) == {"head", "a", "b"}
    workers = {ids["a"], ids["b"]}  # the head runs no work

    # ingest (the fixture): pairs from S3 into Parquet shards in S3, one task per shard over both nodes
    ds, highs = s3_dataset
    manifest = json.loads(fs.cat_file(f"{ds[5:]}/manifest.json"))
    assert {
        s["node"] for s in manifest["shards"]
    } == workers  # both worker nodes wrote shards, the head none
    # Equal to the inputs, pixel for pixel (ingest is lossless wherever it runs).
    got = {}
    for s in manifest["shards"]:
        for row in pq.read_table(io.BytesIO(fs.cat_file(f"{ds[5:]}/{s['path']}"))).to_pylist():
            got[row["id"]] = np.array(Image.open(io.BytesIO(row["high"])).convert("RGB"))
    assert sorted(got) == sorted(k[:-4] for k in highs)
    assert all(np.array_equal(got[k[:-4]], v) for k, v in highs.items())

    # denoise: S3 to S3 with the built-in model, actors on both nodes; outputs equal the model run here
    noisy = put_images(s3_server, f"{base}/noisy", 32, 64)
    r = cli(
        cluster,
        "denoise",
        "--input",
        f"{base}/noisy",
        "--output",
        f"{base}/clean",
        "--batch-size",
        "1",
        "--s3-endpoint",
        s3_server.endpoint,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = report_rows(fs, f"{base}/clean/_report")
    assert sorted(r["key"] for r in rows) == sorted(noisy) and {r["status"] for r in rows} == {"ok"}
    assert {r["node"] for r in rows} == workers
    summary = json.loads(fs.cat_file(f"{base[5:]}/clean/_report/summary.json"))
    assert set(summary["nodes"]) == workers and sum(summary["nodes"].values()) == len(noisy)
    import raydenoise

    model = raydenoise.load_model("builtin:denoise")
    for key, img in list(noisy.items())[:6]:
        diff = np.abs(read_png(fs, f"{base[5:]}/clean/{key}").astype(int) - model(img).astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (
            key
        )  # float rounding of other thread counts, no more


def test_local_paths_work_when_every_node_sees_them_and_are_refused_before_work_when_not(
    cluster, s3_dataset, s3_server, tmp_path
):
    # tmp_path is on this machine's disk, which every node of this test cluster shares: it works.
    for i in range(4):
        write(tmp_path / f"in/{i}.png", png_bytes(rgb(24, 32, seed=i)))
    r = cli(cluster, "denoise", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 4

    # driver-only/ is hidden from node b: every job refuses such a path before it starts work.
    local = cluster.hidden / "job"
    for i in range(4):
        write(local / f"in/{i}.png", png_bytes(rgb(24, 32, seed=i)))
        write(local / f"low/{i}.png", png_bytes(rgb(24, 32, seed=i)))
    cases = [
        (
            ["denoise", "--input", str(local / "in"), "--output", str(tmp_path / "out2")],
            "--input",
            tmp_path / "out2/0.png",
        ),
        (
            ["denoise", "--input", str(tmp_path / "in"), "--output", str(local / "out")],
            "--output",
            local / "out/0.png",
        ),
        (
            [
                "ingest",
                "--low",
                str(local / "low"),
                "--high",
                str(local / "in"),
                "--out",
                str(tmp_path / "ds2"),
            ],
            "--low",
            tmp_path / "ds2/manifest.json",
        ),
        (
            [
                "train",
                "--data",
                s3_dataset[0],
                "--model",
                "seed-ae",
                "--storage-path",
                str(local / "runs"),
                "--name",
                "x",
                "--s3-endpoint",
                s3_server.endpoint,
            ],
            "--storage-path",
            local / "runs/x/summary.json",
        ),
    ]
    # (a copy of the S3 data set in driver-only/, to evaluate: its shards are read by the actors)
    s3_server.fs().get(s3_dataset[0][5:] + "/", str(local / "ds"), recursive=True)
    cases.append(
        (
            [
                "evaluate",
                "--data",
                str(local / "ds"),
                "--model",
                "builtin:denoise",
                "--split",
                "val",
                "--out",
                str(tmp_path / "eval"),
                "--address",
                cluster.address,
            ],
            "--data",
            tmp_path / "eval/table.json",
        )
    )
    for (_args, flag, not_written), (rc, out) in zip(
        cases, cli_many(cluster, [args for args, _, _ in cases])
    ):
        assert rc != 0 and "Traceback" not in out, out
        assert f"{flag} {local}" in out and "do not see it" in out and "s3://" in out, out
        assert not not_written.exists(), not_written
    assert not list(tmp_path.glob("out2/*.png")) and not list(local.glob("runs/x/checkpoint_*"))


def test_node_killed_mid_denoise_every_image_written_once_or_reported(cluster, s3_server, tmp_path):
    fs, base = s3_server.fs(), s3_server.prefix()
    noisy = put_images(s3_server, f"{base}/noisy", 80, 96)
    proc = cluster.start_cli(
        tmp_path / "log.txt",
        "denoise",
        "--input",
        f"{base}/noisy",
        "--output",
        f"{base}/clean",
        "--s3-endpoint",
        s3_server.endpoint,
        "--batch-size",
        "2",
    )
    try:
        deadline = time.time() + 240
        while len(fs.glob(f"{base[5:]}/clean/batch*/*.png", refresh=True)) < 12:
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            assert time.time() < deadline, "no progress"
            time.sleep(0.3)
        cluster.kill("b")  # its two model actors die with whatever they held
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "log.txt").read_text()
    rows = report_rows(fs, f"{base}/clean/_report")
    keys = [r["key"] for r in rows]
    assert sorted(keys) == sorted(noisy) and len(set(keys)) == len(keys), log[
        -3000:
    ]  # each image once
    reported = [r for r in rows if r["status"] != "ok"]
    if rc != 0:  # the job stopped: what was not done is in the report, and the rerun completes it
        assert reported and {r["status"] for r in reported} == {"not-done"} and "rerun" in log, log[
            -3000:
        ]
        r = cli(
            cluster,
            "denoise",
            "--input",
            f"{base}/noisy",
            "--output",
            f"{base}/clean",
            "--s3-endpoint",
            s3_server.endpoint,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        rows = report_rows(fs, f"{base}/clean/_report")
        assert sorted(r["key"] for r in rows) == sorted(noisy)
    else:
        assert not reported, log[-3000:]  # Ray re-ran the lost work on the node that remained
    assert {r["status"] for r in rows} <= {"ok", "skipped"}
    done = [r["key"] for r in rows]
    written = sorted(
        p.split("/clean/", 1)[1] for p in fs.glob(f"{base[5:]}/clean/batch*/*.png", refresh=True)
    )
    assert written == sorted(done)
    for key in done[::10]:
        assert read_png(fs, f"{base[5:]}/clean/{key}").shape == noisy[key].shape


def test_training_spread_over_nodes_survives_losing_one_and_equals_a_run_on_one_node(
    cluster, s3_server, s3_dataset, tmp_path
):
    """Two DDP workers: packed on one node, uninterrupted; then spread over two nodes with
    --max-failures 1, one node killed once the first checkpoint is recorded. The second run resumes on the
    node left, ends with every epoch, and its weights equal the first run's to the byte: the
    placement changes nothing, and a resume continues exactly where the checkpoint was."""
    if "b" not in cluster.procs:
        cluster.add_node("b2", cpus=2)  # node b died in the test before: a fresh machine joins
    fs, base = s3_server.fs(), s3_server.prefix()
    ids = cluster.node_ids()
    victim = "b2" if "b2" in ids else "b"
    args = [
        "train",
        "--data",
        s3_dataset[0],
        "--model",
        "seed-ae",
        "--storage-path",
        f"{base}/runs",
        "--epochs",
        "2",
        "--patch-size",
        "16",
        "--patches-per-image",
        "4",
        "--batch-size",
        "2",
        "--num-workers",
        "2",
        "--cpus-per-worker",
        "1",
        "--s3-endpoint",
        s3_server.endpoint,
    ]
    r = cli(cluster, *args, "--name", "pack", "--placement", "pack")
    assert r.returncode == 0, r.stdout + r.stderr
    proc = cluster.start_cli(
        tmp_path / "log.txt",
        *args,
        "--name",
        "spread",
        "--placement",
        "spread",
        "--max-failures",
        "1",
    )
    try:
        deadline = time.time() + 240
        # Ray Train records a checkpoint (once every worker has reported it) in this file
        snapshot = f"{base[5:]}/runs/spread/checkpoint_manager_snapshot.json"
        while fs.invalidate_cache() or not (
            fs.exists(snapshot) and b"checkpoint_" in fs.cat_file(snapshot)
        ):
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint"
            time.sleep(0.2)
        cluster.kill(victim)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "log.txt").read_text()
    assert rc == 0, log[-3000:]
    runs = {
        name: json.loads(fs.cat_file(f"{base[5:]}/runs/{name}/summary.json"))
        for name in ("pack", "spread")
    }
    assert len({w["node"] for w in runs["pack"]["workers"]}) == 1
    history = list(
        csv.DictReader(io.StringIO(fs.cat_file(f"{base[5:]}/runs/spread/metrics.csv").decode()))
    )
    assert runs["spread"]["epochs"] == 2 and [int(h["epoch"]) for h in history] == [1, 2], log[
        -3000:
    ]
    first, restarts = runs["spread"]["workers"][:2], runs["spread"]["workers"][2:]
    assert sorted(w["rank"] for w in first) == [0, 1]
    assert {w["node"] for w in first} == {ids["a"], ids[victim]}  # spread over both nodes at first
    assert len(restarts) == 2 and {w["node"] for w in restarts} == {ids["a"]}, log[
        -3000:
    ]  # then on the node left
    assert (
        min(w["from_epoch"] for w in restarts) >= 1 and "resuming spread after epoch" in log
    )  # from a checkpoint
    assert runs["spread"]["best_metrics"]["val_psnr"] == runs["pack"]["best_metrics"]["val_psnr"]
    assert fs.cat_file(f"{base[5:]}/runs/spread/model/model.safetensors") == fs.cat_file(
        f"{base[5:]}/runs/pack/model/model.safetensors"
    )
