"""The filesystem tree model shared by flattening (layers/flatten.py), OS preparation
(prepare/) and the filesystem writers (fs/).

A Tree is a root directory Inode. A directory maps names to Inodes; a hardlink group
is one Inode reached from several directory entries (its link count is derived, never
stored). File data is never held for image content: a regular file carries a DataRef
saying where its bytes live (a layer's uncompressed tar stream at an offset, bytes that
preparation wrote, or a FileSink that took them), so a 10 GB image needs no more memory
than a 100 MB one. What the tree holds per entry is kept small (see Inode): an image of a
million files holds a million of them (benchmarks/bench_tree.py).
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

NO_XATTRS: Mapping[str, bytes] = MappingProxyType({})


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    SOCKET = "socket"


# The S_IFMT bits for each kind, as stored in an inode's i_mode.
KIND_IFMT: dict[Kind, int] = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.CHAR: stat.S_IFCHR,
    Kind.BLOCK: stat.S_IFBLK,
    Kind.FIFO: stat.S_IFIFO,
    Kind.SOCKET: stat.S_IFSOCK,
}


@dataclass(frozen=True, slots=True)
class LayerData:
    """File bytes stored in a layer's uncompressed tar stream.

    `offset` is where the member's stored data begins in the uncompressed stream of
    layer number `layer` (0 = bottom). `sparse` is the sparse map: (logical offset,
    length) pairs in file order; the stored data is those regions back to back, and
    everything else up to the inode's size is a hole. None means dense: the stored data
    is the whole file (the usual case, kept without a map: the tree holds one of these
    per file).
    """

    layer: int
    offset: int
    stored_size: int
    sparse: tuple[tuple[int, int], ...] | None = None

    @property
    def regions(self) -> tuple[tuple[int, int], ...]:
        """The sparse map, or for a dense file its one region (none when empty)."""
        if self.sparse is not None:
            return self.sparse
        return ((0, self.stored_size),) if self.stored_size else ()


@dataclass(frozen=True, slots=True)
class BytesData:
    """File bytes produced by oci2vm itself (OS preparation, tests), held in memory.

    `content` is the stored bytes: the regions back to back. `sparse` is the sparse map
    in the same form as LayerData.regions; None means dense (one region, or none when
    content is empty).
    """

    content: bytes
    sparse: tuple[tuple[int, int], ...] | None = None

    @property
    def stored_size(self) -> int:
        return len(self.content)

    @property
    def regions(self) -> tuple[tuple[int, int], ...]:
        if self.sparse is not None:
            return self.sparse
        return ((0, len(self.content)),) if self.content else ()


@dataclass(frozen=True, slots=True)
class StreamedData:
    """File bytes handed to the FileSink, never held in memory: content a preparation
    step injects (a kernel's modules), and a layer's dense file once flattening delivered
    it to a sink (which alone needs to know where its bytes went; one object per size
    then serves every such file). `stored_size` bytes, dense."""

    stored_size: int

    @property
    def regions(self) -> tuple[tuple[int, int], ...]:
        return ((0, self.stored_size),) if self.stored_size else ()


DataRef = LayerData | BytesData | StreamedData


class DataReader(Protocol):
    """A file's stored bytes, handed out in pieces that need not be copied."""

    def view(self, size: int, /) -> memoryview:
        """Up to `size` bytes: at least one while any are left, then empty. A piece
        never changes afterwards, so it may be held (a writer gathers them)."""
        ...


class BytesReader:
    """A DataReader over bytes in memory."""

    def __init__(self, content: bytes) -> None:
        self._view = memoryview(content)

    def view(self, size: int) -> memoryview:
        piece, self._view = self._view[:size], self._view[size:]
        return piece


class FileSink(Protocol):
    """Receives a regular file's stored bytes while layers stream (see tree.flatten).

    `data` gives exactly inode.data.stored_size bytes: the inode's data regions back to
    back. It is valid only during the call.
    """

    def __call__(self, inode: Inode, data: DataReader, /) -> None: ...


class Inode:
    """One filesystem object. Identity matters: hardlinks share one Inode.

    mode holds the permission bits only (07777: includes setuid, setgid, sticky);
    the file type is `kind`. Times are integer nanoseconds since the Unix epoch and may
    be negative or past 2038.

    A tree holds one of these per entry, so it is kept small: what only one kind of inode
    has (a file's data, a directory's children, a symlink's target, a device's numbers)
    shares one slot, read and set through properties, and values many inodes have are one
    shared object (NO_XATTRS; flattening shares equal ints). Setting one of those four to
    a value replaces whichever the slot held; setting it to None (or a device's numbers to
    0:0) clears it only if it held that one.
    """

    __slots__ = (
        "_payload",
        "atime_ns",
        "ctime_ns",
        "gid",
        "kind",
        "layer",
        "mode",
        "mtime_ns",
        "size",
        "uid",
        "writer_key",
        "xattrs",
    )

    def __init__(
        self,
        kind: Kind,
        *,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime_ns: int = 0,
        atime_ns: int | None = None,
        ctime_ns: int | None = None,
        size: int = 0,
        xattrs: Mapping[str, bytes] = NO_XATTRS,
        target: bytes | None = None,
        rdev_major: int = 0,
        rdev_minor: int = 0,
        data: DataRef | None = None,
        children: dict[str, Inode] | None = None,
        layer: int = -1,
        writer_key: int = -1,
    ) -> None:
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.atime_ns = atime_ns  # None: same as mtime
        self.ctime_ns = ctime_ns  # None: same as mtime
        self.size = size  # regular files: logical size (holes included); symlinks: len(target)
        # VFS names and values. Replace the mapping to change it: the default is one shared
        # read-only empty mapping (most inodes have none, and a tree holds every inode).
        self.xattrs = xattrs
        # The layer (0 = bottom) whose entry gave this inode its metadata; -1 for one no
        # entry did (a directory a layer leaves implicit, or one oci2vm made).
        self.layer = layer
        # A number the filesystem writer that last took this inode finds its state for it
        # by (fs/ext4/placements.py), checked by the writer as its own: a stale one is
        # harmless. On the inode rather than in a dict of the writer's: a dict entry and
        # its key cost ~100 bytes more per file (benchmarks/bench_tree.py).
        self.writer_key = writer_key
        self._payload: _Payload = None
        self.target = target
        if rdev_major or rdev_minor:
            self._payload = (rdev_major, rdev_minor)
        self.data = data
        self.children = children

    @property
    def target(self) -> bytes | None:
        """A symlink's target, raw bytes."""
        payload = self._payload
        return payload if isinstance(payload, bytes) else None

    @target.setter
    def target(self, value: bytes | None) -> None:
        if value is not None or isinstance(self._payload, bytes):
            self._payload = value

    @property
    def data(self) -> DataRef | None:
        """Where a regular file's stored bytes are; None for a file without any."""
        payload = self._payload
        return payload if isinstance(payload, _DATA_TYPES) else None

    @data.setter
    def data(self, value: DataRef | None) -> None:
        if value is not None or isinstance(self._payload, _DATA_TYPES):
            self._payload = value

    @property
    def children(self) -> dict[str, Inode] | None:
        """A directory's entries: name -> Inode, unsorted."""
        payload = self._payload
        return payload if isinstance(payload, dict) else None

    @children.setter
    def children(self, value: dict[str, Inode] | None) -> None:
        if value is not None or isinstance(self._payload, dict):
            self._payload = value

    @property
    def rdev_major(self) -> int:
        payload = self._payload
        return payload[0] if isinstance(payload, tuple) else 0

    @rdev_major.setter
    def rdev_major(self, value: int) -> None:
        self._set_rdev(value, self.rdev_minor)

    @property
    def rdev_minor(self) -> int:
        payload = self._payload
        return payload[1] if isinstance(payload, tuple) else 0

    @rdev_minor.setter
    def rdev_minor(self, value: int) -> None:
        self._set_rdev(self.rdev_major, value)

    def _set_rdev(self, major: int, minor: int) -> None:
        if major or minor:
            self._payload = (major, minor)
        elif isinstance(self._payload, tuple):
            self._payload = None

    @property
    def st_mode(self) -> int:
        return KIND_IFMT[self.kind] | (self.mode & 0o7777)

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in _REPR_FIELDS
            if name == "kind" or getattr(self, name) != _REPR_DEFAULTS.get(name)
        )
        return f"Inode({fields})"


_DATA_TYPES = (LayerData, BytesData, StreamedData)
_Payload = bytes | DataRef | dict[str, Inode] | tuple[int, int] | None
_REPR_FIELDS = (
    "kind", "mode", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns", "size", "xattrs",
    "target", "rdev_major", "rdev_minor", "data", "children", "layer",
)  # fmt: skip
_REPR_DEFAULTS: dict[str, object] = {
    "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0, "atime_ns": None, "ctime_ns": None,
    "size": 0, "xattrs": NO_XATTRS, "target": None, "rdev_major": 0, "rdev_minor": 0,
    "data": None, "children": None, "layer": -1,
}  # fmt: skip


def new_dir(mode: int = 0o755, uid: int = 0, gid: int = 0, mtime_ns: int = 0) -> Inode:
    return Inode(Kind.DIR, mode=mode, uid=uid, gid=gid, mtime_ns=mtime_ns, children={})


def name_bytes(name: str) -> bytes:
    """Names are str decoded with surrogateescape, so any byte string round-trips."""
    return name.encode("utf-8", "surrogateescape")


def walk(root: Inode, prefix: str = "") -> Iterator[tuple[str, Inode]]:
    """Yield (path, inode) for every directory entry below root, in sorted name order,
    parents before children; paths are '/'-joined and begin with '/'. The root itself
    is yielded first as '/'. A hardlinked inode is yielded once per path. Iterative: a
    tree's depth is the image's to choose, and no recursion limit applies to it."""
    if not prefix:
        yield "/", root
    assert root.children is not None
    stack = [(prefix, _sorted_children(root))]
    while stack:
        base, pending = stack[-1]
        if not pending:
            stack.pop()
            continue
        name, child = pending.pop()
        path = f"{base}/{name}"
        yield path, child
        if child.children is not None:
            stack.append((path, _sorted_children(child)))


def _sorted_children(directory: Inode) -> list[tuple[str, Inode]]:
    """A directory's entries in reverse name order, to be popped in name order."""
    assert directory.children is not None
    names = sorted(directory.children, key=name_bytes, reverse=True)
    return [(name, directory.children[name]) for name in names]


def count_entries(root: Inode) -> int:
    """Directory entries below root (a hardlinked inode counts once per name)."""
    total = 0
    stack = [root]
    while stack:
        directory = stack.pop()
        assert directory.children is not None
        total += len(directory.children)
        stack.extend(c for c in directory.children.values() if c.children is not None)
    return total


def link_counts(root: Inode) -> dict[int, int]:
    """Map id(inode) -> link count as ext4 counts it: one per directory entry, plus for
    a directory its '.' and one per subdirectory's '..'."""
    counts: dict[int, int] = {id(root): 2}
    for _path, inode in walk(root):
        if inode is root:
            continue
        if inode.kind is Kind.DIR:
            counts[id(inode)] = counts.get(id(inode), 0) + 2
        else:
            counts[id(inode)] = counts.get(id(inode), 0) + 1
    for _path, inode in walk(root):
        if inode.children is not None:
            subdirs = sum(1 for c in inode.children.values() if c.kind is Kind.DIR)
            counts[id(inode)] += subdirs
    return counts


def lookup(root: Inode, path: str) -> Inode | None:
    """Find the inode at an absolute path, following no symlinks."""
    node = root
    for part in path.strip("/").split("/"):
        if not part:
            continue
        if node.children is None:
            return None
        nxt = node.children.get(part)
        if nxt is None:
            return None
        node = nxt
    return node


@dataclass
class Tree:
    """A flattened image: its root, what reading the layers computed, and the content of the
    small files flattening kept (see layers.flatten's `capture`), by inode."""

    root: Inode
    diff_ids: list[str] = field(default_factory=list)  # computed while reading
    layer_digests: list[str] = field(default_factory=list)  # of the blobs as stored
    captured: dict[Inode, bytes] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        """Directory entries in the tree as it is now, the root excluded."""
        return count_entries(self.root)

    def content(self, inode: Inode) -> bytes | None:
        """A regular file's bytes, when they are in memory: written by oci2vm, captured
        while flattening, or no data at all (an empty or all-hole file); else None."""
        if inode.kind is not Kind.FILE:
            return None
        if isinstance(inode.data, BytesData):
            if inode.data.sparse is not None:
                return None
            return inode.data.content
        if inode.data is None:
            return bytes(inode.size)
        return self.captured.get(inode)

    def read(self, path: str) -> bytes | None:
        """The bytes of the file at `path` (symlinks followed inside the tree), when in
        memory; see content()."""
        found = resolve_link(self.root, path)
        return None if found is None else self.content(found[1])


SYMLINK_DEPTH = 40  # as Linux's MAXSYMLINKS


def resolve_link(root: Inode, path: str, depth: int = 0) -> tuple[str, Inode] | None:
    """Follow symlinks inside the tree (never outside it: '..' stops at the root) to a
    non-link entry; returns its real path and inode, or None if there is none."""
    while depth <= SYMLINK_DEPTH:
        node = root
        parts = [p for p in path.split("/") if p]
        current = "/"
        for i, part in enumerate(parts):
            if node.children is None:
                return None
            child = node.children.get(part)
            if child is None:
                return None
            current = posixpath.join(current, part)
            if child.kind is Kind.SYMLINK and child.target is not None:
                target = child.target.decode("utf-8", "surrogateescape")
                base = "/" if target.startswith("/") else posixpath.dirname(current)
                rest = "/".join(parts[i + 1 :])
                path = posixpath.normpath(posixpath.join(base, target, rest))
                depth += 1
                break
            node = child
        else:
            return current, node
    return None
