"""Joining or starting the Ray cluster, once per process, after a command's arguments are checked."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .errors import RaydenoiseError

StartRay = Callable[[], None]


def ensure_ray(address: str | None = None, verbose: bool = False) -> float:
    """Join ``address`` (default: $RAY_ADDRESS, a cluster started with ``ray start`` on this
    machine, or a new local one) unless Ray is already initialized; returns the seconds it took.
    Quiet by default: Ray's INFO lines and Ray Data's progress bars are off (raydenoise shows its
    own progress); ``verbose`` keeps both.

    Joining a cluster started with ``ray start --head``: Ray (>= 2.59) turns token
    authentication on there when the user has a token (``~/.ray/auth_token``), and a client
    joins it only in token mode, so token mode is chosen here whenever a token is at hand and
    ``RAY_AUTH_MODE`` is not set (a token-mode client joins a cluster without authentication
    too). Ray reads the mode when it is imported: in a program that imported Ray before, set
    ``RAY_AUTH_MODE=token`` yourself."""
    if not os.environ.get("RAY_ADDRESS", "x").strip():
        os.environ.pop("RAY_ADDRESS")  # an empty value means "not set", not an address
    address = address or os.environ.get("RAY_ADDRESS")
    if (
        address
        and not os.environ.get("RAY_AUTH_MODE")
        and "ray" not in sys.modules
        and _token_available()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    # A local cluster of our own needs no dashboard: fewer processes to start, and none (the
    # dashboard and its agents) left running after the command ends.
    local: dict[str, Any] = {} if address else {"include_dashboard": False}
    problem = _unreachable(address)
    if problem:
        raise RayJoinError(
            f"cannot join the Ray cluster at {address}: {problem}. Is it running (`ray status`)? "
            "Leave --address and RAY_ADDRESS unset to start a local one"
        )
    try:
        ray.init(
            address=address,
            log_to_driver=True,
            configure_logging=True,
            logging_level=logging.INFO if verbose else logging.WARNING,
            **local,
        )
    except ConnectionError as exc:
        raise RayJoinError(
            f"cannot join the Ray cluster at {address or 'auto'}: {str(exc).splitlines()[0]}. Is it "
            "running (`ray status`), and is its token (~/.ray/auth_token or RAY_AUTH_TOKEN) the one "
            "here? Leave --address and RAY_ADDRESS unset to start a local one"
        ) from None
    return time.perf_counter() - t0


class RayJoinError(RaydenoiseError):
    """The Ray cluster asked for cannot be joined; the message names the address and why."""


def _unreachable(address: str | None, timeout_s: float = 5.0) -> str:
    """Why nothing can be joined at a ``host:port`` address ("" when its port answers, or for
    other forms of address, which Ray resolves itself): Ray would retry a dead one for minutes."""
    import socket

    if not address or "://" in address or address == "auto" or ":" not in address:
        return ""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return ""
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return ""
    except OSError as exc:
        return f"nothing answers there ({exc.strerror or exc})"


def _token_available() -> bool:
    """Whether this user has a Ray authentication token (as Ray itself looks for one)."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return os.path.isfile(os.path.join(os.path.expanduser("~"), ".ray", "auth_token"))


# ----------------------------------------------------------------------------- multi-node

SHARED_ENV = (
    "RAYDENOISE_ASSUME_SHARED"  # "1": trust that local paths are shared (autoscaling + NFS)
)
_MARKER = ".raydenoise-shared-check-"


def _fingerprint(path: str) -> list | None:
    """What a node sees at ``path``: None if nothing; else its type and up to 32 (name, size)
    entries (a folder) or its size (a file). Equal on two nodes when they see the same files."""
    try:
        if os.path.isfile(path):
            return ["file", os.path.getsize(path)]
        with os.scandir(path) as it:
            entries = sorted(
                (e.name, e.stat().st_size if e.is_file() else -1)
                for e in it
                if not e.name.startswith(_MARKER)
            )
        return ["dir", [list(e) for e in entries[:32]]]
    except OSError:
        return None


def _probe(checks: list[tuple[str, str, list | None, str | None]]) -> list[str]:
    """Run on one node: the flags whose local path this node does not see as the driver does."""
    bad = []
    for flag, path, expected, marker in checks:
        if marker is not None:
            try:
                with open(os.path.join(path, _MARKER + marker)) as f:
                    ok = f.read() == marker
            except OSError:
                ok = False
        else:
            ok = _fingerprint(path) == expected
        if not ok:
            bad.append(flag)
    return bad


def work_nodes() -> tuple[str, list[dict]]:
    """(the driver's node id, the alive nodes that advertise CPUs or GPUs: where work can run)."""
    import ray

    nodes = [
        n
        for n in ray.nodes()
        if n.get("Alive") and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)
    ]
    return ray.get_runtime_context().get_node_id(), nodes


def check_shared_paths(reads: dict[str, str | None], writes: dict[str, str | None]) -> str | None:
    """On a multi-node cluster, check that every node that can run work sees the local paths
    (``{flag: path}``; s3:// and None are skipped) as the driver does: a folder to read with the
    same entries, a folder to write by a marker file the driver writes. Returns None when they
    do (or there is one node), else the message that says which path and node do not.

    Workers on other machines write to their own disks when given a path that is local to the
    driver: results would be lost silently. The check costs one small task per node, only on a
    multi-node cluster and only for local paths."""
    reads = {f: p for f, p in reads.items() if p and not p.startswith("s3://")}
    writes = {f: p for f, p in writes.items() if p and not p.startswith("s3://")}
    if not (reads or writes) or os.environ.get(SHARED_ENV, "").strip() == "1":
        return None
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    driver, nodes = work_nodes()
    others = [n for n in nodes if n["NodeID"] != driver]
    flags = ", ".join(f"{f} {p}" for f, p in {**reads, **writes}.items())
    advice = (
        "a multi-node cluster needs storage that every node reaches, such as s3://BUCKET/PREFIX (or a shared "
        f"filesystem mounted at the same path on every node; set {SHARED_ENV}=1 to skip this check)"
    )
    if not others:
        if nodes:
            return None  # one machine: the driver's own
        return (
            f"{flags}: local, but the cluster has no node that runs work yet (its head runs none; an "
            f"autoscaler would add worker machines, which do not see this machine's files): {advice}"
        )
    token = os.urandom(8).hex()
    checks: list[tuple[str, str, Any, str | None]] = []
    written: list[str] = []
    for flag, path in reads.items():
        assert path is not None  # the unset ones were left out above
        checks.append((flag, path, _fingerprint(path), None))
    for flag, path in writes.items():
        assert path is not None
        os.makedirs(path, exist_ok=True)
        marker = os.path.join(path, _MARKER + token)
        with open(marker, "w") as f:
            f.write(token)
        written.append(marker)
        checks.append((flag, path, None, token))
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        refs = {
            n["NodeID"]: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(checks)
            for n in others
        }
        blind = {}
        for node, ref in refs.items():
            try:
                bad = ray.get(ref, timeout=120)
            except (
                Exception
            ):  # a node that died meanwhile runs no work; one that hangs is not ours to judge
                continue
            if bad:
                blind[node] = bad
    finally:
        for marker in written:
            try:
                os.remove(marker)
            except OSError:
                pass
    if not blind:
        return None
    node, bad = next(iter(blind.items()))
    ip = next((n["NodeManagerAddress"] for n in others if n["NodeID"] == node), "?")
    paths = ", ".join(f"{f} {reads.get(f) or writes.get(f)}" for f in bad)
    return (
        f"{paths}: local to this machine, and {len(blind)} of the cluster's {len(nodes)} nodes that run work "
        f"do not see it (node {node[:12]} at {ip}, for one): {advice}"
    )
