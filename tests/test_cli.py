"""The command line as a user meets it: version, help, quiet output with Ray's logs in a file,
mistakes reported before Ray starts, counts that read right."""

import argparse
import io
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from raydenoise.cli import EXAMPLES, build_parser
from raydenoise.console import Progress, duration, plural, rate

from conftest import png_bytes, rgb, run_cli, write


def test_version_help_and_python_dash_m():
    r = run_cli("--version")
    assert r.returncode == 0 and re.fullmatch(r"raydenoise \d+\.\d+\.\d+", r.stdout.strip()), (
        r.stdout + r.stderr
    )
    r = subprocess.run(
        [sys.executable, "-m", "raydenoise", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "raydenoise denoise --input" in r.stdout
    assert "subcommand builds its config" not in r.stdout  # no developer notes in the user's help


def test_every_option_has_help_and_every_command_an_example():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subs) == set(EXAMPLES)
    for name, sub in subs.items():
        assert (sub.epilog and f"raydenoise {name}" in sub.epilog) or (
            name == "models" and "raydenoise models" in sub.epilog
        )
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"


def test_counts_and_rates_read_right_for_zero_one_and_many():
    assert plural(0, "image") == "0 images" and plural(1, "image") == "1 image"
    assert plural(1, "model actor") == "1 model actor" and plural(3, "shard") == "3 shards"
    assert plural(12345, "pair") == "12,345 pairs"
    assert rate(1, 4.2) == "4.2 s/image"  # not "0.2 images/s" or "0.0 images/s"
    assert rate(30, 10) == "3.0 images/s"
    assert rate(0, 5) == "- images/s"
    assert duration(5) == "5s" and duration(185) == "3m05s" and duration(7260) == "2h01m"


def test_progress_without_a_terminal_is_one_line_every_few_seconds():
    out = io.StringIO()
    with Progress("denoise", 10, stream=out, interval=0.5, tty=False) as p:
        for _ in range(10):
            p.update(1)
            time.sleep(0.25)
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 6, lines  # throttled, not one line per image
    assert all(line.startswith("denoise: ") for line in lines)
    assert lines[-1].startswith("denoise: 10/10 images, ")
    assert any(
        "ETA" in line for line in lines[:-1]
    )  # once the rate after the first result spans 1 s
    with Progress("ingest", 13, unit="pair", stream=io.StringIO(), tty=False) as p:
        p.update(11)
        time.sleep(0.2)
        p.update(
            2
        )  # the rest arrives at once: the rate is the overall one, not hundreds per second
        status = p.status()
    assert (
        status.startswith("ingest: 13/13 pairs, ") and float(status.split(", ")[1].split()[0]) < 100
    ), status


def test_progress_on_a_terminal_is_a_live_bar():
    out = io.StringIO()
    with Progress("train", 3, unit="epoch", stream=out, tty=True) as p:
        p.update(1, postfix="val 30.10 dB")
        p.update(2)
    text = out.getvalue()
    assert "\r" in text and "3/3" in text and "epochs" in text


def test_mistakes_are_reported_before_ray_starts(tmp_path):
    """Each is a one-line error in about a second, with no Ray started (no log file announced)."""
    write(tmp_path / "in/a.png", png_bytes(rgb(32, 32)))
    cases = [
        (
            ("denoise", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")),
            "no such file",
        ),
        (
            ("denoise", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "in/out")),
            "is inside --input",
        ),
        (
            (
                "denoise",
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "o"),
                "--model",
                "builtin:nope",
            ),
            "available: builtin:denoise",
        ),
        (
            (
                "ingest",
                "--low",
                str(tmp_path / "missing"),
                "--high",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "d"),
            ),
            "no such file",
        ),
        (
            (
                "train",
                "--data",
                str(tmp_path / "missing"),
                "--model",
                "swift",
                "--storage-path",
                str(tmp_path / "r"),
                "--name",
                "x",
            ),
            "not found",
        ),
        (
            (
                "evaluate",
                "--data",
                str(tmp_path / "missing"),
                "--model",
                "builtin:denoise",
                "--out",
                str(tmp_path / "e"),
            ),
            "not found",
        ),
        (
            (
                "denoise",
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "o"),
                "--strength",
                "0.5",
                "--sigma",
                "10",
            ),
            "not both",
        ),
        (
            (
                "denoise",
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "o"),
                "--strength",
                "7",
            ),
            "--strength must be a number from 0 to 4",
        ),
        (
            (
                "evaluate",
                "--data",
                str(tmp_path / "missing"),
                "--model",
                "builtin:denoise",
                "--sigma",
                "300",
            ),
            "--sigma must be a noise level from 0 to 255",
        ),
    ]
    for args, message in cases:
        t0 = time.perf_counter()
        r = run_cli(*args, env={"RAY_ADDRESS": ""})
        seconds = time.perf_counter() - t0
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert message in r.stderr.lower() or message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and "Ray's log lines" not in r.stdout, (
            args,
            r.stdout,
            r.stderr,
        )
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert seconds < 15, (args, seconds)  # no Ray start (~5-10 s here) hides behind it


@pytest.mark.slow
def test_a_denoise_run_shows_our_lines_and_progress_and_sends_ray_logs_to_a_file(tmp_path):
    """A fresh local Ray, as a user's first command: the terminal shows raydenoise's lines only."""
    rng = np.random.default_rng(0)
    for i in range(4):
        write(
            tmp_path / f"in/{i}.png", png_bytes(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        )
    logs = tmp_path / "logs"
    ray_tmp = tempfile.mkdtemp(prefix="rdn-")  # short: Ray's socket paths must fit 107 bytes
    r = run_cli(
        "denoise",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        env={"RAY_ADDRESS": "", "RAYDENOISE_LOG_DIR": str(logs), "RAY_TMPDIR": ray_tmp},
    )
    assert r.returncode == 0, r.stderr
    # Every Ray process the command started (GCS, raylet, agents, workers: all name its session
    # folder under RAY_TMPDIR) ends with it, within seconds.
    deadline, left = time.monotonic() + 10, ["?"]
    while left and time.monotonic() < deadline:
        left = _processes_naming(ray_tmp)
        time.sleep(0.2)
    assert not left, left
    shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = r.stdout.strip().splitlines()
    assert all(line.startswith("denoise: ") for line in lines), lines
    assert not r.stderr.strip(), r.stderr  # Ray's warnings and C++ lines went to the log file
    assert any(line.startswith("denoise: 4/4 images") for line in lines), lines
    assert lines[-1].startswith("denoise: 4 written, 0 skipped, 0 failed"), lines
    assert "1 model actors" not in r.stdout and "0.0 images/s" not in r.stdout
    announced = next(line for line in lines if "Ray's log lines go to" in line)
    path = Path(announced.split("go to ")[1].split(" (")[0])
    assert path.parent == logs and path.exists() and path.stat().st_size > 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def _processes_naming(text: str) -> list[str]:
    """The command lines of the running processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{proc.name}: {cmd[:200]}")
    return found


def test_user_mistakes_share_one_base_class_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Every error of ours that names a user's mistake is a RaydenoiseError (one line, exit 1);
    anything else (a ValueError from a bug) is an internal error with its traceback (exit 2)."""
    import importlib

    import raydenoise
    from raydenoise.cli import commands
    from raydenoise.imaging.images import ImageError
    from raydenoise.imaging.noise import NoiseSpecError
    from raydenoise.models.artifacts import ArtifactError
    from raydenoise.models.engines import EngineError
    from raydenoise.session import RayJoinError
    from raydenoise.storage.dataset import DatasetError

    for cls in (
        raydenoise.DenoiseError,
        raydenoise.EvaluateError,
        raydenoise.IngestError,
        raydenoise.TrainError,
        raydenoise.StorageError,
        DatasetError,
        ImageError,
        NoiseSpecError,
        ArtifactError,
        EngineError,
        RayJoinError,
    ):
        assert issubclass(cls, raydenoise.RaydenoiseError), cls
    main = importlib.import_module("raydenoise.cli.main")  # the module (the package names main())
    assert (raydenoise.RaydenoiseError,) == main.USER_ERRORS

    def mistake(args):
        raise raydenoise.StorageError("s3://b/x: access denied")

    def bug(args):
        raise ValueError("an index went wrong")

    monkeypatch.setitem(commands.COMMANDS, "models", mistake)
    monkeypatch.setattr(main, "COMMANDS", commands.COMMANDS)
    assert main.main(["models"]) == 1
    err = capsys.readouterr().err
    assert "error: s3://b/x: access denied" in err and "Traceback" not in err
    monkeypatch.setitem(commands.COMMANDS, "models", bug)
    assert main.main(["models"]) == 2
    err = capsys.readouterr().err
    assert "internal error: ValueError: an index went wrong" in err and "Traceback" in err
