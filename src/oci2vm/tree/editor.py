"""Adding, replacing and removing entries of a flattened tree, and reading its files
(captured while flattening, or read back from the filesystem being written): what
preparation steps use to edit the tree."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import (
    SYMLINK_DEPTH,
    BytesData,
    DataReader,
    FileSink,
    Inode,
    Kind,
    StreamedData,
    Tree,
    new_dir,
    resolve_link,
)

# Reads a streamed file's bytes back from the filesystem being written (Ext4Writer.read_file).
ReadBack = Callable[[Inode, int], "bytes | None"]
TEXT_LIMIT = 64 << 20  # a configuration file read to be edited (/etc/passwd of many users)
MAX_LINK_HOPS = SYMLINK_DEPTH  # dangling links followed to make what they lead to


def text_lines(text: str) -> list[str]:
    """A configuration file's lines, ends kept, split at newlines only (str.splitlines()
    also splits at form feeds, U+0085, U+2028 and more, which a field may hold)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


class TreeEditor:
    """Edits a tree on behalf of preparation steps; every new entry gets `mtime`.

    Small files are written from bytes in memory; large ones (injected content) are
    streamed to `sink`, the filesystem writer's FileSink, as layer data is.
    """

    def __init__(
        self,
        tree: Tree,
        mtime_s: int,
        sink: FileSink | None = None,
        read_back: ReadBack | None = None,
    ) -> None:
        self.tree = tree
        self.mtime_ns = mtime_s * 1_000_000_000
        self.sink = sink
        self.read_back = read_back
        self._hops = 0  # symlinks followed to make their directories (_link_dir)

    def _parent(self, path: str, create: bool = True) -> tuple[Inode, str] | None:
        """The directory holding `path` and the last name; parents that are symlinks are
        followed inside the tree (Debian's /lib -> usr/lib), missing ones created. '.' and
        '..' are taken by their names, as resolve_link() takes a link's target (a home
        of /home/../srv/x in an image's passwd is /srv/x)."""
        parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
        if not parts:
            raise Oci2vmError(f"cannot replace {path!r}: it is the root directory")
        node = self.tree.root
        for i, part in enumerate(parts[:-1]):
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = new_dir(mtime_ns=self.mtime_ns)
                node.children[part] = child
            if child.kind is Kind.SYMLINK:
                found = resolve_link(self.tree.root, "/" + "/".join(parts[: i + 1]))
                if found is None:
                    if not create:
                        return None
                    made = self._link_dir("/" + "/".join(parts[: i + 1]), child)
                    if made is None:
                        raise Oci2vmError(f"cannot write {path}: {part} is a dangling symlink")
                    child = made
                else:
                    child = found[1]
            if child.kind is not Kind.DIR:
                if not create:
                    return None
                raise Oci2vmError(f"cannot write {path}: {part} is not a directory in the image")
            node = child
        return node, parts[-1]

    def get(self, path: str) -> Inode | None:
        """The entry at `path` (its parents' symlinks followed, not its own)."""
        if not posixpath.normpath("/" + path).strip("/"):
            return self.tree.root
        found = self._parent(path, create=False)
        if found is None or found[0].children is None:
            return None
        return found[0].children.get(found[1])

    def directory(self, path: str) -> Inode | None:
        """The directory at `path`, symlinks followed inside the tree (an image's /etc/ssh
        -> ../usr/etc/ssh), or None where there is none."""
        found = resolve_link(self.tree.root, posixpath.normpath("/" + path))
        if found is None or found[1].kind is not Kind.DIR:
            return None
        return found[1]

    def read_text(self, path: str, limit: int = TEXT_LIMIT) -> str | None:
        """read_file() as text: bytes that are no UTF-8 (a Latin-1 name in passwd) are
        kept as they are through write_text()."""
        data = self.read_file(path, limit)
        return None if data is None else data.decode("utf-8", "surrogateescape")

    def write_text(
        self,
        path: str,
        text: str,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        new_mode: int = 0o644,
    ) -> Inode:
        """write() of text that read_text() gave, its undecodable bytes as they were."""
        content = text.encode("utf-8", "surrogateescape")
        return self.write(path, content, mode=mode, uid=uid, gid=gid, new_mode=new_mode)

    def read_file(self, path: str, limit: int = TEXT_LIMIT) -> bytes | None:
        """The content of the regular file at `path` (symlinks followed, as the kernel
        would), of at most `limit` bytes: in memory (captured while flattening, or written
        by a step), or read back from where it was streamed. None when there is no such
        file. Without `read_back` (a plan, not a build) only what is in memory is seen. In a
        build, a file whose bytes cannot be had is an error, never read as empty: a step
        that rewrites it (an account added to /etc/passwd) would drop what it held."""
        found = resolve_link(self.tree.root, path)
        if found is None or found[1].kind is not Kind.FILE:
            return None
        inode = found[1]
        content = self.tree.content(inode)
        if content is not None or self.read_back is None:
            return content
        try:
            content = self.read_back(inode, limit)
        except Oci2vmError as e:
            raise Oci2vmError(f"{path}: {e}") from None
        if content is None:
            raise Oci2vmError(f"cannot read {path} in the image (a bug in oci2vm: its bytes "
                              "were not kept; please report it)")  # fmt: skip
        return content

    def write(
        self,
        path: str,
        content: bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        new_mode: int = 0o644,
    ) -> Inode:
        """Create or replace a regular file. A replaced file (or the file a replaced
        symlink led to) lends its owner and mode unless others are given; where there is
        none (no file, a dangling link, a device) the file is root's with `new_mode`
        (0600 for /etc/shadow: never world-readable). The new file is no hardlink of
        anything."""
        data = BytesData(content) if content else None
        return self._place_file(path, len(content), data, mode, uid, gid, new_mode)

    def stream(
        self,
        path: str,
        data: DataReader,
        size: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> Inode:
        """Create or replace a regular file whose `size` bytes `data` gives, handing them
        to the sink now (as write() does, but never holding them)."""
        if self.sink is None:
            raise ValueError("this TreeEditor has no sink to stream file data to")
        stored = StreamedData(size) if size else None
        inode = self._place_file(path, size, stored, mode, uid, gid, 0o644)
        self.sink(inode, data)
        return inode

    def _place_file(
        self,
        path: str,
        size: int,
        data: BytesData | StreamedData | None,
        mode: int | None,
        uid: int | None,
        gid: int | None,
        new_mode: int,
    ) -> Inode:
        parent, name = self._parent(path)  # type: ignore[misc]
        assert parent.children is not None
        old = parent.children.get(name)
        if old is not None and old.kind is Kind.DIR:
            raise Oci2vmError(f"cannot write {path}: it is a directory in the image")
        keep = old if old is not None and old.kind is Kind.FILE else None
        if old is not None and old.kind is Kind.SYMLINK:
            # The link gives way to the file, which keeps the owner and mode of the file
            # the link led to (a symlinked /etc/shadow must not become world-readable).
            found = resolve_link(self.tree.root, path)
            keep = found[1] if found is not None and found[1].kind is Kind.FILE else None
        inode = Inode(
            Kind.FILE,
            mode=mode if mode is not None else (keep.mode if keep else new_mode),
            uid=uid if uid is not None else (keep.uid if keep else 0),
            gid=gid if gid is not None else (keep.gid if keep else 0),
            mtime_ns=self.mtime_ns,
            size=size,
            xattrs=dict(keep.xattrs) if keep else {},
            data=data,
        )
        parent.children[name] = inode
        return inode

    def symlink(self, path: str, target: str) -> None:
        parent, name = self._parent(path)  # type: ignore[misc]
        assert parent.children is not None
        old = parent.children.get(name)
        if old is not None and old.kind is Kind.DIR:
            raise Oci2vmError(f"cannot link {path}: it is a directory in the image")
        raw = target.encode()
        parent.children[name] = Inode(
            Kind.SYMLINK, mode=0o777, mtime_ns=self.mtime_ns, target=raw, size=len(raw)
        )

    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Inode:
        parent, name = self._parent(path)  # type: ignore[misc]
        assert parent.children is not None
        old = parent.children.get(name)
        if old is not None:
            if old.kind is Kind.SYMLINK:  # kept, as dpkg keeps /lib -> usr/lib
                found = resolve_link(self.tree.root, path)
                if found is not None and found[1].kind is Kind.DIR:
                    return found[1]
                made = self._link_dir(path, old, mode, uid, gid) if found is None else None
                if made is not None:
                    return made
            if old.kind is not Kind.DIR:
                raise Oci2vmError(f"cannot create directory {path}: a {old.kind} is there")
            return old
        node = new_dir(mode=mode, uid=uid, gid=gid, mtime_ns=self.mtime_ns)
        parent.children[name] = node
        return node

    def _link_dir(
        self, link: str, inode: Inode, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> Inode | None:
        """The directory a dangling symlink at `link` leads to, made where it is in /var:
        Fedora's atomic and bootc images link /root to var/roothome, /home to var/home
        (and /opt, /srv, /usr/local), which systemd-tmpfiles makes at boot. None for a
        link that leads elsewhere, nowhere, or round in circles (the caller's error)."""
        target = (inode.target or b"").decode("utf-8", "surrogateescape")
        where = target if target.startswith("/") else f"{posixpath.dirname(link)}/{target}"
        where = "/" + posixpath.normpath(where).lstrip("/")
        if not target or not where.startswith("/var/") or self._hops >= MAX_LINK_HOPS:
            return None
        self._hops += 1
        try:
            return self.mkdir(where, mode, uid, gid)
        except Oci2vmError:
            if self._hops > 1:
                raise
            return None
        finally:
            self._hops -= 1

    def graft(self, path: str, inode: Inode) -> None:
        """Place an entry of another tree (whose file data went to the same sink) at
        `path`: a directory merges into one already there, anything else replaces what
        is there unless that is a directory. (A walk by a stack of its own, in the order
        a recursion would take: a package's tree may be deeper than its limit.)"""
        todo = [(path, inode)]
        while todo:
            path, inode = todo.pop()
            parent, name = self._parent(path)  # type: ignore[misc]
            assert parent.children is not None
            old = parent.children.get(name)
            if old is not None and old.kind is Kind.SYMLINK and inode.kind is Kind.DIR:
                old = self.mkdir(path)  # through the link, as dpkg unpacks
            if old is None or old.kind is not Kind.DIR:
                parent.children[name] = inode
            elif inode.kind is not Kind.DIR or inode.children is None:
                raise Oci2vmError(f"cannot place {path}: it is a directory in the image")
            else:
                todo.extend((f"{path}/{n}", c) for n, c in reversed(list(inode.children.items())))

    def remove(self, path: str) -> bool:
        found = self._parent(path, create=False)
        if found is None or found[0].children is None:
            return False
        return found[0].children.pop(found[1], None) is not None
