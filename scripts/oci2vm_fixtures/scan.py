"""Real trees as tar entries (debian): scan a directory in walk order with faithful metadata
(lstat, xattrs, ns mtimes), and diff two trees into the layer an overlay snapshot would give."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .commands import log
from .tarentry import MIB, Kind, TarEntry, enc, resolve_links, walk_key

Tree = dict[str, os.stat_result]


def scan(root: Path) -> Tree:
    """Every path under `root` (relative, walk order) with its lstat."""
    found: Tree = {}

    def walk(rel: str) -> None:
        with os.scandir(os.path.join(root, rel) if rel else root) as listing:
            names = sorted((item.name for item in listing), key=enc)
        for name in names:
            child = f"{rel}/{name}" if rel else name
            info = os.lstat(os.path.join(root, child))
            found[child] = info
            if stat.S_ISDIR(info.st_mode):
                walk(child)

    walk("")
    return found


def read_xattrs(path: str) -> dict[str, bytes]:
    names = sorted(os.listxattr(path, follow_symlinks=False))
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


def entry_from(root: Path, rel: str, info: os.stat_result) -> TarEntry | None:
    """A faithful tar entry for one real file: lstat metadata, all xattrs, ns mtime."""
    full = os.path.join(root, rel)
    mode = info.st_mode
    common = {
        "mode": stat.S_IMODE(mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
        "mtime_ns": info.st_mtime_ns,
        "xattrs": read_xattrs(full),
    }
    if stat.S_ISDIR(mode):
        return TarEntry(rel, "dir", **common)  # type: ignore[arg-type]
    if stat.S_ISREG(mode):
        group = f"{info.st_dev}:{info.st_ino}" if info.st_nlink > 1 else ""
        return TarEntry(rel, "file", source=Path(full), size=info.st_size, group=group, **common)  # type: ignore[arg-type]
    if stat.S_ISLNK(mode):
        return TarEntry(rel, "symlink", linkname=os.readlink(full), **common)  # type: ignore[arg-type]
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind: Kind = "char" if stat.S_ISCHR(mode) else "block"
        major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
        return TarEntry(rel, kind, major=major, minor=minor, **common)  # type: ignore[arg-type]
    if stat.S_ISFIFO(mode):
        return TarEntry(rel, "fifo", **common)  # type: ignore[arg-type]
    log(f"skipping {rel}: sockets are not representable in tar")
    return None


def tree_entries(root: Path, found: Tree | None = None) -> list[TarEntry]:
    found = scan(root) if found is None else found
    entries = [entry_from(root, rel, info) for rel, info in found.items()]
    return resolve_links(e for e in entries if e is not None)


def _same_content(left: str, right: str) -> bool:
    with open(left, "rb") as a, open(right, "rb") as b:
        while True:
            chunk = a.read(MIB)
            if chunk != b.read(MIB):
                return False
            if not chunk:
                return True


def _unchanged(
    lower_root: Path, upper_root: Path, rel: str, before: os.stat_result, now: os.stat_result
) -> bool:
    """Whether `rel` has the same file type, metadata and content in both trees."""
    same = (
        before.st_mode == now.st_mode  # file type and permission bits
        and before.st_uid == now.st_uid
        and before.st_gid == now.st_gid
        and before.st_mtime_ns == now.st_mtime_ns
        and before.st_rdev == now.st_rdev
        and (stat.S_ISDIR(now.st_mode) or before.st_size == now.st_size)
        and read_xattrs(os.path.join(lower_root, rel)) == read_xattrs(os.path.join(upper_root, rel))
    )
    if same and stat.S_ISLNK(now.st_mode):
        same = os.readlink(lower_root / rel) == os.readlink(upper_root / rel)
    if same and stat.S_ISREG(now.st_mode):
        same = _same_content(os.path.join(lower_root, rel), os.path.join(upper_root, rel))
    return same


def _changed(lower_root: Path, upper_root: Path, lower: Tree, upper: Tree) -> set[str]:
    """Paths of `upper` that are new, of another file type, or changed in any way."""
    changed: set[str] = set()
    for rel, now in upper.items():
        before = lower.get(rel)
        if before is None or not _unchanged(lower_root, upper_root, rel, before, now):
            changed.add(rel)
    return changed


def _is_dir(tree: Tree, rel: str) -> bool:
    return rel == "" or (rel in tree and stat.S_ISDIR(tree[rel].st_mode))


def _whiteouts(lower: Tree, upper: Tree, changed: set[str]) -> list[str]:
    """`.wh.` markers for removed paths; an opaque marker instead for a directory whose lower
    children all went while new ones came."""
    children: dict[str, list[str]] = {}
    for rel in lower:
        children.setdefault(rel.rpartition("/")[0], []).append(rel)
    markers: list[str] = []
    for parent, names in children.items():
        if not (_is_dir(lower, parent) and _is_dir(upper, parent)):
            continue  # gone entirely, or hidden by an upper non-directory
        survivors = [rel for rel in names if rel in upper]
        gone = [rel for rel in names if rel not in upper]
        upper_has_children = any(rel.rpartition("/")[0] == parent for rel in changed)
        if gone and not survivors and upper_has_children:
            markers.append(f"{parent}/.wh..wh..opq" if parent else ".wh..wh..opq")
        else:
            for rel in gone:
                head, _, base = rel.rpartition("/")
                markers.append(f"{head}/.wh.{base}" if head else f".wh.{base}")
    return markers


def _add_hardlink_peers(upper: Tree, changed: set[str]) -> None:
    """Every name of a changed file's inode (overlay copies the whole inode up)."""
    inodes: dict[tuple[int, int], list[str]] = {}
    for rel, now in upper.items():
        if stat.S_ISREG(now.st_mode) and now.st_nlink > 1:
            inodes.setdefault((now.st_dev, now.st_ino), []).append(rel)
    for names in inodes.values():
        if any(rel in changed for rel in names):
            changed.update(names)


def _parents(paths: Iterable[str]) -> set[str]:
    needed: set[str] = set()
    for rel in paths:
        head = rel.rpartition("/")[0]
        while head and head not in needed:
            needed.add(head)
            head = head.rpartition("/")[0]
    return needed


def diff_trees(lower_root: Path, upper_root: Path) -> list[TarEntry]:
    """The layer that turns `lower_root` into `upper_root`: added/changed entries (lstat,
    xattrs, content), `.wh.` whiteouts for removed paths, an opaque marker for a directory
    whose lower children all went and new ones came. Parent directories of every change are
    included, as an overlay snapshot has them. A changed file's other hardlink names are
    included too (overlay copies the inode up), so the new layer holds the full file."""
    lower, upper = scan(lower_root), scan(upper_root)
    changed = _changed(lower_root, upper_root, lower, upper)
    markers = _whiteouts(lower, upper, changed)
    _add_hardlink_peers(upper, changed)
    needed = _parents([*changed, *markers])
    entries: list[TarEntry] = []
    for rel in sorted(changed | needed, key=walk_key):
        entry = entry_from(upper_root, rel, upper[rel])
        if entry is not None:
            entries.append(entry)
    for marker in markers:
        head = marker.rpartition("/")[0]
        mtime = upper[head].st_mtime_ns if head else os.lstat(upper_root).st_mtime_ns
        entries.append(TarEntry(marker, "file", mode=0o600, mtime_ns=mtime))
    return resolve_links(entries)
