"""cluster.yaml is a valid Ray cluster-launcher config that matches what the jobs need."""

import copy
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


def load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_schema():
    config = prepare_config(copy.deepcopy(load()))  # what `ray up` does before launching
    validate_config(config)
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}  # drivers only on the head
    assert {"cpu", "gpu"} <= set(nodes) and nodes["gpu"]["node_config"]["InstanceType"].startswith(
        ("g", "p")
    )


def test_cluster_yaml_installs_this_project_and_exposes_no_dashboard():
    config = load()
    assert config["file_mounts"]["~/raydenoise"] == "."
    assert any("-e ~/raydenoise" in c for c in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    assert (
        "--dashboard-host=127.0.0.1" in head
    )  # reached through `ray dashboard` (ssh), never public
    text = (ROOT / "cluster.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text
    for job in ("synth", "ingest", "train", "denoise", "evaluate"):
        assert (ROOT / "jobs" / f"{job}.py").exists()


def test_every_node_starts_with_token_authentication_and_no_token_is_in_the_repo():
    config = load()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "export RAY_AUTH_MODE=token;" in start, start
    assert (
        config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    )  # the launcher's own file
    text = (ROOT / "cluster.yaml").read_text()
    assert "RAY_AUTH_TOKEN=" not in text
