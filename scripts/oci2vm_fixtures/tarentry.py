"""TarEntry, one tar member as the recipes describe it, and the order Docker writes members in
(Go's filepath.Walk); resolve_links turns hardlink groups into a first name and its links."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

EPOCH = 1_700_000_000  # the mtime of every entry that sets none (busybox, archive members)
MIB = 1 << 20
NS = 1_000_000_000

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]


def enc(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def walk_key(path: str) -> tuple[bytes, ...]:
    """Go's filepath.Walk order (what Docker writes): lexical by path component."""
    return tuple(enc(part) for part in path.split("/"))


@dataclass
class TarEntry:
    """One tar member. `path` is relative, without "./", leading or trailing "/"."""

    path: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = EPOCH * NS
    data: bytes = b""
    source: Path | None = None  # stream this file's bytes instead of `data`
    size: int = 0  # of `source`; for `sparse`, the logical size
    linkname: str = ""
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    sparse: tuple[tuple[int, bytes], ...] = ()  # (offset, bytes) data regions
    group: str = ""  # hardlink group: the first member in tar order carries the data

    @property
    def data_size(self) -> int:
        if self.sparse:
            return self.size
        return self.size if self.source is not None else len(self.data)


def resolve_links(entries: Iterable[TarEntry]) -> list[TarEntry]:
    """Sort into walk order; later members of a hardlink group become links to the first."""
    ordered = sorted(entries, key=lambda e: walk_key(e.path))
    first: dict[str, str] = {}
    out: list[TarEntry] = []
    for entry in ordered:
        if entry.group and entry.kind == "file":
            if entry.group in first:
                entry = replace(
                    entry, kind="hardlink", linkname=first[entry.group], data=b"", source=None
                )
            else:
                first[entry.group] = entry.path
        out.append(entry)
    return out
