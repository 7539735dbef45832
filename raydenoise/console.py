"""What the terminal shows: raydenoise's own lines, one progress display per stage, and the
logs of Ray (and of everything else the process prints) in a file.

Pure: imports no Ray. The CLI calls :func:`capture` once; library code reports through a
``log`` callable and a :class:`Progress`, which work the same without it (a notebook gets
plain lines).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

LOG_DIR_ENV = "RAYDENOISE_LOG_DIR"
PLAIN_INTERVAL_S = 5.0  # without a terminal, one progress line at most this often
STEADY_MIN_S = 1.0  # a rate measured after the first result needs at least this long


def plural(n: int, word: str, many: str | None = None) -> str:
    """'0 images', '1 image', '2 images' ("1 model actor", "3 shards")."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def rate(n: int, seconds: float, unit: str = "image") -> str:
    """A rate that reads right for any count: '3.2 images/s', or '4.1 s/image' when slower than
    one per second (a 1-image run is not '0.0 images/s')."""
    if n <= 0 or seconds <= 0:
        return f"- {unit}s/s"
    per_s = n / seconds
    return f"{per_s:.1f} {unit}s/s" if per_s >= 1 else f"{seconds / n:.1f} s/{unit}"


def duration(seconds: float) -> str:
    """'45s', '3m05s', '2h01m'."""
    s = round(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class Console:
    """Where raydenoise's own lines go (the terminal the command was started from)."""

    out: TextIO
    err: TextIO
    log_path: str | None = None  # Ray's (and everyone else's) output, when captured
    verbose: bool = True

    def line(self, msg: str) -> None:
        _write(self.out, msg)

    def error(self, msg: str) -> None:
        _write(self.err, msg)


def _write(stream: TextIO, msg: str) -> None:
    bar = _ACTIVE[-1] if _ACTIVE else None
    if bar is not None and bar.stream is stream and bar.bar is not None:
        bar.bar.write(msg, file=stream)  # above the live bar, which redraws below
    else:
        print(msg, file=stream, flush=True)


_CONSOLE: Console | None = None
_ACTIVE: list[Progress] = []


def console() -> Console:
    """The process's console: the captured terminal after :func:`capture`, else sys.stdout/err
    as they are now (so pytest and notebooks see the lines)."""
    return _CONSOLE or Console(sys.stdout, sys.stderr)


class LogFolderError(OSError):
    """No folder this user can safely write a log file into."""


def log_folders() -> list[Path]:
    """Where a command's log file may go, in order: $RAYDENOISE_LOG_DIR (the user's choice),
    $XDG_STATE_HOME/raydenoise/logs (default ~/.local/state/raydenoise/logs), then a per-user
    folder in the temporary directory (raydenoise-logs-<uid>)."""
    folders = []
    if os.environ.get(LOG_DIR_ENV):
        folders.append(Path(os.environ[LOG_DIR_ENV]))
    home = os.path.expanduser("~")  # stays "~" when there is no home to expand to
    state = os.environ.get("XDG_STATE_HOME") or (
        os.path.join(home, ".local", "state") if home != "~" else ""
    )
    if state:
        folders.append(Path(state) / "raydenoise" / "logs")
    folders.append(Path(tempfile.gettempdir()) / f"raydenoise-logs-{os.getuid()}")
    return folders


def _private_folder(folder: Path, uid: int | None = None) -> str | None:
    """Make ``folder`` (0700) if missing; None when it is a real folder of this user (``uid``,
    default the process's) that no one else may write into, else the reason it is not usable."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot create it ({exc.strerror or exc})"
    import stat

    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder (a file or a link)"
    if st.st_uid != (os.getuid() if uid is None else uid):
        return f"it belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return "others may write into it (mode %o)" % (st.st_mode & 0o777)
    if not os.access(folder, os.W_OK | os.X_OK):
        return "it is not writable"
    return None


def open_log_file(command: str) -> tuple[int, Path]:
    """A new log file for one command, created exclusively (O_EXCL) without following links
    (O_NOFOLLOW), mode 0600, in the first usable folder of :func:`log_folders`: a folder that
    another user owns or may write into is passed over, so no one can plant a link or read the
    log. Returns (open fd, path); LogFolderError naming each folder and why when none works."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    problems = []
    for folder in log_folders():
        problem = _private_folder(folder)
        if problem:
            problems.append(f"{folder}: {problem}")
            continue
        for n in range(100):
            path = folder / f"{command}-{stamp}-{os.getpid()}{f'-{n}' if n else ''}.log"
            try:
                fd = os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, 0o600
                )
            except FileExistsError:
                continue  # a file (or a planted link) has that name: take the next
            except OSError as exc:
                problems.append(f"{folder}: cannot create a file ({exc.strerror or exc})")
                break
            return fd, path
    raise LogFolderError("no usable folder for the log file: " + "; ".join(problems))


def capture(command: str) -> Console:
    """Send everything written to file descriptors 1 and 2 (Ray's log stream, its C++ lines,
    warnings of the libraries it loads) to a log file, and keep the terminal for raydenoise's
    own lines and progress. Returns the console; the log's path is ``console().log_path``.
    When no folder can hold the log (see :func:`open_log_file`), says so in one line and leaves
    the output on the terminal."""
    global _CONSOLE
    try:
        fd, path = open_log_file(command)
    except LogFolderError as exc:
        console().error(
            f"raydenoise {command}: {exc}; Ray's log lines stay on this terminal "
            f"(set {LOG_DIR_ENV} to a folder of yours)"
        )
        return console()
    for s in (sys.stdout, sys.stderr):
        s.flush()
    term_out = os.fdopen(
        os.dup(1), "w", buffering=1, encoding=sys.stdout.encoding or "utf-8", errors="replace"
    )
    term_err = os.fdopen(
        os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace"
    )
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _CONSOLE = Console(term_out, term_err, str(path), verbose=False)
    return _CONSOLE


def release() -> None:
    """Undo :func:`capture` (the process's fds 1 and 2 point at the terminal again)."""
    global _CONSOLE
    if _CONSOLE is None or _CONSOLE.log_path is None:
        return
    for s in (sys.stdout, sys.stderr):
        s.flush()
    os.dup2(_CONSOLE.out.fileno(), 1)
    os.dup2(_CONSOLE.err.fileno(), 2)
    path, _CONSOLE = _CONSOLE.log_path, None
    with contextlib.suppress(OSError):
        if os.lstat(path).st_size == 0:
            os.unlink(
                path
            )  # nothing was logged (the command stopped before Ray): no empty file left


class Progress:
    """One stage's progress: done/total, rate, ETA.

    On a terminal, a live ``tqdm`` bar (lines written with ``console().line`` appear above it);
    elsewhere (CI, ``ray job logs``, a file), a plain line at most every ``interval`` seconds and
    one at the end. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "image",
        interval: float = PLAIN_INTERVAL_S,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ):
        self.label, self.total, self.unit, self.interval = label, total, unit, interval
        self.stream = stream or console().out
        self.done, self.t0 = 0, time.monotonic()
        self._last_line = self.t0
        self._postfix = ""
        self._first: tuple[float, int] | None = None
        tty = _is_tty(self.stream) if tty is None else tty
        self.bar = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=label,
                unit=f" {unit}s",
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
                mininterval=0.2,
                smoothing=0.1,
            )
        _ACTIVE.append(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        if (
            self._first is None
        ):  # the rate for the ETA is measured after the first result (start-up excluded)
            self._first = (time.monotonic(), n)
        self.done += n
        if postfix is not None:
            self._postfix = postfix
        if self.bar is not None:
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._plain()

    def status(self) -> str:
        elapsed = time.monotonic() - self.t0
        text = f"{self.label}: {self.done:,}"
        if self.total is not None:
            text += f"/{self.total:,}"
        text += f" {self.unit if self.done == 1 and self.total in (None, 1) else self.unit + 's'}"
        if self.done:
            t_first, n_first = self._first or (self.t0, 0)
            since, n = time.monotonic() - t_first, self.done - n_first
            # The rate after the first result (the time to it is start-up, not a rate), once it
            # spans a second (results that arrive in one burst have no meaningful rate of their own).
            steady = n > 0 and since >= STEADY_MIN_S
            if steady:
                text += f", {rate(n, since, self.unit)}"
            elif n > 0 or self.done == self.total:
                text += f", {rate(self.done, elapsed, self.unit)}"
            else:
                text += f", {duration(elapsed)} elapsed"
            # no ETA from the first result alone (it carries the start-up)
            if self.total and self.done < self.total and steady:
                text += f", ETA {duration(since / n * (self.total - self.done))}"
        else:
            text += f", {duration(elapsed)} elapsed"
        return text + (f" ({self._postfix})" if self._postfix else "")

    def _plain(self) -> None:
        print(self.status(), file=self.stream, flush=True)

    def close(self) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
            if self.bar is not None:
                self.bar.close()
            elif self.done and time.monotonic() - self._last_line > 0.5:
                self._plain()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
