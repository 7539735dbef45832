"""SIGTERM (what timeout, schedulers and Kubernetes send) handled like Ctrl-C: a KeyboardInterrupt, so a job stops the same way and writes its report."""

from __future__ import annotations

import contextlib

_TERMINATED: list[int] = []  # the signal numbers of SIGTERMs received during this command


def _on_sigterm(signum, frame):
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def _terminate_as_interrupt() -> list[int]:
    """SIGTERM (what `timeout`, schedulers and Kubernetes send) stops a command the way Ctrl-C
    does: the job winds down, writes its report of what was done and says so. Installed again
    once Ray has started (``ray.init`` puts in its own handler, which exits at once with rc 15).
    Returns the list that holds the signal number once one arrived."""
    import signal

    with contextlib.suppress(ValueError):  # not the main thread (embedded use): leave the default
        signal.signal(signal.SIGTERM, _on_sigterm)
    return _TERMINATED
