"""Ingest s3 -> s3 against a real S3 server (SeaweedFS on 127.0.0.1)."""

import io
import json

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from raydenoise.jobs.ingest import IngestConfig, IngestError, run_ingest
from raydenoise.jobs.synth import SynthConfig, run_synth
from raydenoise.storage.dataset import read_manifest

from conftest import jpeg_bytes, png_bytes, rgb, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.s3]


@pytest.fixture(scope="module")
def cluster(s3_server, ray_cluster):
    # s3_server first: the Ray workers must see the test credentials (set in conftest).
    return ray_cluster


def upload(fs, uri: str, data: bytes) -> None:
    fs.pipe_file(uri[len("s3://") :], data)


def test_s3_to_s3_round_trip_is_bit_exact(s3_server, cluster):
    fs = s3_server.fs()
    base = s3_server.prefix()
    sources = {}
    for i in range(5):
        a, b = rgb(12, 20, seed=i), rgb(12, 20, seed=40 + i)
        upload(fs, f"{base}/low/batch/{i}.png", png_bytes(a))
        upload(fs, f"{base}/high/batch/{i}.jpg", jpeg_bytes(b))
        sources[f"batch/{i}"] = (
            a,
            np.asarray(Image.open(io.BytesIO(jpeg_bytes(b))).convert("RGB")),
        )
    upload(fs, f"{base}/low/broken.png", b"\x89PNG\r\n\x1a\n-truncated")
    upload(fs, f"{base}/high/broken.png", png_bytes(rgb(12, 20)))
    cfg = IngestConfig(
        low=f"{base}/low",
        high=f"{base}/high",
        out=f"{base}/ds",
        rows_per_shard=2,
        s3_endpoint=s3_server.endpoint,
    )
    res = run_ingest(cfg, log=lambda m: None)
    assert res.manifest["counts"]["total"] == 5
    rej = {r["file"]: r["reason"] for r in res.manifest["rejected"]}
    assert (
        "corrupt" in rej[f"{base}/low/broken.png"] and "partner" in rej[f"{base}/high/broken.png"]
    )
    assert read_manifest(f"{base}/ds", s3_server.endpoint)["run"] == res.manifest["run"]
    table = pads.dataset(
        f"{base[5:]}/ds", format="parquet", filesystem=fs, exclude_invalid_files=True
    ).to_table()
    assert table.num_rows == 5
    for row in table.to_pylist():
        a, b = sources[row["id"]]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(row["low"]))), a)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(row["high"]))), b)
    listed = sorted(
        p.split("/ds/", 1)[1] for p in fs.find(f"{base[5:]}/ds") if p.endswith(".parquet")
    )
    assert listed == sorted(s["path"] for s in res.manifest["shards"])


def test_synth_to_s3_then_cli_ingest_with_endpoint_from_env(s3_server, cluster):
    base = s3_server.prefix()
    run_synth(
        SynthConfig(
            out=f"{base}/pairs", noise="gaussian:15", limit=3, s3_endpoint=s3_server.endpoint
        ),
        log=lambda m: None,
    )
    r = run_cli(
        "ingest",
        "--low",
        f"{base}/pairs/low",
        "--high",
        f"{base}/pairs/high",
        "--out",
        f"{base}/ds",
        address=cluster,
        env={"AWS_ENDPOINT_URL": s3_server.endpoint},
    )
    assert r.returncode == 0, r.stderr
    assert "3 pairs" in r.stdout
    manifest = json.loads(s3_server.fs().cat_file(f"{base[5:]}/ds/manifest.json"))
    assert manifest["counts"]["total"] == 3 and manifest["args"]["out"] == f"{base}/ds"
    assert "raydenoise-test-secret" not in r.stdout + r.stderr + json.dumps(manifest)


def test_s3_errors_are_clear(s3_server, cluster):
    with pytest.raises(IngestError, match="no such file or folder"):
        run_ingest(
            IngestConfig(
                low=f"{s3_server.prefix()}/nope",
                high=f"{s3_server.prefix()}/nope2",
                out=f"{s3_server.prefix()}/o",
                s3_endpoint=s3_server.endpoint,
            ),
            log=lambda m: None,
        )
    r = run_cli(
        "ingest",
        "--low",
        f"{s3_server.prefix()}/low",
        "--high",
        f"{s3_server.prefix()}/high",
        "--out",
        f"{s3_server.prefix()}/o",
        "--s3-endpoint",
        s3_server.endpoint,
        address=cluster,
        env={"AWS_SECRET_ACCESS_KEY": "wrong-secret-value"},
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "wrong-secret-value" not in r.stdout + r.stderr
