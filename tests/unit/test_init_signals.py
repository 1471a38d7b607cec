"""The app-mode init's deliver (init.sh), run by busybox's sh on the host against a
program that is PID 1 of a PID namespace, as the workload is in the guest: a signal the
program neither handles nor ignores would be dropped by the kernel (an init's rule), so
deliver ends the program by SIGKILL and notes the signal for its exit status; a handled
one reaches its handler; one whose default is not to end a program goes as it is."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci2vm.initramfs import spec as spec_module
from support.programs import requires

pytestmark = requires("busybox")
INIT = (Path(spec_module.__file__).parent / "init.sh").read_text()


def _function(name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{ #[^\n]*\n.*?^\}}\n", INIT, re.M | re.S)
    assert match is not None, name
    return match[0]


def _in_namespace(tmp_path: Path, script: str) -> tuple[subprocess.Popen[bytes], int]:
    """`script` as PID 1 of a new PID namespace (its starter as the init starts it), and
    its pid as seen from here."""
    pid_file = tmp_path / "pid"
    starter = f'read -r pid _ </proc/self/stat && echo "$pid" >{pid_file}; {script}'
    proc = subprocess.Popen(
        ["busybox", "unshare", "-p", "-f", "--", "busybox", "sh", "-c", starter]
    )
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        if proc.poll() is not None:
            pytest.skip("no PID namespace here (unshare -p needs root or user namespaces)")
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)  # its trap set
    return proc, int(pid_file.read_text())


def _deliver(tmp_path: Path, signum: int, pid: int) -> None:
    functions = "".join(
        _function(f) for f in ("deliver", "watch_reraise", "disposition", "ended_by")
    )
    script = f'WORKLOAD_SIGNAL="$1"\n{functions}deliver "$2" "$3"\n'
    noted = str(tmp_path / "signal")
    subprocess.run(["busybox", "sh", "-c", script, "sh", noted, str(signum), str(pid)], check=True)


@pytest.fixture
def reaped() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_the_workload_does_not_handle_ends_it_and_is_noted(
    tmp_path: Path, reaped: list[subprocess.Popen[bytes]], signum: int
) -> None:
    proc, pid = _in_namespace(tmp_path, "exec sleep 30")
    reaped.append(proc)
    _deliver(tmp_path, signum, pid)
    assert proc.wait(10) == -signal.SIGKILL  # (unshare dies by its child's signal)
    assert (tmp_path / "signal").read_text() == f"{int(signum)}\n"


def test_a_handled_signal_reaches_the_handler(
    tmp_path: Path, reaped: list[subprocess.Popen[bytes]]
) -> None:
    proc, pid = _in_namespace(tmp_path, "trap 'exit 3' TERM; while :; do sleep 0.05; done")
    reaped.append(proc)
    _deliver(tmp_path, signal.SIGTERM, pid)
    assert proc.wait(10) == 3
    assert not (tmp_path / "signal").exists()


def test_a_handler_that_raises_the_signal_again_to_end_by_it_ends_the_workload(
    tmp_path: Path, reaped: list[subprocess.Popen[bytes]]
) -> None:
    """node's SIGINT and SIGTERM handlers reset the terminal, restore the default and
    raise the signal again: an init ignores that one too, and node ran on."""
    script = "trap 'trap - TERM; kill -TERM $$; sleep 30' TERM; while :; do sleep 0.05; done"
    proc, pid = _in_namespace(tmp_path, script)
    reaped.append(proc)
    _deliver(tmp_path, signal.SIGTERM, pid)
    assert proc.wait(10) == -signal.SIGKILL
    assert (tmp_path / "signal").read_text() == f"{int(signal.SIGTERM)}\n"


@pytest.mark.parametrize("script", ["trap '' TERM; exec sleep 30", "exec sleep 30"])
def test_an_ignored_signal_or_one_that_ends_nothing_leaves_the_workload_running(
    tmp_path: Path, reaped: list[subprocess.Popen[bytes]], script: str
) -> None:
    proc, pid = _in_namespace(tmp_path, script)
    reaped.append(proc)
    _deliver(tmp_path, signal.SIGTERM if "trap" in script else signal.SIGWINCH, pid)
    time.sleep(0.3)
    assert proc.poll() is None
    assert not (tmp_path / "signal").exists()
