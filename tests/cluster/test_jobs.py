"""The jobs/ entrypoints under `ray job submit`, on a real `ray start --head` cluster (job server
on 127.0.0.1), with the project shipped as the job's working directory, as on a real cluster."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raydenoise.models.architectures import build_model
from raydenoise.models.artifacts import save_model_dir

from conftest import _free_ports, png_bytes, rgb, write
from raynodes import kill_group

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
# Ray's token authentication, with a token of this test's own (nothing read from or written to ~/.ray).
ENV = {
    **os.environ,
    "RAY_ADDRESS": "",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A 2-CPU head node with the job server (dashboard) on free loopback ports.

    Started with ``--block`` in a session of its own and stopped by killing that session:
    ``ray stop`` would kill every Ray process on the machine, a user's own clusters included."""
    port, dash, agent, agent_grpc, metrics, renv = _free_ports(6)
    temp = tmp_path_factory.mktemp("ray")
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={renv}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
    ]
    log = open(temp / "ray-start.log", "wb")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
    )
    try:
        _wait_for_job_server(f"http://127.0.0.1:{dash}", proc, temp / "ray-start.log")
        yield f"http://127.0.0.1:{dash}"
    finally:
        kill_group(proc)
        log.close()


def _wait_for_job_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    import time
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered (401 without the token): the server is up
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"the job server did not answer within {timeout} s: {log.read_text()[-2000:]}"
    )


def submit(address: str, *entrypoint: str) -> subprocess.CompletedProcess:
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(ROOT),
        "--",
        sys.executable,
        *entrypoint,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, check=False, env=ENV)


def test_denoise_job_runs_under_ray_job_submit(head, tmp_path):
    for i, (h, w) in enumerate([(24, 32), (32, 40), (24, 32)]):
        write(tmp_path / f"in/{i}.png", png_bytes(rgb(h, w, seed=i)))
    write(tmp_path / "in/bad.png", b"not an image")
    torch.manual_seed(0)
    save_model_dir(
        tmp_path / "model", build_model("seed-ae").eval(), {"model": "seed-ae", "width": None}
    )
    r = submit(
        head,
        "jobs/denoise.py",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(tmp_path / "model"),
    )
    # The job ran (not the local fallback): its output names the job and it failed only for bad.png.
    assert "Job 'raysubmit_" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert "1 of 4 images failed" in r.stdout + r.stderr and "Traceback" not in r.stdout
    assert r.returncode != 0  # `ray job submit` reports the job's non-zero exit
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["0.png", "1.png", "2.png"]
    summary = json.loads((tmp_path / "out/_report/summary.json").read_text())
    assert summary["ok"] == 3 and summary["failures"] == 1
