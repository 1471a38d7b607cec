"""`oci2vm` run as a child process, for tests that must send it signals or read its own
file descriptors (oci2vm run writes the workload's output to fds 1 and 2 directly), and
the host-side helpers those tests share: a free loopback port, an HTTP page polled until
the guest serves it, a cache that shares the fixture store's downloads but not its run
entries, a directory's files as (sha256, mtime) to prove a cache unchanged, and the
Debian fixtures' skip rule."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

# The console script's body, run by this interpreter (sys.path carries the tree under test).
OCI2VM = [sys.executable, "-c", "import sys; from oci2vm.cli import main; sys.exit(main())"]
RUN_TIMEOUT = 600.0  # a first run builds the root; TCG on two shared cores is slow


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def start(*args: str, stdin: int | IO[bytes] = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """`oci2vm ARGS` with stdin /dev/null (or `stdin`), stdout and stderr as pipes."""
    return subprocess.Popen(
        [*OCI2VM, *args], stdin=stdin, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=child_env(),
    )  # fmt: skip


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str
    seconds: float


def oci2vm(
    *args: str, timeout: float = RUN_TIMEOUT, stdin: int | IO[bytes] = subprocess.DEVNULL
) -> Finished:
    """`oci2vm ARGS` to its end: exit status, stdout, stderr and how long it took."""
    started = time.monotonic()
    proc = start(*args, stdin=stdin)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    seconds = time.monotonic() - started
    return Finished(proc.returncode, out.decode(), err.decode(), seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch_when_served(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> bytes:
    """The body at `url`, polled until it answers; fails when `proc` (if any) ends first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bytes(response.read())
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


SHARED_PARTS = ("blobs", "refs", "uncompressed", "kernels")


def cache_sharing_downloads(shared: Path, directory: Path) -> Path:
    """A --cache-dir whose downloads (blobs, Release refs, what kernel packages gave) are
    the shared store's but whose run/ is its own and empty: the first `oci2vm run` there
    builds its root."""
    directory.mkdir(parents=True, exist_ok=True)
    for part in SHARED_PARTS:
        (shared / part).mkdir(parents=True, exist_ok=True)
        (directory / part).symlink_to(shared / part, target_is_directory=True)
    return directory


def files_state(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under `directory`: relative path -> (sha256, mtime_ns)."""
    state = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            state[str(path.relative_to(directory))] = (digest.hexdigest(), path.stat().st_mtime_ns)
    return state


def skip_unless_buildable(name: str) -> None:
    """Debian fixtures are built with debootstrap, as root, unless cached already."""
    from fixture_images import fixture_is_cached

    if not fixture_is_cached(name) and os.geteuid() != 0:
        pytest.skip(f"building the {name} fixture needs root (debootstrap, chroot)")
