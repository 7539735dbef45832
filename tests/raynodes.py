"""Ray clusters made of real node processes on this machine, for the multi-node tests.

Every node is ``ray start --block`` in a session of its own, with its own free loopback ports
and the cluster's private temp dir, so that

- a node dies the way a machine does: SIGKILL to every process of its session (raylet, object
  store, agents, workers);
- stopping the cluster signals only its own sessions (``ray stop`` would kill every Ray process on
  the machine, a user's own clusters included);
- ``ray.init()`` elsewhere never finds this cluster (its address file is in the private temp dir).

A node can be started in a mount namespace of its own in which some folders are hidden (an empty
tmpfs over them): a machine that does not see the driver's local paths.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import _free_ports

RAY = str(Path(sys.executable).parent / "ray")
PYTHON = sys.executable


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (Ray puts each worker in a process group of its own, but
    they stay in the session of the `ray start` that started their node)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[
                1
            ].split()  # after "pid (comm)": state ppid pgrp session ...
            if int(fields[3]) == sid:
                pids.append(int(entry))
    return pids


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process of a Ray node, as when its machine dies: `ray start --block`, started
    in a session of its own, its raylet, object store, agents and workers. A test cluster keeps
    nothing worth a graceful drain, which would take Ray up to 30 s a node."""
    for _ in range(3):  # a process may fork while we kill
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait(timeout=30)


def hiding_prefix(paths: list[Path]) -> list[str]:
    """A command prefix that runs the command in a new mount namespace where ``paths`` are empty."""
    mounts = " && ".join(f"mount -t tmpfs none '{p}'" for p in paths)
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    return [*unshare, "sh", "-c", f'{mounts} && exec "$@"', "sh"]


class LocalCluster:
    """A head and worker nodes as separate ``ray start`` processes (see the module docstring)."""

    def __init__(self, temp: Path, env: dict | None = None):
        self.temp = temp
        # Ray's token authentication (the default of `ray start --head`), with a token of this
        # cluster's own: every node and driver gets it from the environment, nothing from ~/.ray.
        # The GCS declares a node dead after 3 missed health checks 0.5 s apart (Ray's default, 5 x 3 s,
        # is for real networks; a killed node here is known dead within ~2 s instead of ~15).
        self.env = {
            **os.environ,
            "RAY_ADDRESS": "",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            **(env or {}),
        }
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _start(
        self, name: str, args: list[str], prefix: list[str] | None = None, wait: bool = True
    ) -> None:
        # never the GCS port chosen above: it is not bound until the head starts
        agent, agent_grpc, metrics, renv, nm, om = _free_ports(6, avoid=frozenset({self.port}))
        cmd = [
            *(prefix or []),
            RAY,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={renv}",
            f"--node-manager-port={nm}",
            f"--object-manager-port={om}",
            f"--temp-dir={self.temp}",
            "--disable-usage-stats",
            *args,
        ]
        log_path = self.temp / f"node-{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.procs[name] = proc
        if wait:
            self._wait_started(name, log_path)

    def _wait_started(self, name: str, log_path: Path, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = log_path.read_text(errors="replace")
            if "Ray runtime started" in text:
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"Ray node {name} exited: {text[-3000:]}")
            time.sleep(0.3)
        raise RuntimeError(
            f"Ray node {name} did not start in {timeout:.0f} s: {log_path.read_text()[-3000:]}"
        )

    def start_head(
        self, cpus: float = 0, extra: list[str] | None = None, env: dict | None = None
    ) -> None:
        if env:
            self.env.update(env)
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                f"--num-cpus={cpus:g}",
                "--include-dashboard=false",
                f"--resources={json.dumps({'node_head': 1})}",
                *(extra or []),
            ],
        )

    def add_node(self, name: str, cpus: float, hide: list[Path] | None = None) -> None:
        """A worker node with ``cpus`` CPUs and a resource ``node_<name>`` (to find it by name)."""
        self._start(
            name,
            [
                f"--address={self.address}",
                f"--num-cpus={cpus:g}",
                f"--resources={json.dumps({f'node_{name}': 1})}",
            ],
            prefix=hiding_prefix(hide) if hide else None,
        )

    def nodes(self) -> list[dict]:
        """The alive nodes as ``{"id", "name", "resources", "labels"}`` (``name``: ``head``, the
        name given to add_node, or the autoscaler's node type), read by a short-lived driver."""
        code = (
            f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps([(n['NodeID'], n['Resources'], n.get('Labels', {})) for n in ray.nodes() "
            "if n['Alive']]))"
        )
        out = subprocess.run(
            [PYTHON, "-c", code], capture_output=True, text=True, timeout=120, env=self.env
        )
        if out.returncode:
            raise RuntimeError(
                f"cannot list the nodes of {self.address}: {(out.stdout + out.stderr)[-2000:]}"
            )
        nodes = []
        for node_id, resources, labels in json.loads(out.stdout.strip().splitlines()[-1]):
            names = [r.removeprefix("node_") for r in resources if r.startswith("node_")]
            name = (
                names[0]
                if names
                else labels.get("ray.io/node-type") or labels.get("ray.io/node-group") or "?"
            )
            nodes.append({"id": node_id, "name": name, "resources": resources, "labels": labels})
        return nodes

    def node_ids(self) -> dict[str, str]:
        """{node name: Ray node id} of the alive nodes started by this class."""
        return {n["name"]: n["id"] for n in self.nodes()}

    def start_cli(self, log: Path, *args: str) -> subprocess.Popen:
        """``raydenoise ARGS --address`` this cluster, in the background, its output to ``log``."""
        exe = Path(sys.executable).parent / "raydenoise"
        with open(log, "w") as f:
            return subprocess.Popen(
                [str(exe), *args, "--address", self.address],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    def kill(self, name: str) -> None:
        """SIGKILL every process of one node, as when its machine dies."""
        kill_group(self.procs.pop(name))

    def stop(self) -> None:
        """Kill every node, workers first (see kill_group)."""
        for name in [n for n in self.procs if n != "head"] + (
            ["head"] if "head" in self.procs else []
        ):
            self.kill(name)
