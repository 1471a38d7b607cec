"""Outputs that appear only when complete: a temporary file beside the output, renamed
into place at the end and removed on any error, and scratch files beside it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oci2vm.errors import Oci2vmError


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed to it on success, removed on failure."""
    path = path.absolute()
    if path.is_dir():
        raise Oci2vmError(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise Oci2vmError(f"{path.parent}: no such directory")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise Oci2vmError(
            f"{path.parent}: cannot create files there ({e.strerror}): choose another -o"
        ) from e
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def scratch_beside(final: Path, suffix: str) -> Iterator[Path]:
    """An empty temporary file in `final`'s directory, removed afterwards whatever happens."""
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
