"""Joining Ray clusters (raydenoise.session) and who may use them: a `ray start --head` cluster
with Ray's token authentication (as cluster.yaml starts every node), and one that cannot be
joined."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import _free_ports, png_bytes, rgb, write
from raynodes import kill_group

# Starts a `ray start --head` cluster and runs the CLI in subprocesses: not the quick loop.
pytestmark = pytest.mark.slow


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status, 401 included)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    """The raydenoise command with exactly ``env`` (no RAY_ADDRESS or RAY_AUTH_MODE of the tests)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "raydenoise"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def test_a_token_cluster_refuses_jobs_without_the_token_and_raydenoise_joins_it_with_no_extra_environment(
    tmp_path,
):
    """A head as cluster.yaml and Ray (>= 2.59) start it for a user who has a token in
    ~/.ray/auth_token: token authentication on. The Jobs API refuses a client with no token or
    a wrong one (what makes the AWS cluster safe); `raydenoise denoise --address` joins it
    without RAY_AUTH_MODE set. An address where no cluster runs is one line naming it."""
    ray = str(Path(sys.executable).parent / "ray")
    gcs, dash = _free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "HOME": str(tmp_path / "home")
    }
    short = tempfile.mkdtemp(prefix="rd-join-")  # Ray's socket paths must stay short
    subprocess.run(
        [ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60
    )
    token = (tmp_path / "home" / ".ray" / "auth_token").read_text().strip()
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--include-dashboard=true",
            f"--temp-dir={short}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=open(tmp_path / "head.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while (
            b"block forever" not in (tmp_path / "head.log").read_bytes()
        ):  # `ray start` has finished
            assert time.time() < deadline and head.poll() is None, "the head did not start"
            time.sleep(0.5)
        assert b"Token authentication is enabled" in (tmp_path / "head.log").read_bytes()

        def jobs(extra: dict) -> subprocess.CompletedProcess:
            return subprocess.run(
                [ray, "job", "list", "--address", f"http://127.0.0.1:{dash}"],
                env=env | extra,
                capture_output=True,
                text=True,
                timeout=60,
            )

        while not _answers(f"http://127.0.0.1:{dash}/api/version"):  # the dashboard is up
            assert time.time() < deadline, "the dashboard did not start"
            time.sleep(0.5)
        for extra in (
            {"HOME": str(tmp_path)},
            {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "wrong-" + token},
        ):
            r = jobs(extra)
            assert r.returncode != 0 and "AuthenticationError" in r.stdout + r.stderr, (
                r.stdout + r.stderr
            )
        write(tmp_path / "in" / "a.png", png_bytes(rgb(24, 32)))
        r = _cli(
            "denoise",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--model",
            "builtin:seed-ae",
            "--address",
            f"127.0.0.1:{gcs}",
            env=env,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "out" / "a.png").exists() and token not in r.stdout + r.stderr
    finally:
        kill_group(head)  # a graceful `ray stop` of the head takes Ray 30 s; nothing here needs it
        shutil.rmtree(short, ignore_errors=True)
    (dead,) = _free_ports(1)
    r = _cli(
        "denoise",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out2"),
        "--model",
        "builtin:seed-ae",
        "--address",
        f"127.0.0.1:{dead}",
        env=env,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert (
        f"cannot join the Ray cluster at 127.0.0.1:{dead}" in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )
