"""Autoscaling from zero, with Ray's fake multi-node provider (the one behind
ray.cluster_utils.AutoscalingCluster): a head that runs no work and worker types taken from
cluster.yaml. A denoise job makes the autoscaler add worker nodes, completes, and the idle
workers are removed afterwards.

The node types are derived from cluster.yaml, so the two cannot drift apart: the same type names,
min/max workers and cluster-wide max_workers; each type's CPUs and GPUs are its instance type's,
divided by CPU_SCALE (this machine has 2 cores, not 16 per node). Only the idle timeout is
shortened, from minutes to seconds. AutoscalingCluster itself runs `ray stop --force` (every Ray
process on the machine) and needs a config file the wheel does not ship, so the head is started
here as in raynodes: its own session, temp dir and ports.
"""

import io
import json
import re
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import png_bytes, rgb
from raynodes import RAY, LocalCluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
# vCPUs and GPUs of the AWS instance types cluster.yaml uses; a new type there must be added here.
INSTANCES = {"m5.2xlarge": (8, 0), "m5.4xlarge": (16, 0), "g5.2xlarge": (8, 1)}
CPU_SCALE = 8
IDLE_TIMEOUT_S = 6


def fake_provider_config(cluster_yaml: dict, gcs_address: str, idle_timeout_s: float) -> dict:
    """cluster.yaml's node types and limits as a config for Ray's fake multi-node provider."""
    types = cluster_yaml["available_node_types"]
    head = cluster_yaml["head_node_type"]
    workers = {}
    for name, t in types.items():
        if name == head:
            continue
        vcpus, gpus = INSTANCES[t["node_config"]["InstanceType"]]
        workers[name] = {
            "resources": {
                "CPU": max(1, vcpus // CPU_SCALE),
                **({"GPU": gpus} if gpus else {}),
                **t.get("resources", {}),
            },
            "node_config": {},
            "min_workers": t.get("min_workers", 0),
            "max_workers": t["max_workers"],
        }
    return {
        "cluster_name": cluster_yaml["cluster_name"],
        "max_workers": cluster_yaml["max_workers"],
        "upscaling_speed": cluster_yaml.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        # the fake provider names the head's type ray.head.default
        "available_node_types": {
            "ray.head.default": {
                "resources": dict(types[head]["resources"]),
                "node_config": {},
                "max_workers": 0,
            },
            **workers,
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def cluster_yaml() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_the_test_clusters_node_types_are_cluster_yamls():
    real = cluster_yaml()
    fake = fake_provider_config(real, "127.0.0.1:1", IDLE_TIMEOUT_S)
    types = real["available_node_types"]
    assert real["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    assert fake["available_node_types"]["ray.head.default"]["resources"] == {
        "CPU": 0
    }  # the head runs no work
    workers = {k: v for k, v in fake["available_node_types"].items() if k != "ray.head.default"}
    assert set(workers) == set(types) - {"head"} == {"cpu", "gpu"}
    for name, t in workers.items():
        assert (t["min_workers"], t["max_workers"]) == (
            types[name].get("min_workers", 0),
            types[name]["max_workers"],
        )
        assert t["min_workers"] == 0  # every worker type scales from zero
    assert workers["gpu"]["resources"]["GPU"] == 1 and "GPU" not in workers["cpu"]["resources"]
    assert (
        fake["max_workers"] == real["max_workers"]
        and fake["upscaling_speed"] == real["upscaling_speed"]
    )
    # every instance type cluster.yaml names is known here (a new one must be added to INSTANCES)
    assert {t["node_config"]["InstanceType"] for t in types.values()} <= set(INSTANCES)


def active_nodes(c: LocalCluster, wait_s: float = 60.0) -> dict[str, int]:
    """{node type: count} of the active nodes, from `ray status` (the autoscaler's view). Just
    after the cluster starts, the autoscaler may not have reported yet (no "Active:" section):
    asked again for up to ``wait_s``."""
    deadline = time.time() + wait_s
    while True:
        r = subprocess.run(
            [RAY, "status", "--address", c.address],
            capture_output=True,
            text=True,
            env=c.env,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        if "Active:" in r.stdout:
            break
        assert time.time() < deadline, f"the autoscaler reported no nodes: {r.stdout[-2000:]}"
        time.sleep(1)
    section = r.stdout.split("Active:", 1)[1].split("Pending:", 1)[0]
    return {
        m.group(2): int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+(\S+)\s*$", section, re.M)
    }


@pytest.fixture()
def autoscaling_cluster(s3_server, tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("ray"))
    config = c.temp / "autoscaling.json"
    config.write_text(json.dumps(fake_provider_config(cluster_yaml(), c.address, IDLE_TIMEOUT_S)))
    try:
        c.start_head(
            cpus=0,
            extra=[f"--autoscaling-config={config}"],
            env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
        )
        yield c
    finally:
        c.stop()


def test_a_denoise_job_scales_the_cluster_up_from_zero_and_it_scales_back_down(
    autoscaling_cluster, s3_server, tmp_path
):
    c = autoscaling_cluster
    assert active_nodes(c) == {"ray.head.default": 1}  # zero workers
    head = c.node_ids()["head"]
    fs, base = s3_server.fs(), s3_server.prefix()
    for i in range(40):
        fs.pipe(f"{base[5:]}/noisy/{i:02d}.png", png_bytes(rgb(64, 64, seed=i)))
    proc = c.start_cli(
        tmp_path / "log.txt",
        "denoise",
        "--input",
        f"{base}/noisy",
        "--output",
        f"{base}/clean",
        "--s3-endpoint",
        s3_server.endpoint,
    )
    seen: dict[str, int] = {}
    try:
        deadline = time.time() + 300
        # the autoscaler's view while the job runs; each `ray status` is a Python start that
        # competes with the job for this machine's two cores: every 2 s is enough (added nodes
        # stay until IDLE_TIMEOUT_S after the job)
        while proc.poll() is None:
            for kind, n in active_nodes(c).items():
                seen[kind] = max(seen.get(kind, 0), n)
            assert time.time() < deadline, "the job did not finish"
            time.sleep(2)
        for kind, n in active_nodes(c).items():  # once more: the nodes outlive the job a while
            seen[kind] = max(seen.get(kind, 0), n)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "log.txt").read_text()
    assert proc.returncode == 0 and "waiting for the autoscaler" in out, out[-3000:]
    assert seen.get("cpu", 0) >= 1 and "gpu" not in seen, seen  # a CPU job adds CPU workers only
    rows = pq.read_table(
        io.BytesIO(fs.cat_file(f"{base[5:]}/clean/_report/report.parquet"))
    ).to_pylist()
    assert len(rows) == 40 and {row["status"] for row in rows} == {"ok"}
    assert head not in {
        row["node"] for row in rows
    }  # every image ran on a node the autoscaler added
    deadline = time.time() + 90
    while active_nodes(c) != {"ray.head.default": 1}:  # and the idle workers are removed
        assert time.time() < deadline, f"idle workers were not removed: {active_nodes(c)}"
        time.sleep(1)
