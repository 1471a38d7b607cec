"""Reading the small files a user names (keys, passwords): with a size cap, so that
/dev/zero or a huge file given by mistake is a one-line error, not memory exhausted."""

from __future__ import annotations

from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.util.units import KIB


def read_small(path: Path, limit: int, what: str) -> bytes:
    """The whole content of `path`, at most `limit` bytes; `what` names it in errors."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise Oci2vmError(f"{what} {path}: {e.strerror}") from None
    if len(data) > limit:
        raise Oci2vmError(f"{what} {path}: larger than {_size(limit)}: is it the right file?")
    return data


def _size(limit: int) -> str:
    return f"{limit // KIB} KiB" if limit >= KIB else f"{limit} bytes"
