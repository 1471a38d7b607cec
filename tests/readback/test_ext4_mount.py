"""The Linux kernel's own ext4 driver reads the writer's images equal to their trees
(read-only loop mount), and writes to them read-write, after which e2fsck is still clean:
the journal, the hashed directories and every checksum are what the kernel expects."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from oci2vm.tree.model import BytesData, Inode, Kind
from support.ext4check import Seen, build, expected, fsck, normalize_xattrs
from support.ext4trees import (
    COLLIDING,
    big_directory_tree,
    colliding_directory_tree,
    every_case_tree,
    trees,
    two_level_tree,
)
from support.programs import requires

pytestmark = [pytest.mark.root, requires("e2fsck", "dumpe2fs", "mount", "umount")]

_KINDS = {
    stat.S_IFREG: Kind.FILE,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFCHR: Kind.CHAR,
    stat.S_IFBLK: Kind.BLOCK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFSOCK: Kind.SOCKET,
}


@contextmanager
def mounted(image: Path, where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-o", ",".join(("loop", *options)), str(image), str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _xattrs(path: str, kind: Kind) -> dict[str, bytes]:
    out = {}
    for name in os.listxattr(path, follow_symlinks=False):
        if name.startswith("user.") and kind not in (Kind.FILE, Kind.DIR):
            continue  # the kernel serves user.* only on files and directories
        if name.startswith("system.posix_acl_") and kind is Kind.SYMLINK:
            continue  # listed, but symlinks have no ACLs to get
        out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def kernel_view(top: Path) -> tuple[dict[str, Seen], set[frozenset[str]]]:
    """Records and hardlink groups as seen through the mounted filesystem."""
    records: dict[str, Seen] = {}
    groups: dict[int, set[str]] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        real = f"{top}{rel}" if rel else str(top)
        st = os.lstat(real)
        kind = _KINDS[stat.S_IFMT(st.st_mode)]
        sha = target = rdev = None
        if kind is Kind.FILE:
            digest = hashlib.sha256()
            with open(real, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            sha = digest.hexdigest()
        elif kind is Kind.SYMLINK:
            target = os.readlink(os.fsencode(real))
        elif kind in (Kind.CHAR, Kind.BLOCK):
            rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        records[rel or "/"] = Seen(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            size=0 if kind is Kind.DIR else st.st_size,
            links=st.st_nlink,
            sha256=sha,
            target=target,
            rdev=rdev,
            xattrs=normalize_xattrs(_xattrs(real, kind)),
        )
        if kind is Kind.DIR:
            pending.extend(f"{rel}/{name}" for name in os.listdir(real))
        else:
            groups.setdefault(st.st_ino, set()).add(rel)
    return records, {frozenset(g) for g in groups.values() if len(g) > 1}


def _kernel_tree() -> Inode:
    root = every_case_tree()
    assert root.children is not None
    root.children["new\nline"] = Inode(Kind.FILE, size=2, data=BytesData(b"nl"))
    big = big_directory_tree(3000).children
    assert big is not None
    root.children["many"] = big["many"]
    return root


def _visible(want: dict[str, Seen]) -> dict[str, Seen]:
    """What the kernel shows: no user.* xattrs on symlinks and device nodes, no ACLs on
    symlinks."""
    out = {}
    for path, seen in want.items():
        hidden = ["user."] if seen.kind not in (Kind.FILE, Kind.DIR) else []
        if seen.kind is Kind.SYMLINK:
            hidden.append("system.posix_acl_")
        kept = tuple((n, v) for n, v in seen.xattrs if not n.startswith(tuple(hidden) or "\0"))
        out[path] = dataclasses.replace(seen, xattrs=kept)
    return out


def assert_kernel_reads_back(root: Inode, image: Path, workdir: Path) -> None:
    fsck(image)
    want, want_groups = expected(root)
    with mounted(image, workdir / "mnt", "ro") as top:
        got, got_groups = kernel_view(top)
    lost_found = got.pop("/lost+found")
    assert (lost_found.kind, lost_found.mode, lost_found.links) == (Kind.DIR, 0o700, 2)
    want = _visible(want)
    assert sorted(got) == sorted(want)
    for path in want:
        assert got[path] == want[path], path
    assert got_groups == want_groups


def test_kernel_reads_every_case_equal(tmp_path: Path) -> None:
    image = tmp_path / "every.ext4"
    root = _kernel_tree()
    build(root, image)
    assert_kernel_reads_back(root, image, tmp_path)


@settings(
    max_examples=int(os.environ.get("EXT4_KERNEL_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(root=trees())
def test_kernel_reads_random_trees_equal(root: Inode) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ext4-kernel-"))
    try:
        image = workdir / "fs.ext4"
        build(root, image)
        assert_kernel_reads_back(root, image, workdir)
    finally:
        shutil.rmtree(workdir)


def test_kernel_writes_and_e2fsck_stays_clean(tmp_path: Path) -> None:
    image = tmp_path / "rw.ext4"
    build(_kernel_tree(), image)
    with mounted(image, tmp_path / "mnt") as top:
        for i in range(500):  # into the hashed directory: splits leaves, rewrites checksums
            (top / "many" / f"added-{i:04d}-{'y' * (i % 50)}").write_bytes(b"x" * i)
        for name in sorted(os.listdir(top / "many"))[::3]:
            if not (top / "many" / name).is_dir():
                (top / "many" / name).unlink()
        (top / "new-dir").mkdir()
        (top / "new-dir" / "data").write_bytes(os.urandom(3 << 20))
        os.setxattr(top / "xattrs", "user.added", b"v" * 500)
        (top / "hello.txt").unlink()
        (top / "big.bin").unlink()
        (top / "sub" / "hard-b").rename(top / "moved")
        os.sync()
        written = hashlib.sha256((top / "new-dir" / "data").read_bytes()).hexdigest()
    fsck(image)
    journal = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, check=True)
    assert b"Journal sequence:         0x00000001" not in journal.stdout  # transactions ran
    with mounted(image, tmp_path / "mnt", "ro") as top:
        assert hashlib.sha256((top / "new-dir" / "data").read_bytes()).hexdigest() == written
        assert os.getxattr(top / "xattrs", "user.added") == b"v" * 500
        assert (top / "moved").read_bytes() == b"link"
        assert os.lstat(top / "moved").st_nlink == 3


def test_kernel_finds_names_whose_hash_continues_into_the_next_leaf(tmp_path: Path) -> None:
    image = tmp_path / "collide.ext4"
    root = colliding_directory_tree()
    build(root, image)
    assert_kernel_reads_back(root, image, tmp_path)
    with mounted(image, tmp_path / "mnt") as top:
        for name in COLLIDING:  # a lookup by name: dx_probe must follow the continuation
            assert (top / "d" / name).read_bytes() == name.encode()
        for i in range(300):
            (top / "d" / f"new-{i}").write_bytes(b"n")
        (top / "d" / COLLIDING[0]).unlink()
    fsck(image)


def test_kernel_grows_a_two_level_hashed_directory(tmp_path: Path) -> None:
    image = tmp_path / "two-level.ext4"
    build(two_level_tree(), image)
    with mounted(image, tmp_path / "mnt") as top:
        names = os.listdir(top / "d")
        assert len(names) == 9000
        assert (top / "d" / names[4321]).is_fifo()  # a lookup through both index levels
        for i in range(2000):
            (top / "d" / f"added-{i:05d}-{'m' * 200}").touch()
        for name in names[::7]:
            (top / "d" / name).unlink()
    fsck(image)
