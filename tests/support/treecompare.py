"""Trees as comparable records: our flattened tree, and a directory on disk (what
`umoci raw unpack` or a kernel mount shows). One record per path: type, mode, owner,
mtime, size, content hash, link target, device numbers, xattrs; plus hardlink groups."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from fixture_images import FixtureSet, expected_tree
from oci2vm.layers.flatten import flatten
from oci2vm.tree.model import BytesData, DataReader, Inode, Kind, Tree, walk

Record = dict[str, Any]

_KIND_OF_MODE = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def hashing_sink() -> tuple[dict[Inode, str], Any]:
    """A FileSink that records the sha256 of each file's logical content (holes as zeros)."""
    hashes: dict[Inode, str] = {}

    def sink(inode: Inode, data: DataReader) -> None:
        hashes[inode] = logical_hash(inode, data)

    return hashes, sink


def logical_hash(inode: Inode, data: DataReader) -> str:
    h = hashlib.sha256()
    pos = 0
    assert inode.data is not None
    for offset, length in inode.data.regions:
        _zeros(h, offset - pos)
        left = length
        while left:
            chunk = data.view(min(left, 1 << 20))
            assert chunk, "short data"
            h.update(chunk)
            left -= len(chunk)
        pos = offset + length
    _zeros(h, inode.size - pos)
    return h.hexdigest()


def _zeros(h: Any, count: int) -> None:
    block = bytes(1 << 20)
    while count > 0:
        n = min(count, len(block))
        h.update(block[:n])
        count -= n


def flatten_records(image: Any) -> tuple[Tree, dict[str, Record]]:
    hashes, sink = hashing_sink()
    tree = flatten(image, sink=sink)
    return tree, tree_records(tree, hashes)


def tree_records(tree: Tree, hashes: dict[Inode, str]) -> dict[str, Record]:
    records: dict[str, Record] = {}
    groups: dict[Inode, list[str]] = {}
    empty = hashlib.sha256().hexdigest()
    for path, inode in walk(tree.root):
        rec: Record = {
            "kind": inode.kind.value,
            "mode": inode.mode,
            "uid": inode.uid,
            "gid": inode.gid,
            "mtime_ns": inode.mtime_ns,
            "xattrs": {k: v.hex() for k, v in sorted(inode.xattrs.items())},
        }
        if inode.kind is Kind.FILE:
            rec["size"] = inode.size
            if isinstance(inode.data, BytesData):
                rec["sha256"] = hashlib.sha256(inode.data.content).hexdigest()
            else:
                rec["sha256"] = hashes.get(inode, empty)
            groups.setdefault(inode, []).append(path)
        elif inode.kind is Kind.SYMLINK:
            assert inode.target is not None
            rec["target"] = inode.target.decode("utf-8", "surrogateescape")
            groups.setdefault(inode, []).append(path)
        elif inode.kind in (Kind.CHAR, Kind.BLOCK):
            rec["rdev"] = [inode.rdev_major, inode.rdev_minor]
        records[path] = rec
    _add_groups(records, groups.values())
    return records


def directory_records(root: Path, *, xattrs: bool = True) -> dict[str, Record]:
    """Records of a directory tree on disk (read with lstat, never following links)."""
    records: dict[str, Record] = {}
    groups: dict[tuple[int, int], list[str]] = {}
    root_b = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(root_b):
        for name in [b"", *dirnames, *filenames] if dirpath == root_b else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(full, root_b)
            path = "/" if rel == b"." else "/" + os.fsdecode(rel)
            st = os.lstat(full)
            kind = _KIND_OF_MODE[stat.S_IFMT(st.st_mode)]
            rec: Record = {
                "kind": kind,
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
                "xattrs": _xattrs(full) if xattrs else {},
            }
            if kind == "file":
                rec["size"] = st.st_size
                rec["sha256"] = _file_hash(full)
                if st.st_nlink > 1:
                    groups.setdefault((st.st_dev, st.st_ino), []).append(path)
            elif kind == "symlink":
                rec["target"] = os.fsdecode(os.readlink(full))
                if st.st_nlink > 1:
                    groups.setdefault((st.st_dev, st.st_ino), []).append(path)
            elif kind in ("char", "block"):
                rec["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
            records[path] = rec
        dirnames.sort()
    _add_groups(records, groups.values())
    return records


def _add_groups(records: dict[str, Record], groups: Any) -> None:
    for paths in groups:
        if len(paths) > 1:
            members = sorted(paths)
            for p in members:
                records[p]["links"] = members


def _xattrs(path: bytes) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in sorted(names)}


def _file_hash(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def differences(ours: dict[str, Record], theirs: dict[str, Record], limit: int = 30) -> list[str]:
    """Human-readable differences, at most `limit`."""
    out: list[str] = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a != b:
            if a is None or b is None:
                out.append(f"{path}: only in {'theirs' if a is None else 'ours'}")
            else:
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                out.append(
                    f"{path}: " + ", ".join(f"{k} {a.get(k)!r} != {b.get(k)!r}" for k in keys)
                )
        if len(out) >= limit:
            break
    return out


def expected_records(fx: FixtureSet) -> dict[str, Record]:
    """The fixture's expected tree (written by the fixture script, independently of
    oci2vm) in the comparison format."""
    records: dict[str, Record] = {}
    groups: dict[str, list[str]] = {}
    raw = expected_tree(fx)
    for path, rec in raw.items():
        first = rec["linkname"] if rec["kind"] == "hardlink" else path
        target = raw[first]
        out: Record = {
            "kind": target["kind"],
            "mode": target["mode"],
            "uid": target["uid"],
            "gid": target["gid"],
            "mtime_ns": target["mtime_ns"],
            "xattrs": dict(sorted(target.get("xattrs", {}).items())),
        }
        if target["kind"] == "file":
            out["size"] = target["size"]
            out["sha256"] = target["sha256"]
        elif target["kind"] == "symlink":
            out["target"] = target["linkname"]
        elif target["kind"] in ("char", "block"):
            out["rdev"] = list(target["rdev"])
        records["/" + path] = out
        if rec["kind"] == "hardlink" or any(
            r.get("linkname") == path and r["kind"] == "hardlink" for r in ()
        ):
            groups.setdefault("/" + first, ["/" + first]).append("/" + path)
    for members in groups.values():
        for p in members:
            records[p]["links"] = sorted(members)
    return records
