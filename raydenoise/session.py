"""Joining or starting the Ray cluster, once per process, after a command's arguments are checked."""

from __future__ import annotations

import os
import time
from typing import Callable

StartRay = Callable[[], None]


def ensure_ray(address: str | None = None, verbose: bool = False) -> float:
    """Join ``address`` (default: $RAY_ADDRESS, a cluster started with ``ray start`` on this
    machine, or a new local one) unless Ray is already initialized; returns the seconds it took.
    Quiet by default: Ray's INFO lines and Ray Data's progress bars are off (raydenoise shows its
    own progress); ``verbose`` keeps both."""
    import ray

    if ray.is_initialized():
        return 0.0
    t0 = time.perf_counter()
    if not os.environ.get("RAY_ADDRESS", "x").strip():
        os.environ.pop("RAY_ADDRESS")  # an empty value means "not set", not an address
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    ray.init(address=address or os.environ.get("RAY_ADDRESS"), log_to_driver=True, configure_logging=True,
             logging_level="INFO" if verbose else "WARNING")
    return time.perf_counter() - t0
