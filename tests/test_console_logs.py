"""Where Ray's log lines go: a private per-user folder, files that cannot be hijacked."""

import datetime as dt
import os
import time

import pytest

from raydenoise.console import LOG_DIR_ENV, LogFolderError, log_folders, open_log_file

from conftest import run_cli


@pytest.fixture
def no_home_logs(tmp_path, monkeypatch):
    """Keep the tests' logs out of the real home and temporary folders."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path


def test_default_folder_is_per_user_and_private(no_home_logs, monkeypatch):
    monkeypatch.delenv(LOG_DIR_ENV, raising=False)
    fd, path = open_log_file("denoise")
    os.close(fd)
    assert path.parent == no_home_logs / "state/raydenoise/logs"
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700) and oct(
        path.stat().st_mode & 0o777
    ) == oct(0o600)
    assert log_folders()[-1].name == f"raydenoise-logs-{os.getuid()}"


def test_a_planted_link_is_never_followed(no_home_logs, monkeypatch):
    logs = no_home_logs / "logs"
    logs.mkdir(mode=0o700)
    monkeypatch.setenv(LOG_DIR_ENV, str(logs))
    victim = no_home_logs / "victim.txt"
    victim.write_text("precious\n")
    now = dt.datetime.now()
    for second in range(-1, 3):  # every name the next log could take
        stamp = (now + dt.timedelta(seconds=second)).strftime("%Y%m%d-%H%M%S")
        os.symlink(victim, logs / f"denoise-{stamp}-{os.getpid()}.log")
    fd, path = open_log_file("denoise")
    os.write(fd, b"ray's lines\n")
    os.close(fd)
    assert (
        victim.read_text() == "precious\n"
        and not path.is_symlink()
        and path.read_bytes() == b"ray's lines\n"
    )


@pytest.mark.parametrize("kind", ["a file", "writable by others"])
def test_an_unusable_folder_is_passed_over(no_home_logs, monkeypatch, kind):
    bad = no_home_logs / "bad"
    if kind == "a file":
        bad.write_text("not a folder")
    else:
        bad.mkdir()
        os.chmod(bad, 0o777)
    monkeypatch.setenv(LOG_DIR_ENV, str(bad))
    fd, path = open_log_file("train")
    os.close(fd)
    assert path.parent == no_home_logs / "state/raydenoise/logs"


def test_another_users_folder_is_not_used(no_home_logs):
    """As another user's /tmp/raydenoise-logs-<uid> would be: judged for a uid that is not its
    owner's (a test cannot hand a folder to another user everywhere: not in a user namespace)."""
    from raydenoise.console import _private_folder

    folder = no_home_logs / "theirs"
    folder.mkdir(mode=0o700)
    assert _private_folder(folder) is None
    assert "belongs to another user" in _private_folder(folder, uid=folder.stat().st_uid + 1)


def test_no_usable_folder_is_one_clear_line_and_nothing_is_captured(
    no_home_logs, monkeypatch, capsys
):
    import tempfile

    from raydenoise import console as con

    blocker = no_home_logs / "file"
    blocker.write_text("x")
    for name in (LOG_DIR_ENV, "XDG_STATE_HOME"):
        monkeypatch.setenv(name, str(blocker))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker))
    with pytest.raises(LogFolderError, match="no usable folder"):
        open_log_file("x")
    result = con.capture("denoise")
    assert result.log_path is None and con.console().log_path is None
    err = capsys.readouterr().err
    assert (
        err.count("no usable folder for the log file") == 1 and len(err.strip().splitlines()) == 1
    )


def test_the_cli_falls_back_when_the_chosen_folder_is_unusable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    t0 = time.perf_counter()
    r = run_cli(
        "denoise",
        "--input",
        str(tmp_path / "missing"),
        "--output",
        str(tmp_path / "o"),
        env={
            "RAY_ADDRESS": "",
            LOG_DIR_ENV: str(blocker),
            "XDG_STATE_HOME": str(tmp_path / "state"),
        },
    )
    assert (
        r.returncode == 1
        and "Traceback" not in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )
    assert "no such file" in r.stderr and time.perf_counter() - t0 < 15
    # the fallback folder took the log; the command stopped before Ray, so nothing was logged and
    # no empty file is left behind
    assert (tmp_path / "state/raydenoise/logs").is_dir()
    assert not list((tmp_path / "state/raydenoise/logs").glob("denoise-*.log"))
