"""Detached runs' records (runs.py) and the commands that read them (ps, logs, stop, wait,
rm), with a plain process standing in for a run; and `run -d` failing before its VM
starts: the error told by the starting command, no record left."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci2vm import runs
from oci2vm.cli import config_from, parse
from oci2vm.errors import Oci2vmError
from oci2vm.report import Reporter
from support.runcli import oci2vm


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "oci2vm/runs"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in a session of its own, as a detached run is."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print('out'); time.sleep(60)"],
        start_new_session=True,
    )
    yield proc
    proc.kill()
    proc.wait()


def command(*argv: str) -> int:
    from oci2vm.commands import command as find

    args = parse(argv)
    return find(args.command)(config_from(args), Reporter())


def test_a_name_is_taken_once_and_found_by_its_beginning(runtime_dir: Path) -> None:
    web = runs.reserve("web")
    assert web == runtime_dir / "web" and web.stat().st_mode & 0o777 == 0o700
    with pytest.raises(Oci2vmError, match="the name 'web' is taken by another run"):
        runs.reserve("web")
    runs.record(web, 2**22 + 1, "oci:x:y", ("sh", "-c", "exit 3"))
    runs.record(runs.reserve("website"), 2**22 + 2, "oci:x:y", ())
    assert runs.find("web").name == "web"  # a whole name, though it begins another
    assert runs.find("webs").name == "website"
    with pytest.raises(Oci2vmError, match="'we' begins the names of 2 runs"):
        runs.find("we")
    with pytest.raises(Oci2vmError, match=r"no run named 'db' \(oci2vm ps -a lists them\)"):
        runs.find("db")
    unnamed = runs.reserve(None)
    assert len(unnamed.name) == 12 and int(unnamed.name, 16) >= 0


@pytest.mark.parametrize("name", ["-x", "a b", "_web", "x" * 129, "é"])
def test_names_are_dockers(name: str) -> None:
    with pytest.raises(SystemExit):
        parse(["run", "-d", "--name", name, "img"])


def test_ps_lists_running_runs_and_with_a_ended_ones_too(
    sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    up = runs.reserve("up")
    runs.record(up, sleeper.pid, "oci:app:1", ("sh", "-c", "echo a b"))
    (up / "ports").write_text("127.0.0.1:8080 -> 80/tcp\n")
    ended = runs.reserve("down")
    runs.record(ended, 2**22 + 3, "docker://reg/x:1", ())  # (no such pid)
    (ended / "exit").write_text("3\n")
    assert command("ps") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "PORTS", "SOURCE", "COMMAND"]
    assert lines[1].startswith("up  ") and "127.0.0.1:8080 -> 80/tcp" in lines[1]
    assert lines[1].endswith("oci:app:1   sh -c 'echo a b'")
    assert len(lines) == 2
    command("ps", "-a", "-q")
    assert capsys.readouterr().out.split() == ["down", "up"]
    command("ps", "-a")
    assert "exited (3)" in capsys.readouterr().out


def test_a_pid_used_again_is_not_the_run(sleeper: subprocess.Popen[bytes]) -> None:
    directory = runs.reserve("old")
    runs.record(directory, sleeper.pid, "oci:app:1", ())
    assert runs.find("old").running
    info = (directory / "run.json").read_text()
    started = str(runs.process_start(sleeper.pid))
    (directory / "run.json").write_text(info.replace(f'"started": {started}', '"started": 1'))
    assert not runs.find("old").running


def test_logs_stop_and_rm(
    sleeper: subprocess.Popen[bytes], capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    directory = runs.reserve("job")
    runs.record(directory, sleeper.pid, "oci:app:1", ())
    (directory / "stdout").write_bytes(b"one\n")
    (directory / "stderr").write_bytes(b"two\n")
    assert command("logs", "job") == 0
    out, err = capfdbinary.readouterr()
    assert (out, err) == (b"one\n", b"two\n")
    with pytest.raises(Oci2vmError, match="job is running: `oci2vm stop job` first"):
        command("rm", "job")
    # The stand-in ends by the SIGTERM a stop sends (a run takes it as docker stop's).
    assert command("stop", "-t", "5", "job") == 0
    assert sleeper.wait(5) == -signal.SIGTERM
    assert capfdbinary.readouterr().out == b"job\n"
    assert not runs.find("job").running
    assert command("rm", "job") == 0
    assert not directory.exists()


def test_a_stop_kills_a_run_that_outlives_its_grace(
    runtime_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
        start_new_session=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        runs.record(runs.reserve("stuck"), stubborn.pid, "oci:app:1", ())
        assert command("stop", "-t", "1", "stuck") == 0
        assert stubborn.wait(5) == -signal.SIGKILL
        assert runs.find("stuck").exit_status == 128 + signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait()


def test_rm_f_kills_a_running_one(sleeper: subprocess.Popen[bytes]) -> None:
    runs.record(runs.reserve("gone"), sleeper.pid, "oci:app:1", ())
    assert command("rm", "-f", "gone") == 0
    assert sleeper.wait(5) == -signal.SIGKILL
    assert runs.all_runs() == []


def test_run_d_that_fails_before_its_vm_starts_tells_why_and_leaves_no_record(
    runtime_dir: Path, tmp_path: Path
) -> None:
    failed = oci2vm("run", "-d", "--name", "bad", f"oci:{tmp_path}/none:x", timeout=60)
    assert failed.code == 125
    assert failed.out == ""
    assert failed.err.startswith("oci2vm: error: ") and failed.err.count("\n") == 1
    assert list(runtime_dir.iterdir()) == []
    refused = oci2vm("run", "-d", "-it", "img", timeout=60)
    assert refused.code == 125 and "-d with -i or -t" in refused.err
