"""Inode numbers, link counts and parents for a tree, in a deterministic order."""

from __future__ import annotations

from oci2vm.entry import Inode, Kind, name_bytes, new_dir
from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4.layout import LOST_FOUND_INO, ROOT_INO


class InodeNumbering:
    """Inode numbers in a deterministic order: root 2, lost+found 11, then every other
    inode in depth-first order of names sorted as bytes (a hardlinked inode at its first
    path). Also the link counts, each directory's parent and a path per inode."""

    def __init__(self, root: Inode, fs_time: int) -> None:
        assert root.children is not None
        self.root = root
        lost_found = root.children.get("lost+found")
        self._extra: list[tuple[bytes, Inode]] = []
        if lost_found is None:
            lost_found = new_dir(0o700, mtime_ns=fs_time * 1_000_000_000)
            self._extra.append((b"lost+found", lost_found))
        self.inodes: list[Inode | None] = [None] * (LOST_FOUND_INO + 1)
        self.inodes[ROOT_INO] = root
        self.ino_of: dict[int, int] = {id(root): ROOT_INO}
        self.paths: dict[int, str] = {ROOT_INO: "/"}
        self.parent: dict[int, int] = {ROOT_INO: ROOT_INO}
        self.lost_found = 0
        if lost_found.kind is Kind.DIR:
            self.inodes[LOST_FOUND_INO] = lost_found
            self.ino_of[id(lost_found)] = LOST_FOUND_INO
            self.paths[LOST_FOUND_INO] = "/lost+found"
            self.lost_found = LOST_FOUND_INO
        links: dict[int, int] = {ROOT_INO: 2}  # '.' and the root's own '..'
        stack = [(root, ROOT_INO, "")]
        while stack:
            directory, dir_ino, prefix = stack.pop()
            subdirs: list[tuple[Inode, int, str]] = []
            for name, child in self.children(directory):
                path = f"{prefix}/{name.decode('utf-8', 'surrogateescape')}"
                ino = self.ino_of.get(id(child))
                if ino is None:
                    ino = len(self.inodes)
                    self.inodes.append(child)
                    self.ino_of[id(child)] = ino
                    self.paths[ino] = path
                links[ino] = links.get(ino, 0) + 1
                if child.kind is Kind.DIR:
                    if ino in self.parent:
                        raise Oci2vmError(f"{path}: a directory cannot be hardlinked")
                    self.parent[ino] = dir_ino
                    links[ino] += 1  # its '.'
                    links[dir_ino] += 1  # its '..'
                    subdirs.append((child, ino, path))
            stack.extend(reversed(subdirs))
        self.links = links
        if len(self.inodes) > 1 << 32:
            raise Oci2vmError("too many files for ext4")

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
