"""The one place that runs external programs.

Every program is looked up at run time; a missing one is an error naming the Debian
package that provides it. Every command line is logged before it runs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from oci2vm.errors import Oci2vmError

log = logging.getLogger(__name__)

# program -> Debian package that ships it, for the programs oci2vm itself runs. QEMU's
# system emulators and the UEFI firmware are named per architecture (arch.py).
PACKAGES: dict[str, str] = {
    "qemu-img": "qemu-utils",
    "grub-mkimage": "grub-common",
    "docker": "docker.io",
    "podman": "podman",
    "gpgv": "gpgv",
}


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent thread ends
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _dying_with(parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec: SIGKILL for it when the thread that
    started it ends (or now, when `parent` already ended before the prctl). A QEMU in a
    session of its own (so that Ctrl-C reaches oci2vm alone) would otherwise outlive an
    oci2vm killed by SIGKILL, holding its disk and ports for ever. A foreign function call
    and two system calls: the child of a threaded parent must not take locks."""

    def in_child() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    return in_child


def find_program(name: str, package: str | None = None) -> str:
    """Return the full path of `name`, or raise naming the Debian package to install."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pkg = package or PACKAGES.get(name, name)
        raise Oci2vmError(f"{name} not found: install it with 'apt-get install {pkg}'")
    return path


def have_program(name: str) -> bool:
    return bool(shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin"))


def run(
    argv: Sequence[str | Path],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    package: str | None = None,
    die_with_parent: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run an external program, logging its command line. `die_with_parent`: the program
    is killed if oci2vm is (an interactive QEMU must not keep the terminal), or rather if
    the calling thread ends, which must wait for it (this function does).

    The program (argv[0]) is resolved with find_program(). A non-zero exit becomes an
    Oci2vmError naming the program and the last line of its stderr.
    """
    args = [str(a) for a in argv]
    args[0] = find_program(args[0], package)
    log.debug("running: %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            input=input,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            check=False,
            preexec_fn=_dying_with(os.getpid()) if die_with_parent else None,  # (no lock)
        )
    except subprocess.TimeoutExpired as e:
        raise Oci2vmError(f"{Path(args[0]).name} did not finish within {timeout:g} s") from e
    if check and proc.returncode != 0:
        raise _failed(args[0], proc.returncode, proc.stderr or b"")
    return proc


def run_reading(argv: Sequence[str | Path], on_output: Callable[[bytes], None]) -> None:
    """Run a program as run() does, handing its standard output to `on_output` as it
    comes (a progress meter's), for programs that take long."""
    args = [str(a) for a in argv]
    args[0] = find_program(args[0])
    log.debug("running: %s", shlex.join(args))
    with tempfile.TemporaryFile() as stderr:  # (a pipe read after stdout could fill)
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr) as proc:
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), 4096):
                on_output(chunk)
        if proc.returncode != 0:
            stderr.seek(0)
            raise _failed(args[0], proc.returncode, stderr.read())


def _failed(program: str, status: int, stderr: bytes) -> Oci2vmError:
    """A program's failure, by the last line of its stderr."""
    err = stderr.decode(errors="replace").strip().splitlines()
    detail = err[-1] if err else f"exit status {status}"
    return Oci2vmError(f"{Path(program).name} failed: {detail}")


def popen(
    argv: Sequence[str | Path],
    *,
    package: str | None = None,
    **kwargs: object,
) -> subprocess.Popen[bytes]:
    """Start a long-running program (QEMU, a registry), logging its command line. It is
    killed when the thread that started it ends, even by SIGKILL (the caller's thread must
    outlive it: the ones here wait for it)."""
    args = [str(a) for a in argv]
    args[0] = find_program(args[0], package)
    log.debug("starting: %s", shlex.join(args))
    # (_dying_with's function takes no lock, imports and logs nothing: safe among threads)
    return subprocess.Popen(args, preexec_fn=_dying_with(os.getpid()), **kwargs)  # type: ignore[call-overload, no-any-return]  # noqa: PLW1509
