"""One run per output (raydenoise.ledger.runlock): the lock object, its takeover, on a folder and on S3."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from raydenoise.ledger import runlock
from raydenoise.ledger.runlock import LOCK, LockHeld, RunLock
from raydenoise.storage.store import open_store


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture(params=["local", "s3"])
def rep(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "rep"))
    server = request.getfixturevalue("s3_server")
    return open_store(server.prefix() + "/rep", server.endpoint)


def test_a_second_run_is_refused_naming_the_first_and_the_lock_goes_with_the_run(rep):
    first = RunLock(rep, "20261130T000000Z-aaaaaa", "OUT")
    with first:
        info = json.loads(rep.read_bytes(LOCK))
        assert info["run"] == "20261130T000000Z-aaaaaa" and info["host"] == socket.gethostname()
        with pytest.raises(
            LockHeld,
            match=r"OUT is being written by another raydenoise run \(run "
            r"20261130T000000Z-aaaaaa, pid \d+ on .*wait for it to finish",
        ):
            RunLock(rep, "20261130T000001Z-bbbbbb", "OUT").acquire()
    assert not rep.exists(LOCK)
    with RunLock(rep, "20261130T000002Z-cccccc", "OUT"):  # free again
        assert json.loads(rep.read_bytes(LOCK))["run"] == "20261130T000002Z-cccccc"


def test_a_dead_runs_lock_is_taken_over(rep, monkeypatch):
    # same host, its process gone (a killed driver): taken over at once
    rep.write_bytes(
        LOCK,
        json.dumps(
            {
                "run": "old",
                "host": socket.gethostname(),
                "pid": _dead_pid(),
                "heartbeat": time.time(),
            }
        ).encode(),
    )
    with RunLock(rep, "new", "OUT"):
        assert json.loads(rep.read_bytes(LOCK))["run"] == "new"
    # another host: judged by its heartbeat
    other = {"run": "far", "host": "another-host", "pid": 1}
    rep.write_bytes(LOCK, json.dumps({**other, "heartbeat": time.time()}).encode())
    with pytest.raises(LockHeld, match="on another-host"):
        RunLock(rep, "new", "OUT").acquire()
    rep.write_bytes(
        LOCK, json.dumps({**other, "heartbeat": time.time() - runlock.STALE_SECONDS - 5}).encode()
    )
    with RunLock(rep, "new", "OUT"):
        pass
    assert not rep.exists(LOCK)


def test_the_heartbeat_is_renewed_while_held(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_SECONDS", 0.05)
    rep = open_store(str(tmp_path / "rep"))
    with RunLock(rep, "r", "OUT"):
        first = json.loads(rep.read_bytes(LOCK))["heartbeat"]
        time.sleep(0.3)
        assert json.loads(rep.read_bytes(LOCK))["heartbeat"] > first
    assert not rep.exists(LOCK)


def test_a_planted_link_as_the_lock_is_never_written_through(tmp_path):
    (tmp_path / "rep").mkdir()
    (tmp_path / "victim").write_text("keep")
    (tmp_path / "rep" / LOCK).symlink_to(tmp_path / "victim")
    with pytest.raises(Exception, match="symbolic link"):
        RunLock(open_store(str(tmp_path / "rep")), "r", "OUT").acquire()
    assert (tmp_path / "victim").read_text() == "keep"
