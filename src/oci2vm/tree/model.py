"""The filesystem tree model shared by flattening (layers/flatten.py), OS preparation
(prepare/) and the filesystem writers (fs/).

A Tree is a root directory Inode. A directory maps names to Inodes; a hardlink group
is one Inode reached from several directory entries (its link count is derived, never
stored). File data is never held for image content: a regular file carries a DataRef
saying where its bytes live (a layer's uncompressed tar stream at an offset, or bytes
that preparation wrote), so a 10 GB image needs no more memory than a 100 MB one.
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


@dataclass(slots=True, eq=False)
class Inode:
    """One filesystem object. Identity matters: hardlinks share one Inode.

    mode holds the permission bits only (07777: includes setuid, setgid, sticky);
    the file type is `kind`. Times are integer nanoseconds since the Unix epoch and may
    be negative or past 2038.
    """

    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    atime_ns: int | None = None  # None: same as mtime
    ctime_ns: int | None = None  # None: same as mtime
    size: int = 0  # regular files: logical size (holes included); symlinks: len(target)
    # VFS names and values. Replace the mapping to change it: the default is one shared
    # read-only empty mapping (most inodes have none, and a tree holds every inode).
    xattrs: Mapping[str, bytes] = field(default_factory=lambda: NO_XATTRS)
    target: bytes | None = None  # symlink target, raw bytes
    rdev_major: int = 0
    rdev_minor: int = 0
    data: DataRef | None = None  # regular files with content
    children: dict[str, Inode] | None = None  # directories: name -> Inode, unsorted
    # The layer (0 = bottom) whose entry gave this inode its metadata; -1 for one no entry
    # did (a directory a layer leaves implicit, or one oci2vm made).
    layer: int = -1
    # A number the filesystem writer that last took this inode finds its state for it by
    # (fs/ext4/placements.py), checked by the writer as its own: a stale one is harmless.
    # On the inode rather than in a dict of the writer's: a dict entry and its key cost
    # ~100 bytes more per file (benchmarks/bench_tree.py).
    writer_key: int = field(default=-1, repr=False)

    @property
    def st_mode(self) -> int:
        return KIND_IFMT[self.kind] | (self.mode & 0o7777)

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR


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
