"""One run per output: a lock object in the report folder. No Ray.

A denoise run creates ``REPORT/.lock`` (JSON: run id, host, pid, start, heartbeat) before it
plans anything, with a create that fails when the object exists (local: ``O_CREAT|O_EXCL``; S3:
a conditional PUT, ``If-None-Match: *``, which AWS S3 and SeaweedFS honour), refreshes the
heartbeat while it runs and removes the lock at the end. A second run into the same output
stops with a message naming the first. A lock left by a run that died is taken over: on the
same host when its process no longer exists, elsewhere when its heartbeat is older than
STALE_SECONDS.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

from ..storage.errors import StorageError, object_error
from ..storage.store import Store

LOCK = ".lock"
STALE_SECONDS = float(os.environ.get("RAYDENOISE_LOCK_STALE_SECONDS", "300"))
HEARTBEAT_SECONDS = 30.0


class LockHeld(Exception):
    """Another live run holds the output; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists (another user's process) or not a pid we can judge: assume alive
    return True


class RunLock:
    """``with RunLock(rep, run_id):`` holds the output for one run (see the module docstring)."""

    def __init__(self, rep: Store, run_id: str, what: str):
        self.rep, self.run_id, self.what = rep, run_id, what
        self.held = False
        self._stop = threading.Event()

    def _info(self) -> dict[str, Any]:
        now = time.time()
        return {
            "run": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": getattr(self, "_started", now),
            "heartbeat": now,
        }

    def _create(self, data: bytes) -> bool:
        """Create the lock object only if none exists; False when one does."""
        if self.rep.is_s3:
            bucket, _, key = self.rep.key_path(LOCK).partition("/")
            try:
                self.rep.fs.call_s3(
                    "put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*"
                )
            except Exception as exc:
                if "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower():
                    return False
                raise
            return True
        self.rep.check_no_link_out(LOCK)
        os.makedirs(self.rep.path, exist_ok=True)
        try:
            fd = os.open(
                self.rep.key_path(LOCK), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644
            )
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def _read(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.rep.read_bytes(LOCK))
            return info if isinstance(info, dict) else {}
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            return {}  # half-written or foreign: judged by its age below

    def _stale(self, info: dict[str, Any]) -> bool:
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            return not _alive(info["pid"])
        beat = info.get("heartbeat")
        if not isinstance(beat, (int, float)):
            with contextlib.suppress(Exception):
                beat = self.rep.fs.modified(self.rep.key_path(LOCK)).timestamp()
        return not isinstance(beat, (int, float)) or time.time() - beat > STALE_SECONDS

    def acquire(self) -> None:
        """Take the lock; LockHeld naming the other run when a live one holds it, StorageError
        when the report folder cannot be written."""
        self._started = time.time()
        try:
            for _ in range(3):
                if self._create(json.dumps(self._info()).encode()):
                    self.held = True
                    self._thread = threading.Thread(
                        target=self._heartbeat, name="raydenoise-lock", daemon=True
                    )
                    self._thread.start()
                    return
                info = self._read()
                if info is None:
                    continue  # released in between: try again
                if not self._stale(info):
                    raise LockHeld(self._held_message(info))
                with contextlib.suppress(Exception):
                    self.rep.remove([LOCK])  # a dead run's lock: take it over
        except (LockHeld, StorageError):
            raise
        except Exception as exc:
            raise StorageError(
                f"{self.rep.uri(LOCK)}: cannot create the run lock ({object_error(exc)})"
            ) from exc
        raise LockHeld(
            f"{self.what}: could not take the run lock {self.rep.uri(LOCK)} (other runs keep taking it)"
        )

    def _held_message(self, info: dict[str, Any]) -> str:
        beat = info.get("heartbeat")
        seen = (
            f", last seen {time.time() - beat:.0f} s ago" if isinstance(beat, (int, float)) else ""
        )
        started = info.get("started")
        when = (
            time.strftime(" started %Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
            if isinstance(started, (int, float))
            else ""
        )
        return (
            f"{self.what} is being written by another raydenoise run (run {info.get('run', '?')}, pid "
            f"{info.get('pid', '?')} on {info.get('host', '?')}{when}{seen}): wait for it to finish. If that run "
            f"is dead on another machine, its lock ({self.rep.uri(LOCK)}) is taken over once "
            f"{STALE_SECONDS:.0f} s pass without a heartbeat, or remove that file"
        )

    def _heartbeat(self) -> None:
        """Renew the heartbeat every HEARTBEAT_SECONDS while held (a daemon thread; failures are
        ignored: the run's own writes report a failing storage)."""
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self.rep.write_bytes(LOCK, json.dumps(self._info()).encode())

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        self._thread.join(timeout=10)  # no heartbeat write after the lock is removed
        with contextlib.suppress(Exception):
            info = self._read()
            if info is None or info.get("run") == self.run_id:
                self.rep.remove([LOCK])

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
