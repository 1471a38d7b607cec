"""The fixture cache: one directory per recipe version, built in a temp dir and renamed into
place atomically, one flock per fixture so concurrent builders wait for each other."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .assemble import canonical_json
from .commands import log, run

Builder = Callable[[Path, Path], dict[str, object]]


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: BinaryIO | None = None

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "ab")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.handle is not None
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def default_cache() -> Path:
    if env := os.environ.get("OCI2VM_FIXTURE_CACHE"):
        return Path(env)
    system = Path("/var/cache/oci2vm-fixtures")
    probe = system
    while not probe.exists():
        probe = probe.parent
    if os.access(probe, os.W_OK | os.X_OK):
        return system
    return Path.home() / ".cache" / "oci2vm-fixtures"


def remove_tree(path: Path) -> None:
    """Delete a build directory, first unmounting anything a crashed chroot left inside it."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        run("umount", "--lazy", point)
    run("rm", "-rf", "--one-file-system", path)


def ensure(cache: Path, name: str, version: int, build: Builder) -> Path:
    """The directory of fixture `name` at `version`, building it if it is not cached."""
    final = cache / f"{name}-v{version}"
    if (final / "facts.json").exists():
        return final
    with FileLock(cache / f".{name}.lock"):
        if (final / "facts.json").exists():
            return final  # another process built it while we waited
        for stale in [*cache.glob(f".{name}-v{version}.tmp-*"), final]:
            if stale.exists():
                log(f"removing incomplete build {stale}")
                remove_tree(stale)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-v{version}.tmp-", dir=cache))
        started = time.monotonic()
        log(f"building {name} v{version} in {work}")
        try:
            facts = build(work, cache)
            facts["build_seconds"] = round(time.monotonic() - started, 1)
            (work / "facts.json").write_bytes(canonical_json(facts))
            work.chmod(0o755)
            os.rename(work, final)
        except BaseException:
            remove_tree(work)
            raise
        log(f"built {name} v{version} in {time.monotonic() - started:.1f} s: {final}")
    return final
