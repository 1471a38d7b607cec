"""The filesystem tree model shared by flattening (layers/flatten.py), OS preparation
(prepare/) and the filesystem writers (fs/).

A Tree is a root directory Inode. A directory maps names to Inodes; a hardlink group
is one Inode reached from several directory entries (its link count is derived, never
stored). File data is never held for image content: a regular file carries a DataRef
saying where its bytes live (a layer's uncompressed tar stream at an offset, bytes that
preparation wrote, or a FileSink that took them), so a 10 GB image needs no more memory
than a 100 MB one. Nor is an object held per entry: inodes and directory entries are rows
of typed arrays (tree/columns.py), and an Inode is a view of one, made when asked for; an
image of a million files holds a million rows of ~90 bytes (benchmarks/bench_tree.py).
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol, overload

from oci2vm.tree.columns import (
    ATIME,
    CHILDREN,
    CTIME,
    GID,
    KIND,
    LAYER,
    MODE,
    MTIME,
    NONE,
    OTHER,
    PAYLOAD,
    SENTINEL,
    SIZE,
    STREAMED,
    UID,
    WRITER_KEY,
    Store,
)

NO_XATTRS: Mapping[str, bytes] = MappingProxyType({})
# (uid_t)-1: chown(2)'s "leave it as it is", never an owner (Linux reads it back from an
# inode as the overflow id).
NO_ID = (1 << 32) - 1


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


class _Column:
    """An int column of an inode's row (tree/columns.py), as an attribute of the Inode."""

    __slots__ = ("column",)

    def __init__(self, column: int) -> None:
        self.column = column

    @overload
    def __get__(self, inode: None, owner: type) -> _Column: ...
    @overload
    def __get__(self, inode: Inode, owner: type) -> int: ...
    def __get__(self, inode: Inode | None, owner: type) -> _Column | int:
        if inode is None:
            return self
        value = inode._store.cols[self.column][inode._row]
        if value == SENTINEL[self.column]:
            return inode._store.wide[(self.column, inode._row)]
        return value

    def __set__(self, inode: Inode, value: int) -> None:
        inode._store.set(self.column, inode._row, value)


class _Time:
    """A time column of an inode's row: nanoseconds, or None."""

    __slots__ = ("column",)

    def __init__(self, column: int) -> None:
        self.column = column

    @overload
    def __get__(self, inode: None, owner: type) -> _Time: ...
    @overload
    def __get__(self, inode: Inode, owner: type) -> int | None: ...
    def __get__(self, inode: Inode | None, owner: type) -> _Time | int | None:
        if inode is None:
            return self
        return inode._store.get_time(self.column, inode._row)

    def __set__(self, inode: Inode, value: int | None) -> None:
        inode._store.set_time(self.column, inode._row, value)


class Inode:
    """One filesystem object: a view of a row of its tree's Store (tree/columns.py), so a
    tree of a million entries is a million rows of typed arrays, not a million objects.
    Views of one row are equal (and hash alike): hardlinks are one row, reached from
    several directory entries (its link count is derived, never stored). Compare inodes
    with ==, not `is`: each lookup may make a new view.

    mode holds the permission bits only (07777: includes setuid, setgid, sticky);
    the file type is `kind`. Times are integer nanoseconds since the Unix epoch and may
    be negative or past 2038.

    What only one kind of inode has (a file's data, a directory's children, a symlink's
    target, a device's numbers) shares one slot, read and set through properties: setting
    one of those four to a value replaces whichever the slot held; setting it to None (or a
    device's numbers to 0:0) clears it only if it held that one.

    An Inode made without a store gets a store of its own; placing it in a directory of
    another store copies its row (and everything below it) there, and the Inode placed
    then refers to the copy. Other views of the old row still see the old one.
    """

    __slots__ = ("_row", "_store")

    _store: Store
    _row: int

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
        children: Mapping[str, Inode] | None = None,
        layer: int = -1,
        writer_key: int = -1,
        store: Store | None = None,
    ) -> None:
        store = Store() if store is None else store
        self._store = store
        # The payload slot: the last of these given wins, as setting them in turn would.
        # What needs no more than the row's own columns is set with it.
        payload = NONE
        rest: object = None
        if children is not None:
            if children:
                rest = children
            else:
                payload = CHILDREN
        elif data is not None:
            if isinstance(data, StreamedData) and data.stored_size == size:
                payload = STREAMED
            else:
                rest = data
        elif rdev_major or rdev_minor:
            rest = (rdev_major, rdev_minor)
        elif target is not None:
            rest = target
        self._row = row = store.add_row(
            (_KIND_CODE[kind], payload, mode, uid, gid, mtime_ns, size, layer, writer_key, -1, -1)
        )
        if atime_ns is not None:
            store.set_time(ATIME, row, atime_ns)
        if ctime_ns is not None:
            store.set_time(CTIME, row, ctime_ns)
        if xattrs:
            store.xattrs[row] = xattrs
        if rest is not None:
            if children is not None:
                self.children = children
            else:
                self._set_payload(rest)

    @staticmethod
    def at(store: Store, row: int) -> Inode:
        """The view of row `row` of `store`."""
        view = _new_view(Inode)
        view._store = store
        view._row = row
        return view

    @property
    def store(self) -> Store:
        return self._store

    @property
    def row(self) -> int:
        return self._row

    def now(self) -> Inode:
        """This inode where it is now: a view of the row it was copied to, if it was placed
        in another store's tree since this view was made (see Store.copy_from)."""
        store, row = self._store.resolve(self._row)
        return self if store is self._store else Inode.at(store, row)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Inode):
            return NotImplemented
        return self._row == other._row and self._store is other._store

    def __hash__(self) -> int:
        return self._row ^ id(self._store)

    # --- columns -------------------------------------------------------------------------

    mode = _Column(MODE)
    uid = _Column(UID)
    gid = _Column(GID)
    mtime_ns = _Column(MTIME)
    atime_ns = _Time(ATIME)  # None: the same as mtime
    ctime_ns = _Time(CTIME)  # None: the same as mtime
    # The layer (0 = bottom) whose entry gave this inode its metadata; -1 for one no entry
    # did (a directory a layer leaves implicit, or one oci2vm made).
    layer = _Column(LAYER)
    # A number the filesystem writer that last took this inode finds its state for it by
    # (fs/ext4/placements.py), checked by the writer as its own: a stale one is harmless.
    writer_key = _Column(WRITER_KEY)

    @property
    def kind(self) -> Kind:
        return _KINDS[self._store.cols[KIND][self._row]]

    @kind.setter
    def kind(self, value: Kind) -> None:
        self._store.cols[KIND][self._row] = _KIND_CODE[value]

    @property
    def size(self) -> int:
        """Regular files: logical size (holes included); symlinks: len(target)."""
        value = self._store.cols[SIZE][self._row]
        if value == SENTINEL[SIZE]:
            return self._store.wide[(SIZE, self._row)]
        return value

    @size.setter
    def size(self, value: int) -> None:
        store, row = self._store, self._row
        if store.cols[PAYLOAD][row] == STREAMED:
            # Its StreamedData was this size: it keeps its own now.
            old = store.get(SIZE, row)
            if old != value:
                store.other[row] = StreamedData(old)
                store.cols[PAYLOAD][row] = OTHER
        store.set(SIZE, row, value)

    @property
    def xattrs(self) -> Mapping[str, bytes]:
        """VFS names and values. Replace the mapping to change it."""
        return self._store.xattrs.get(self._row, NO_XATTRS)

    @xattrs.setter
    def xattrs(self, value: Mapping[str, bytes]) -> None:
        if value:
            self._store.xattrs[self._row] = value
        else:
            self._store.xattrs.pop(self._row, None)

    # --- the payload slot --------------------------------------------------------------

    def _payload(self) -> object:
        store, row = self._store, self._row
        held = store.cols[PAYLOAD][row]
        if held == NONE:
            return None
        if held == OTHER:
            return store.other[row]
        if held == STREAMED:
            return StreamedData(store.get(SIZE, row))
        return Children(store, row)

    def _set_payload(self, value: object) -> None:
        store, row = self._store, self._row
        payloads = store.cols[PAYLOAD]
        assert payloads is not None
        held = payloads[row]
        if held == CHILDREN:
            store.clear(row)
        elif held == OTHER:
            del store.other[row]
        if value is None:
            payloads[row] = NONE
        elif isinstance(value, StreamedData) and value.stored_size == store.get(SIZE, row):
            payloads[row] = STREAMED
        else:
            payloads[row] = OTHER
            store.other[row] = value

    @property
    def target(self) -> bytes | None:
        """A symlink's target, raw bytes."""
        payload = self._payload()
        return payload if isinstance(payload, bytes) else None

    @target.setter
    def target(self, value: bytes | None) -> None:
        if value is not None or isinstance(self._payload(), bytes):
            self._set_payload(value)

    @property
    def data(self) -> DataRef | None:
        """Where a regular file's stored bytes are; None for a file without any."""
        payload = self._payload()
        return payload if isinstance(payload, _DATA_TYPES) else None

    @data.setter
    def data(self, value: DataRef | None) -> None:
        if value is not None or isinstance(self._payload(), _DATA_TYPES):
            self._set_payload(value)

    @property
    def children(self) -> Children | None:
        """A directory's entries: name -> Inode, in the order they were made."""
        if self._store.cols[PAYLOAD][self._row] == CHILDREN:
            return Children(self._store, self._row)
        return None

    @children.setter
    def children(self, value: Mapping[str, Inode] | None) -> None:
        store, row = self._store, self._row
        if value is None:
            if store.cols[PAYLOAD][row] == CHILDREN:
                self._set_payload(None)
            return
        items = list(value.items())  # (it may be this directory's own)
        self._set_payload(None)
        store.cols[PAYLOAD][row] = CHILDREN
        mine = Children(store, row)
        for name, child in items:
            mine[name] = child

    @property
    def rdev_major(self) -> int:
        payload = self._payload()
        return payload[0] if isinstance(payload, tuple) else 0

    @rdev_major.setter
    def rdev_major(self, value: int) -> None:
        self._set_rdev(value, self.rdev_minor)

    @property
    def rdev_minor(self) -> int:
        payload = self._payload()
        return payload[1] if isinstance(payload, tuple) else 0

    @rdev_minor.setter
    def rdev_minor(self, value: int) -> None:
        self._set_rdev(self.rdev_major, value)

    def _set_rdev(self, major: int, minor: int) -> None:
        if major or minor:
            self._set_payload((major, minor))
        elif isinstance(self._payload(), tuple):
            self._set_payload(None)

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


class Children(MutableMapping[str, Inode]):
    """A directory's entries, name -> Inode (a view of its store's entry rows). Setting
    an entry to an Inode of another store copies that inode here (see Inode)."""

    __slots__ = ("_row", "_store")

    def __init__(self, store: Store, row: int) -> None:
        self._store = store
        self._row = row

    def _find(self, name: str) -> int:
        return self._store.find(self._row, name.encode("utf-8", "surrogateescape"))

    def __getitem__(self, name: str) -> Inode:
        store = self._store
        entry = store.find(self._row, name.encode("utf-8", "surrogateescape"))
        if entry < 0:
            raise KeyError(name)
        view = _new_view(Inode)
        view._store = store
        view._row = store.d_inode[entry]
        return view

    def get(self, name: str, default: Inode | None = None) -> Inode | None:  # type: ignore[override]
        store = self._store
        entry = store.find(self._row, name.encode("utf-8", "surrogateescape"))
        if entry < 0:
            return default
        view = _new_view(Inode)
        view._store = store
        view._row = store.d_inode[entry]
        return view

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) >= 0

    def __setitem__(self, name: str, inode: Inode) -> None:
        store = self._store
        if inode._store is not store:
            source, row = inode._store.resolve(inode._row)
            row = row if source is store else store.copy_from(source, row)
            inode._store, inode._row = store, row
        store.link(self._row, name.encode("utf-8", "surrogateescape"), inode._row)

    def __delitem__(self, name: str) -> None:
        if not self._store.unlink(self._row, name.encode("utf-8", "surrogateescape")):
            raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        store = self._store
        for entry in store.entries(self._row):
            yield store.name_of(entry).decode("utf-8", "surrogateescape")

    def __len__(self) -> int:
        return sum(1 for _ in self._store.entries(self._row))

    def __bool__(self) -> bool:
        return self._store.has_entries(self._row)

    def named(self) -> Iterator[tuple[bytes, Inode]]:
        """(name as bytes, inode) for every entry, in the order they were made."""
        store = self._store
        d_inode = store.d_inode
        for entry in store.entries(self._row):
            yield store.name_of(entry), Inode.at(store, d_inode[entry])

    def items(self) -> ItemsView[str, Inode]:
        return _Items(self)

    def values(self) -> ValuesView[Inode]:
        return _Values(self)

    def __repr__(self) -> str:
        return f"Children({dict(self.items())!r})"


class _Items(ItemsView[str, Inode]):
    _mapping: Children

    def __iter__(self) -> Iterator[tuple[str, Inode]]:
        for name, inode in self._mapping.named():
            yield name.decode("utf-8", "surrogateescape"), inode


class _Values(ValuesView[Inode]):
    _mapping: Children

    def __iter__(self) -> Iterator[Inode]:
        for _name, inode in self._mapping.named():
            yield inode


_new_view = object.__new__
_KINDS = tuple(Kind)
_KIND_CODE = {kind: code for code, kind in enumerate(_KINDS)}
KIND_CODES: Mapping[Kind, int] = MappingProxyType(_KIND_CODE)  # Kind -> its code in the KIND column
_DATA_TYPES = (LayerData, BytesData, StreamedData)
_REPR_FIELDS = (
    "kind", "mode", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns", "size", "xattrs",
    "target", "rdev_major", "rdev_minor", "data", "children", "layer",
)  # fmt: skip
_REPR_DEFAULTS: dict[str, object] = {
    "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0, "atime_ns": None, "ctime_ns": None,
    "size": 0, "xattrs": NO_XATTRS, "target": None, "rdev_major": 0, "rdev_minor": 0,
    "data": None, "children": None, "layer": -1,
}  # fmt: skip


def new_dir(
    mode: int = 0o755, uid: int = 0, gid: int = 0, mtime_ns: int = 0, store: Store | None = None
) -> Inode:
    return Inode(Kind.DIR, mode=mode, uid=uid, gid=gid, mtime_ns=mtime_ns, children={}, store=store)


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
    """Directory entries below root (a hardlinked inode counts once per name), counted
    from the store's rows: no view per entry (a tree's entries are all in its root's
    store)."""
    assert root.children is not None
    store = root.store
    payloads, d_inode = store.cols[PAYLOAD], store.d_inode
    total = 0
    stack = [root.row]
    while stack:
        for entry in store.entries(stack.pop()):
            total += 1
            child = d_inode[entry]
            if payloads[child] == CHILDREN:
                stack.append(child)
    return total


def link_counts(root: Inode) -> dict[Inode, int]:
    """Map inode -> link count as ext4 counts it: one per directory entry, plus for a
    directory its '.' and one per subdirectory's '..'."""
    counts: dict[Inode, int] = {root: 2}
    for _path, inode in walk(root):
        if inode == root:
            continue
        counts[inode] = counts.get(inode, 0) + (2 if inode.kind is Kind.DIR else 1)
    for _path, inode in walk(root):
        if inode.children is not None:
            subdirs = sum(1 for c in inode.children.values() if c.kind is Kind.DIR)
            counts[inode] += subdirs
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
    notes: list[str] = field(default_factory=list)  # what the user should know of it

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
