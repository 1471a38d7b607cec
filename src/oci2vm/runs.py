"""Detached runs (`oci2vm run -d`), as docker keeps its containers: each is a directory
of its own under the user's runtime directory, which `ps`, `logs`, `stop`, `wait` and
`rm` read.

    <runs>/<name>/run.json   name, the run process's pid and start time, source, command
                  ports      the forwards the run set up ("127.0.0.1:8080 -> 80/tcp" lines)
                  stdout     what the run printed (the workload's output)
                  stderr
                  exit       its exit status, once it ended

The run is oci2vm itself, started again without a terminal in a session of its own with
OCI2VM_DETACHED naming that directory; it tells the command that started it that its VM
is starting through the pipe OCI2VM_READY_FD names (errors before that are the starting
command's to tell), and writes its exit status when it ends. A pid is taken with the
start time the kernel gives it, so a pid used again by another process is not mistaken
for the run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oci2vm.errors import Oci2vmError

DETACHED_ENV = "OCI2VM_DETACHED"
READY_ENV = "OCI2VM_READY_FD"
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # docker's rule for a container's name
NAME_LIMIT = 128


def runs_dir() -> Path:
    """$XDG_RUNTIME_DIR/oci2vm/runs, else a private directory in the temporary one."""
    from oci2vm.image.blobs import private_dir  # (the blob cache's rule)

    fix = "set XDG_RUNTIME_DIR to a directory of your own"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        top = Path(runtime) / "oci2vm"
        top.mkdir(mode=0o700, exist_ok=True)
    else:
        top = private_dir(
            Path(tempfile.gettempdir()) / f"oci2vm-{os.geteuid()}", "the runs' directory", fix
        )
    return private_dir(top / "runs", "the runs' directory", fix)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or len(name) > NAME_LIMIT:
        raise Oci2vmError(
            f"--name {name!r}: a name is letters, digits and _.- (not first), as docker's"
        )
    return name


@dataclass(frozen=True, slots=True)
class Run:
    """A detached run's record."""

    name: str
    directory: Path
    pid: int
    started: int  # the pid's start time in clock ticks since boot (/proc/PID/stat)
    source: str
    command: tuple[str, ...]
    created: float  # seconds since the epoch

    @property
    def running(self) -> bool:
        return self.pid > 0 and process_start(self.pid) == self.started

    @property
    def exit_status(self) -> int | None:
        try:
            return int((self.directory / "exit").read_text())
        except (OSError, ValueError):
            return None

    @property
    def ports(self) -> list[str]:
        try:
            return (self.directory / "ports").read_text().splitlines()
        except OSError:
            return []


def process_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has ended: only its parent has yet to see it
        return None
    return int(fields[19])


def reserve(name: str | None) -> Path:
    """A new run's directory, under `name` (or a new one): refused while one has it."""
    runs = runs_dir()
    chosen = name or secrets.token_hex(6)
    try:
        (runs / chosen).mkdir(mode=0o700)
    except FileExistsError:
        raise Oci2vmError(
            f"the name {chosen!r} is taken by another run: `oci2vm rm {chosen}` removes it"
        ) from None
    return runs / chosen


def record(directory: Path, pid: int, source: str, command: Sequence[str]) -> None:
    started = process_start(pid) or 0
    info = {
        "name": directory.name, "pid": pid, "started": started, "source": source,
        "command": list(command), "created": time.time(),
    }  # fmt: skip
    (directory / "run.json").write_text(json.dumps(info) + "\n")


def load(directory: Path) -> Run | None:
    try:
        info = json.loads((directory / "run.json").read_text())
        return Run(
            name=directory.name,
            directory=directory,
            pid=int(info["pid"]),
            started=int(info["started"]),
            source=str(info["source"]),
            command=tuple(str(word) for word in info["command"]),
            created=float(info["created"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def all_runs() -> list[Run]:
    """Every recorded run, the newest first."""
    runs = [load(d) for d in runs_dir().iterdir() if d.is_dir()]
    return sorted((r for r in runs if r is not None), key=lambda r: -r.created)


def find(name: str) -> Run:
    """The run named `name`, or the one whose name begins with it, as docker finds an ID."""
    runs = all_runs()
    exact = [r for r in runs if r.name == name]
    if exact:
        return exact[0]
    begun = [r for r in runs if r.name.startswith(name)] if name else []
    if len(begun) == 1:
        return begun[0]
    if begun:
        raise Oci2vmError(f"{name!r} begins the names of {len(begun)} runs: give more of it")
    raise Oci2vmError(f"no run named {name!r} (oci2vm ps -a lists them)")


def remove(run: Run) -> None:
    remove_directory(run.directory)


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


# The detached run's own side.


@dataclass
class _Detached:
    directory: Path | None = None
    ready_fd: int | None = None
    discard: bool = False  # --rm: the record goes when the run ends


_DETACHED = _Detached()


def take_environment() -> None:
    """In a run started detached: note its directory and pipe, and take them out of the
    environment that QEMU and the commands it runs inherit."""
    directory = os.environ.pop(DETACHED_ENV, None)
    fd = os.environ.pop(READY_ENV, None)
    if directory:
        _DETACHED.directory = Path(directory)
    if fd and fd.isdigit():
        _DETACHED.ready_fd = int(fd)


def detached() -> bool:
    return _DETACHED.directory is not None


def starting(ports: Sequence[str], discard: bool) -> None:
    """The VM is about to start: its forwards are recorded, and the starting command told
    it may return."""
    _DETACHED.discard = discard
    if _DETACHED.directory is not None:
        (_DETACHED.directory / "ports").write_text("".join(f"{p}\n" for p in ports))
    fd, _DETACHED.ready_fd = _DETACHED.ready_fd, None
    if fd is not None:
        try:
            os.write(fd, b"started\n")
            os.close(fd)
        except OSError:
            pass


def ended(status: int) -> None:
    """The run's end: its status recorded (or, with --rm, its whole record removed)."""
    directory = _DETACHED.directory
    if directory is None:
        return
    if _DETACHED.discard:  # (set once it started: before, the starter tells why it failed)
        shutil.rmtree(directory, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        (directory / "exit").write_text(f"{status}\n")
