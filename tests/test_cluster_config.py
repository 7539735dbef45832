"""cluster.yaml is a valid Ray cluster-launcher config that matches what the jobs need."""

import copy
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_schema():
    config = prepare_config(copy.deepcopy(load()))  # what `ray up` does before launching
    validate_config(config)
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}  # drivers only on the head
    assert {"cpu", "gpu"} <= set(nodes) and nodes["gpu"]["node_config"]["InstanceType"].startswith(("g", "p"))


def test_cluster_yaml_installs_this_project_and_exposes_no_dashboard():
    config = load()
    assert config["file_mounts"]["~/raydenoise"] == "."
    assert any("-e ~/raydenoise" in c for c in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard` (ssh), never public
    text = (ROOT / "cluster.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text
    for job in ("synth", "ingest", "train", "denoise", "evaluate"):
        assert (ROOT / "jobs" / f"{job}.py").exists()


def test_every_node_starts_with_token_authentication_and_no_token_is_in_the_repo():
    config = load()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "export RAY_AUTH_MODE=token;" in start, start
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the launcher's own file
    text = (ROOT / "cluster.yaml").read_text()
    assert "RAY_AUTH_TOKEN=" not in text


def test_a_job_submitted_without_the_token_is_refused(tmp_path):
    """A head started as cluster.yaml starts it (RAY_AUTH_MODE=token), on 127.0.0.1: the Jobs API
    refuses a client with no token or a wrong one, and answers one with the token."""
    import contextlib
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    from conftest import _free_ports

    ray = str(Path(sys.executable).parent / "ray")
    gcs, dash = _free_ports(2)
    token = "raydenoise-test-token-" + os.urandom(8).hex()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path)}
    with_token = base | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    short = tempfile.mkdtemp(prefix="rd-auth-")  # Ray's socket paths must stay under 108 bytes
    # --block keeps `ray start` in the foreground, in a session of its own: the test ends exactly
    # this head's processes (never `ray stop`, which stops every Ray on the machine).
    head = subprocess.Popen([ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                             "--num-cpus=0", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                             "--include-dashboard=true", f"--temp-dir={short}", "--disable-usage-stats"],
                            env=with_token, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def jobs(env):
            return subprocess.run([ray, "job", "list", "--address", f"http://127.0.0.1:{dash}"], env=env,
                                  capture_output=True, text=True, timeout=60)

        deadline = time.time() + 90
        while jobs(with_token).returncode != 0:  # the dashboard is up
            assert time.time() < deadline and head.poll() is None, "the token-protected head did not start"
            time.sleep(1)
        for env in (base, base | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "wrong-" + token}):
            r = jobs(env)
            assert r.returncode != 0 and "AuthenticationError" in r.stdout + r.stderr, r.stdout + r.stderr
        r = jobs(with_token)
        assert r.returncode == 0 and token not in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # anything of that session still there
        shutil.rmtree(short, ignore_errors=True)
