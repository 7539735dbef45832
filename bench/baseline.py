"""A git revision checked out beside the working tree, for benchmarks that compare a change with
what users had (bench/startup.py, bench/denoise.py --baseline)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checkout(rev: str, where: Path) -> Iterator[Path]:
    """Revision ``rev`` in a detached git worktree at ``where``, removed when the block ends
    however it ends."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
            capture_output=True,
        )
