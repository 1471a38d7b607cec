"""Inode numbers, link counts and parents for a tree, in a deterministic order.

Per-inode facts live in flat arrays indexed by inode number (4 or 8 bytes each, not a dict
entry and two int objects): finish() holds them for every inode at once. An inode's number
is kept on it (Inode.writer_key, checked against `inodes`, so any other number there is
harmless), in the place of its key in the writer's Placements, which moves to `file_key`.
Paths are not kept; path() rebuilds one when an error message needs it.
"""

from __future__ import annotations

from array import array

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4.layout import LOST_FOUND_INO, ROOT_INO
from oci2vm.fs.ext4.placements import Placements
from oci2vm.tree.model import Inode, Kind, name_bytes, new_dir


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
            lost_found = new_dir(0o700, mtime_ns=fs_time * 1_000_000_000)
            self._extra.append((b"lost+found", lost_found))
        # Inodes 1 .. 10 are reserved; 11 is lost+found's when it is a directory.
        first = LOST_FOUND_INO + 1 if lost_found.kind is Kind.DIR else LOST_FOUND_INO
        self.inodes: list[Inode | None] = [None] * first
        # By inode number: the file's key in `placed`, -1 for an inode it has not placed.
        self.file_key = array("q", [-1]) * first
        self._number(root, ROOT_INO)
        parent = array("I", bytes(4 * first))
        links = array("I", bytes(4 * first))
        parent[ROOT_INO] = ROOT_INO
        links[ROOT_INO] = 2  # '.' and the root's own '..'
        self.lost_found = 0
        if lost_found.kind is Kind.DIR:
            self._number(lost_found, LOST_FOUND_INO)
            self.lost_found = LOST_FOUND_INO
        stack = [(root, ROOT_INO)]
        seen_dirs = {ROOT_INO}
        while stack:
            directory, dir_ino = stack.pop()
            subdirs: list[tuple[Inode, int]] = []
            for name, child in self.children(directory):
                ino = self.ino(child)
                if ino is None:
                    ino = len(self.inodes)
                    self.inodes.append(None)
                    self.file_key.append(-1)
                    self._number(child, ino)
                    parent.append(dir_ino)
                    links.append(0)
                links[ino] += 1
                if child.kind is Kind.DIR:
                    if ino in seen_dirs:
                        where = self.path(dir_ino).rstrip("/")
                        text = name.decode("utf-8", "surrogateescape")
                        raise Oci2vmError(f"{where}/{text}: a directory cannot be hardlinked")
                    seen_dirs.add(ino)
                    parent[ino] = dir_ino
                    links[ino] += 1  # its '.'
                    links[dir_ino] += 1  # its '..'
                    subdirs.append((child, ino))
            stack.extend(reversed(subdirs))
        self.links = links
        self.parent = parent
        if len(self.inodes) > 1 << 32:
            raise Oci2vmError("too many files for ext4")

    def _number(self, inode: Inode, ino: int) -> None:
        self.inodes[ino] = inode
        key = self._placed.key(inode)
        self.file_key[ino] = -1 if key is None else key
        inode.writer_key = ino

    def ino(self, inode: Inode) -> int | None:
        """The inode's number, None for one not in the tree."""
        ino = inode.writer_key
        inodes = self.inodes
        return ino if 0 <= ino < len(inodes) and inodes[ino] is inode else None

    def children(self, directory: Inode) -> list[tuple[bytes, Inode]]:
        assert directory.children is not None
        items = [(name_bytes(n), c) for n, c in directory.children.items()]
        if directory is self.root:
            items += self._extra
        for name, _ in items:
            if name in (b".", b"..") or b"/" in name or b"\0" in name or not 0 < len(name) < 256:
                raise Oci2vmError(f"file name {name!r} cannot be stored in ext4")
        items.sort(key=lambda item: item[0])
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
            name = next((n for n, c in self.children(directory) if c is inode), b"?")
            parts.append(name.decode("utf-8", "surrogateescape"))
            ino = up
        return "/" + "/".join(reversed(parts))
