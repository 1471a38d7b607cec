"""The host's side of app mode's control port, without QEMU: the exit status with the
bytes of output it counts, and "drained" sent only once they all came (or stopped)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from oci2vm import runtime


def test_drained_is_sent_once_every_counted_byte_came() -> None:
    host, guest = socket.socketpair()
    with host, guest:
        guest.setblocking(False)
        session = runtime._Session()
        runtime._control_lines(session, b"started\nexit 4 10 3\n")
        assert (session.started, session.status, session.expected) == (
            True, 4, {"stdout": 10, "stderr": 3},
        )  # fmt: skip
        now = session.last_output
        runtime._count(session, "stdout", 10)
        runtime._drained(session, host, now)
        assert session.kill_at is None  # stderr's 3 bytes are still to come
        runtime._count(session, "stderr", 3)
        runtime._drained(session, host, now)
        assert guest.recv(64) == b"drained\n"
        assert session.kill_at == now + runtime.POWEROFF_SECONDS
        runtime._drained(session, host, now + 1)  # once
        assert session.expected is None


def test_output_that_stops_coming_is_taken_as_all_there_is() -> None:
    host, guest = socket.socketpair()
    with host, guest:
        session = runtime._Session()
        runtime._control_lines(session, b"exit 0 5 0\n")
        start = session.last_output
        runtime._drained(session, host, start + runtime.DRAIN_STALL_SECONDS - 1)
        assert session.expected is not None
        runtime._drained(session, host, start + runtime.DRAIN_STALL_SECONDS)
        assert guest.recv(64) == b"drained\n"


def test_an_exit_status_without_counts_powers_off_at_once() -> None:
    """A tty's init (no relays) sends the status alone, and powers off."""
    session = runtime._Session()
    runtime._control_lines(session, b"exit 130\n")
    assert session.status == 130 and session.expected is None
    assert session.kill_at is not None


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGTERM, 137), (signal.SIGINT, 130), (signal.SIGPIPE, 141)],
)
def test_a_workload_that_never_reported_its_status_ends_as_docker_says(
    signum: int, status: int, tmp_path: Path
) -> None:
    """A stop (SIGTERM) past its grace kills the VM: 137, the status docker stop's SIGKILL
    leaves; Ctrl-C's second press or grace is the client's own 130, a closed output 141."""
    session = runtime._Session(signal=signum)
    assert runtime._outcome(session, None, tmp_path / "log", None) == status  # type: ignore[arg-type]
    reported = runtime._Session(signal=signum, status=143)  # the workload ended by itself
    assert runtime._outcome(reported, None, tmp_path / "log", None) == 143  # type: ignore[arg-type]
