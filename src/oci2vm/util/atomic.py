"""Outputs that appear only when complete: a temporary file beside the output, renamed
into place at the end and removed on any error, and scratch files beside it."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oci2vm.errors import Oci2vmError


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed to it on success, removed on failure. A
    symlink to a file is written through, as cp and qemu-img write (the file it names is
    replaced, the link stays)."""
    path = path.absolute()
    check_replaceable(path)
    if os.path.islink(path) and os.path.isfile(path):
        path = Path(os.path.realpath(path))
    if not os.path.isdir(path.parent):
        raise Oci2vmError(f"{path.parent}: no such directory")
    try:
        fd, name = tempfile.mkstemp(prefix=_scratch_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise Oci2vmError(
            f"{path.parent}: cannot create files there ({e.strerror}): choose another -o"
        ) from e
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644 & ~_umask())
        try:
            os.replace(tmp, path)
        except OSError as e:  # (immutable, a mount point, another's file in a sticky dir)
            raise Oci2vmError(
                f"{path}: cannot replace it ({e.strerror}): choose another -o"
            ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


SCRATCH_NAME = 48  # characters of the output's name in its scratch files' names


def _scratch_prefix(final: Path) -> str:
    """A scratch file's name begins with its output's, cut so that the whole name stays
    within NAME_MAX (255 bytes) when the output's own name is near it."""
    return f".{final.name[:SCRATCH_NAME]}."


def check_replaceable(path: Path) -> None:
    """Only a regular file (or a symlink to one) or a missing path may become the output:
    replacing a device, a FIFO or a socket (-o /dev/null as root) would destroy it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # missing, or a dangling symlink (which is replaced)
    except OSError as e:
        raise Oci2vmError(f"{path}: {e.strerror}: choose another -o") from None
    if stat.S_ISDIR(mode):
        raise Oci2vmError(f"{path}: is a directory")
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "special file")
        raise Oci2vmError(
            f"{path}: is a {kind}, and oci2vm replaces only regular files: choose another -o"
        )


_KINDS = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
}


@contextmanager
def scratch_beside(final: Path, suffix: str) -> Iterator[Path]:
    """An empty temporary file in `final`'s directory, removed afterwards whatever happens."""
    fd, name = tempfile.mkstemp(prefix=_scratch_prefix(final), suffix=suffix, dir=final.parent)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def replace_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` (its directory made) through a temporary file beside it, so
    that a reader finds the old file or the new one, whole; for the cache's small
    records. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
