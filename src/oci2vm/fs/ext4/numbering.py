"""Inode numbers, link counts and parents for a tree, in a deterministic order.

Per-inode facts live in flat arrays indexed by inode number (4 or 8 bytes each, not a dict
entry and two int objects): finish() holds them for every inode at once, the inode itself
as its row in the tree's store. An inode's number is kept on it (Inode.writer_key, checked
against `rows`, so any other number there is harmless), in the place of its key in the
writer's Placements, which moves to `file_key`.
Paths are not kept; path() rebuilds one when an error message needs it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import overload

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4.layout import LOST_FOUND_INO, ROOT_INO
from oci2vm.fs.ext4.placements import Placements
from oci2vm.tree.columns import KIND, WRITER_KEY, Store
from oci2vm.tree.model import KIND_CODES, Inode, Kind, new_dir

_NAME = itemgetter(0)  # of a (name, row) pair


class InodeRows(Sequence[Inode | None]):
    """The inodes by number, as rows of one store (None for a number no inode has)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows = array("i")

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Inode | None: ...
    @overload
    def __getitem__(self, index: slice) -> list[Inode | None]: ...
    def __getitem__(self, index: int | slice) -> Inode | list[Inode | None] | None:
        if isinstance(index, slice):
            return [None if r < 0 else Inode.at(self.store, r) for r in self.rows[index]]
        row = self.rows[index]
        return None if row < 0 else Inode.at(self.store, row)

    def __iter__(self) -> Iterator[Inode | None]:
        store = self.store
        for row in self.rows:
            yield None if row < 0 else Inode.at(store, row)

    def of_kind(self, kind: Kind) -> Iterator[tuple[int, Inode]]:
        """(number, inode) of every inode of one kind, read from the kind column: the other
        inodes cost no view."""
        store, kinds, code = self.store, self.store.cols[KIND], KIND_CODES[kind]
        for ino, row in enumerate(self.rows):
            if row >= 0 and kinds[row] == code:
                yield ino, Inode.at(store, row)

    def count_kind(self, kind: Kind, first: int, end: int) -> int:
        """How many of the inodes numbered first .. end - 1 are of `kind`."""
        kinds, code = self.store.cols[KIND], KIND_CODES[kind]
        return sum(1 for row in self.rows[first:end] if row >= 0 and kinds[row] == code)


class InodeNumbering:
    """Inode numbers in a deterministic order: root 2, lost+found 11, then every other
    inode in depth-first order of names sorted as bytes (a hardlinked inode at its first
    path). Also the link counts and, per inode, the directory of its first path (for a
    directory, its parent).

    The tree's own /lost+found is kept as it is: a directory (empty or not) is inode 11;
    anything else is numbered like any other entry, from 11 on, and the filesystem has no
    lost+found directory (e2fsck makes one when it needs it). Every inode number from 1
    to the last is then in use, as the inode bitmaps say."""

    def __init__(self, root: Inode, fs_time: int, placed: Placements | None = None) -> None:
        assert root.children is not None
        self.root = root
        self._placed = placed or Placements()
        lost_found = root.children.get("lost+found")
        self._extra: list[tuple[bytes, Inode]] = []
        if lost_found is None:
            lost_found = new_dir(0o700, mtime_ns=fs_time * 1_000_000_000, store=root.store)
            self._extra.append((b"lost+found", lost_found))
        # Inodes 1 .. 10 are reserved; 11 is lost+found's when it is a directory.
        first = LOST_FOUND_INO + 1 if lost_found.kind is Kind.DIR else LOST_FOUND_INO
        self.inodes = InodeRows(root.store)
        self.inodes.rows.extend([-1] * first)
        # By inode number: the file's key in `placed`, -1 for an inode it has not placed.
        self.file_key = array("q", [-1]) * first
        self._number(root, ROOT_INO)
        parent = array("I", bytes(4 * first))
        links = array("I", bytes(4 * first))
        parent[ROOT_INO] = ROOT_INO
        links[ROOT_INO] = 2  # '.' and the root's own '..'
        self.parent, self.links = parent, links  # (filled in below; path() reads parent)
        self.lost_found = 0
        if lost_found.kind is Kind.DIR:
            self._number(lost_found, LOST_FOUND_INO)
            self.lost_found = LOST_FOUND_INO
        # The walk reads the store's columns by row: a view per entry would cost more
        # than the rest of the numbering.
        store = self.inodes.store
        rows = self.inodes.rows
        kinds = store.cols[KIND]
        dir_code = kinds[root.row]
        stack = [(root.row, ROOT_INO)]
        seen_dirs = {ROOT_INO}
        while stack:
            dir_row, dir_ino = stack.pop()
            subdirs: list[tuple[int, int]] = []
            for name, row in self._child_rows(dir_row, dir_ino):
                ino = store.get(WRITER_KEY, row)
                if not (0 <= ino < len(rows) and rows[ino] == row):
                    ino = len(rows)
                    rows.append(-1)
                    self.file_key.append(-1)
                    self._number_row(row, ino)
                    parent.append(dir_ino)
                    links.append(0)
                links[ino] += 1
                if kinds[row] == dir_code:
                    if ino in seen_dirs:
                        where = self.path(dir_ino).rstrip("/")
                        text = name.decode("utf-8", "surrogateescape")
                        raise Oci2vmError(f"{where}/{text}: a directory cannot be hardlinked")
                    seen_dirs.add(ino)
                    parent[ino] = dir_ino
                    links[ino] += 1  # its '.'
                    links[dir_ino] += 1  # its '..'
                    subdirs.append((row, ino))
            stack.extend(reversed(subdirs))
        if len(self.inodes) > 1 << 32:
            raise Oci2vmError("too many files for ext4")

    def _number(self, inode: Inode, ino: int) -> None:
        if inode.store is not self.inodes.store:
            raise RuntimeError("a tree's inodes must all be in its root's store")
        self._number_row(inode.row, ino)

    def _number_row(self, row: int, ino: int) -> None:
        store = self.inodes.store
        self.inodes.rows[ino] = row
        key = self._placed.key_at(store, row, store.get(WRITER_KEY, row))
        self.file_key[ino] = -1 if key is None else key
        store.set(WRITER_KEY, row, ino)

    def ino(self, inode: Inode) -> int | None:
        """The inode's number, None for one not in the tree."""
        ino = inode.writer_key
        rows = self.inodes.rows
        ok = 0 <= ino < len(rows) and rows[ino] == inode.row and inode.store is self.inodes.store
        return ino if ok else None

    def children(self, directory: Inode) -> list[tuple[bytes, Inode]]:
        """A directory's entries, sorted by name."""
        store = self.inodes.store
        return [(name, Inode.at(store, row)) for name, row in self._child_rows(directory.row)]

    def numbered_entries(self, directory: Inode) -> list[tuple[bytes, int, int]]:
        """A directory's entries as (name, inode number, kind code), sorted by name: what
        its blocks hold, read from the columns without a view per entry."""
        store = self.inodes.store
        kinds = store.cols[KIND]
        return [
            (name, store.get(WRITER_KEY, row), kinds[row])
            for name, row in self._child_rows(directory.row, checked=True)
        ]

    def _child_rows(
        self, dir_row: int, dir_ino: int | None = None, *, checked: bool = False
    ) -> list[tuple[bytes, int]]:
        """A directory's entries as (name, row), sorted by name; `dir_ino`, the
        directory's number, names it in the error for a name ext4 cannot hold. `checked`:
        the names were checked already (the numbering walk reads every directory)."""
        store = self.inodes.store
        d_inode = store.d_inode
        items = [(store.name_of(entry), d_inode[entry]) for entry in store.entries(dir_row)]
        if dir_row == self.root.row:
            items += [(name, extra.row) for name, extra in self._extra]
        if checked:
            items.sort(key=_NAME)
            return items
        for name, _ in items:
            if name in (b".", b"..") or b"/" in name or b"\0" in name or not 0 < len(name) < 256:
                shown = name.decode("utf-8", "backslashreplace")
                shown = shown if len(shown) <= 64 else shown[:48] + "..." + shown[-8:]
                where = "" if dir_ino is None else f"in {self.path(dir_ino)}: "
                raise Oci2vmError(
                    f"{where}file name {shown!r} ({len(name)} bytes) cannot be stored in ext4 "
                    "(a name is 1 to 255 bytes, without '/' or NUL, not '.' or '..')"
                )
        items.sort(key=_NAME)
        return items

    def path(self, ino: int) -> str:
        """A path of inode `ino` (its first one), for messages: rebuilt by walking up,
        which costs a scan of each directory on the way."""
        parts: list[str] = []
        while ino != ROOT_INO:
            up = self.parent[ino]
            directory, inode = self.inodes[up], self.inodes[ino]
            if directory is None:
                break
            name = next((n for n, c in self.children(directory) if c == inode), b"?")
            parts.append(name.decode("utf-8", "surrogateescape"))
            ino = up
        return "/" + "/".join(reversed(parts))
