"""`oci2vm run -d` and the commands that read detached runs back, as docker's do for its
containers: `ps`, `logs`, `stop`, `wait`, `rm` (see runs.py for what is kept)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from oci2vm import runs
from oci2vm.config import Config
from oci2vm.errors import Oci2vmError
from oci2vm.initramfs.spec import STOP_GRACE_SECONDS
from oci2vm.report import Reporter

STOP_MARGIN_SECONDS = 10.0  # past the run's own grace, before stop kills the run itself
POLL_SECONDS = 0.1


def detach_run(config: Config, argv: Sequence[str], reporter: Reporter) -> int:
    """Start this very command again in the background, in a session of its own, without
    a terminal, its output kept for `oci2vm logs`; return once its VM starts (printing
    the run's name, as docker run -d prints the container's ID), or with its status and
    its error when it fails before that."""
    if config.interactive or config.tty:
        raise Oci2vmError(
            "-d with -i or -t: a detached run has no terminal, and oci2vm cannot attach one "
            "later (leave -i and -t out)"
        )
    directory = runs.reserve(config.name)
    ready, ready_w = os.pipe()
    env = {**os.environ, runs.DETACHED_ENV: str(directory), runs.READY_ENV: str(ready_w)}
    argv = [sys.executable, "-m", "oci2vm.cli", *argv]
    started = False
    proc: subprocess.Popen[bytes] | None = None
    try:
        with (
            os.fdopen(ready, "rb") as told,
            open(directory / "stdout", "wb") as out,
            open(directory / "stderr", "wb") as err,
        ):
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                    pass_fds=[ready_w], start_new_session=True,
                )  # fmt: skip
            finally:
                os.close(ready_w)  # (the run's now, or nobody's)
            runs.record(directory, proc.pid, config.source, config.command or ())
            started = told.readline().startswith(b"started")
        if started:
            print(directory.name, flush=True)
            return 0
        status = proc.wait()
        sys.stderr.write((directory / "stderr").read_text(errors="replace"))
        return status
    except BaseException:
        if not started and proc is not None:
            _kill(proc.pid)
        raise
    finally:
        if not started:
            runs.remove_directory(directory)


def _kill(pid: int) -> None:
    """The run and what it started in its session (QEMU dies with it: tools.run's
    parent-death signal)."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def ps_command(config: Config, reporter: Reporter) -> int:
    """Running runs (with -a, ended ones too): their names alone with -q."""
    shown = [r for r in runs.all_runs() if config.all or r.running]
    if config.quiet:
        for run in shown:
            print(run.name)
        return 0
    rows = [("NAME", "STATUS", "PORTS", "SOURCE", "COMMAND")]
    for run in shown:
        rows.append((run.name, _status(run), ", ".join(run.ports), run.source,
                     shlex.join(run.command)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("   ".join([*cells, row[-1]]).rstrip())
    return 0


def _status(run: runs.Run) -> str:
    if run.running:
        return f"up {_ago(run.created)}"
    status = run.exit_status
    return f"exited ({'?' if status is None else status})"


def _ago(since: float) -> str:
    seconds = max(0, int(time.time() - since))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


def logs_command(config: Config, reporter: Reporter) -> int:
    """What a run printed, its standard output and error each on ours; with -f, what it
    prints next too, until it ends."""
    (name,) = config.runs
    run = runs.find(name)
    offsets = {"stdout": 0, "stderr": 0}
    while True:
        running = run.running  # (read first: what it printed before it ended is shown)
        for stream, out in (("stdout", sys.stdout.buffer), ("stderr", sys.stderr.buffer)):
            offsets[stream] += _copy_from(run.directory / stream, offsets[stream], out)
        if not config.follow or not running:
            return 0
        time.sleep(POLL_SECONDS)


def _copy_from(path: Path, offset: int, out: BinaryIO) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return 0
    out.write(data)
    out.flush()
    return len(data)


def stop_command(config: Config, reporter: Reporter) -> int:
    """As docker stop: the workload gets its stop signal (the run's SIGTERM), the VM is
    killed after its grace, or by the stop after -t seconds; each name printed."""
    chosen = [runs.find(name) for name in config.runs]
    for run in chosen:
        if run.running:
            os.kill(run.pid, signal.SIGTERM)
    for run in chosen:
        if run.running and not _ended(run, _stop_wait(config)):
            _kill(run.pid)
            _ended(run, STOP_MARGIN_SECONDS)
            if run.exit_status is None:  # (the run could not say it: docker's status)
                (run.directory / "exit").write_text(f"{128 + signal.SIGKILL}\n")
        print(run.name)
    return 0


def _stop_wait(config: Config) -> float | None:
    """How long a stop waits for a run to end before it kills it: -t's seconds (< 0: no
    limit), else a run's default grace and the time it takes to kill its own VM."""
    if config.stop_timeout is None:
        return STOP_GRACE_SECONDS + STOP_MARGIN_SECONDS
    return None if config.stop_timeout < 0 else config.stop_timeout


def _ended(run: runs.Run, seconds: float | None) -> bool:
    deadline = None if seconds is None else time.monotonic() + seconds
    while run.running:
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def wait_command(config: Config, reporter: Reporter) -> int:
    """Until each run ends; its exit status printed, as docker wait prints it."""
    for name in config.runs:
        run = runs.find(name)
        _ended(run, None)
        status = run.exit_status
        print("?" if status is None else status, flush=True)
    return 0


def rm_command(config: Config, reporter: Reporter) -> int:
    """The records of ended runs; a running one is refused, unless -f kills it first."""
    chosen = [runs.find(name) for name in config.runs]
    for run in chosen:
        if run.running and not config.force:
            raise Oci2vmError(
                f"{run.name} is running: `oci2vm stop {run.name}` first, or rm -f kills it"
            )
    for run in chosen:
        if run.running:
            _kill(run.pid)
            _ended(run, STOP_MARGIN_SECONDS)
        runs.remove(run)
        print(run.name)
    return 0
