"""Building ext4 images the way flattening does, and reading them back: e2fsck -fn must
be clean, and debugfs must show each path's type, mode, owner, times to the nanosecond,
size, content, link target, device numbers, every xattr (ACLs converted back) and the
hardlink groups of the tree the image was built from (assert_reads_back)."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from oci2vm.fs.ext4 import Ext4Result, Ext4Writer
from oci2vm.fs.ext4.inode import decode_time, encode_time
from oci2vm.tree.model import BytesData, BytesReader, Inode, Kind, link_counts, walk

FS_UUID = uuid.UUID("0b5e1d2c-3f40-4a5b-8c6d-7e8f90a1b2c3")
HASH_SEED = uuid.UUID("d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6")
FS_TIME = 1_700_000_000
MIB = 1 << 20
ACL_SHORT_TAGS = (0x01, 0x04, 0x10, 0x20)  # USER_OBJ, GROUP_OBJ, MASK, OTHER: no id


# -- building ---------------------------------------------------------------------------


def file_bytes(inode: Inode) -> bytes:
    """A regular file's logical content: its regions at their offsets, holes as zeros."""
    assert inode.kind is Kind.FILE
    if inode.data is None:
        return bytes(inode.size)
    assert isinstance(inode.data, BytesData)
    out = bytearray(inode.size)
    at = 0
    for off, length in inode.data.regions:
        out[off : off + length] = inode.data.content[at : at + length]
        at += length
    return bytes(out)


def build(
    root: Inode,
    path: Path,
    *,
    stream: bool = True,
    size: int | None = None,
    offset: int = 0,
    data_size_hint: int = 0,
) -> Ext4Result:
    """Write `root` into `path` as flattening would: files streamed in walk order (or,
    with stream=False, left for finish() to write from their bytes)."""
    with path.open("r+b" if path.exists() else "wb") as out:
        writer = Ext4Writer(
            out,
            offset=offset,
            size=size,
            data_size_hint=data_size_hint,
            uuid=FS_UUID,
            hash_seed=HASH_SEED,
            fs_time=FS_TIME,
            label="root",
        )
        if stream:
            seen: set[Inode] = set()
            for _path, inode in walk(root):
                if inode.kind is Kind.FILE and inode not in seen:
                    seen.add(inode)
                    content = inode.data.content if isinstance(inode.data, BytesData) else b""
                    writer.write_file(inode, BytesReader(content))
        return writer.finish(root)


def fsck(image: Path) -> None:
    """e2fsck -fn exits 0 and reports nothing but its five passes and the summary."""
    proc = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, check=False)
    lines = proc.stdout.decode(errors="replace").splitlines()
    noise = [
        line
        for line in lines
        if line and not line.startswith("Pass ") and not re.match(r"\S+: \d+/\d+ files", line)
    ]
    assert proc.returncode == 0 and not noise, proc.stdout.decode(errors="replace")


# -- the expected view of a tree --------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    kind: Kind
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    links: int
    sha256: str | None = None  # regular files
    target: bytes | None = None  # symlinks
    rdev: tuple[int, int] | None = None  # devices
    xattrs: tuple[tuple[str, bytes], ...] = ()


def normalize_acl(value: bytes) -> bytes:
    """VFS ACLs carry an unused id for USER_OBJ/GROUP_OBJ/MASK/OTHER (-1 from the kernel,
    0 from debugfs): compare without it."""
    out = bytearray(value[:4])
    for at in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, at)
        out += struct.pack("<HHI", tag, perm, 0 if tag in ACL_SHORT_TAGS else ident)
    return bytes(out)


def normalize_xattrs(xattrs: dict[str, bytes]) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        sorted(
            (name, normalize_acl(value) if name.startswith("system.posix_acl_") else value)
            for name, value in xattrs.items()
        )
    )


def clamp_ns(ns: int) -> int:
    low, extra = encode_time(ns)
    return decode_time(low, extra)


def expected(root: Inode) -> tuple[dict[str, Seen], set[frozenset[str]]]:
    """Each path's record, and the hardlink groups (paths sharing a non-directory inode)."""
    counts = link_counts(root)
    assert root.children is not None
    extra_root_link = 0 if "lost+found" in root.children else 1
    records: dict[str, Seen] = {}
    groups: dict[Inode, set[str]] = {}
    for path, inode in walk(root):
        links = counts[inode] + (extra_root_link if inode == root else 0)
        records[path] = Seen(
            kind=inode.kind,
            mode=inode.mode & 0o7777,
            uid=inode.uid,
            gid=inode.gid,
            mtime_ns=clamp_ns(inode.mtime_ns),
            size=0 if inode.kind is Kind.DIR else inode.size,
            links=links,
            sha256=hashlib.sha256(file_bytes(inode)).hexdigest()
            if inode.kind is Kind.FILE
            else None,
            target=inode.target if inode.kind is Kind.SYMLINK else None,
            rdev=(inode.rdev_major, inode.rdev_minor)
            if inode.kind in (Kind.CHAR, Kind.BLOCK)
            else None,
            xattrs=normalize_xattrs(inode.xattrs),
        )
        if inode.kind is not Kind.DIR:
            groups.setdefault(inode, set()).add(path)
    return records, {frozenset(g) for g in groups.values() if len(g) > 1}


# -- reading back with debugfs ----------------------------------------------------------

_TYPES = {
    b"regular": Kind.FILE,
    b"directory": Kind.DIR,
    b"symlink": Kind.SYMLINK,
    b"character special": Kind.CHAR,
    b"block special": Kind.BLOCK,
    b"FIFO": Kind.FIFO,
    b"socket": Kind.SOCKET,
}


def debugfs(image: Path, commands: list[str], workdir: Path) -> list[bytes]:
    """Run commands in one debugfs session; return each command's output."""
    script = workdir / "debugfs.cmds"
    script.write_text("".join(c + "\n" for c in commands))
    proc = subprocess.run(
        ["debugfs", "-f", str(script), str(image)], capture_output=True, check=True
    )
    chunks = re.split(rb"^debugfs: .*\n", proc.stdout, flags=re.M)
    assert len(chunks) == len(commands) + 1, proc.stderr
    return chunks[1:]


def _walk_image(image: Path, workdir: Path) -> dict[str, int]:
    """Every path below / and its inode number, level by level via `ls -p <ino>`."""
    paths: dict[str, int] = {"/": 2}
    level = [("", 2)]
    while level:
        outputs = debugfs(image, [f"ls -p <{ino}>" for _, ino in level], workdir)
        nxt: list[tuple[str, int]] = []
        for (prefix, _), out in zip(level, outputs, strict=True):
            for line in out.split(b"\n"):
                if not line.startswith(b"/"):
                    continue
                fields = line.split(b"/")
                ino, mode, name = int(fields[1]), int(fields[2], 8), fields[5]
                if name in (b".", b"..") or ino == 0:  # 0: lost+found's spare blocks
                    continue
                path = f"{prefix}/{name.decode('utf-8', 'surrogateescape')}"
                paths[path] = ino
                if mode & 0o170000 == 0o040000:
                    nxt.append((path, ino))
        level = nxt
    return paths


def _field(pattern: bytes, text: bytes) -> re.Match[bytes]:
    m = re.search(pattern, text, flags=re.M)
    assert m is not None, (pattern, text)
    return m


def _ea_name(listed: bytes) -> str:
    """debugfs lists a name with non-ASCII bytes as hex pairs."""
    listed = listed.strip()
    if re.fullmatch(rb"([0-9a-f]{2} )+", listed + b" "):
        return bytes.fromhex(listed.decode()).decode("utf-8", "surrogateescape")
    return listed.decode()


def read_back(image: Path, workdir: Path) -> tuple[dict[str, Seen], set[frozenset[str]]]:
    """The records and hardlink groups debugfs sees in `image`."""
    paths = _walk_image(image, workdir)
    inos = sorted(set(paths.values()))
    dumps = workdir / "dump"
    dumps.mkdir(exist_ok=True)
    stats = debugfs(image, [f"stat <{i}>" for i in inos], workdir)
    lists = debugfs(image, [f"ea_list <{i}>" for i in inos], workdir)
    by_ino: dict[int, tuple[bytes, list[str]]] = {}
    for ino, stat, eas in zip(inos, stats, lists, strict=True):
        names = [_ea_name(m) for m in re.findall(rb"^  (.+?) \(\d+\)", eas, flags=re.M)]
        by_ino[ino] = (stat, names)
    gets = [
        f"ea_get -f {dumps}/ea-{ino}-{n} <{ino}> {name}"
        for ino, (_, names) in by_ino.items()
        for n, name in enumerate(names)
    ]
    dump_cmds = [
        f"dump <{ino}> {dumps}/data-{ino}"
        for ino, (stat, _) in by_ino.items()
        if _field(rb"Type: ([a-zA-Z ]+?)\s+Mode", stat).group(1) in (b"regular", b"symlink")
        and b"Fast link dest" not in stat
    ]
    if gets or dump_cmds:
        debugfs(image, gets + dump_cmds, workdir)
    records: dict[int, Seen] = {}
    for ino, (stat, names) in by_ino.items():
        kind = _TYPES[_field(rb"Type: ([a-zA-Z ]+?)\s+Mode", stat).group(1)]
        mode = int(_field(rb"Mode:\s+(\d+)", stat).group(1), 8)
        owner = _field(rb"User:\s+(-?\d+)\s+Group:\s+(-?\d+).*Size: (\d+)", stat)
        links = int(_field(rb"Links: (\d+)", stat).group(1))
        mtime = _field(rb"^ mtime: 0x([0-9a-f]+):([0-9a-f]+)", stat)
        size = int(owner.group(3))
        sha = target = rdev = None
        data = dumps / f"data-{ino}"
        if kind is Kind.FILE:
            sha = hashlib.sha256(data.read_bytes()).hexdigest()
        elif kind is Kind.SYMLINK:
            fast = re.search(rb'^Fast link dest: "(.*)"$', stat, flags=re.M)
            target = fast.group(1) if fast else data.read_bytes()
        elif kind in (Kind.CHAR, Kind.BLOCK):
            dev = _field(rb"Device major/minor number: (\d+):(\d+)", stat)
            rdev = (int(dev.group(1)), int(dev.group(2)))
        xattrs = {name: (dumps / f"ea-{ino}-{n}").read_bytes() for n, name in enumerate(names)}
        records[ino] = Seen(
            kind=kind,
            mode=mode,
            uid=int(owner.group(1)) & 0xFFFFFFFF,  # debugfs prints them signed
            gid=int(owner.group(2)) & 0xFFFFFFFF,
            mtime_ns=decode_time(int(mtime.group(1), 16), int(mtime.group(2), 16)),
            size=0 if kind is Kind.DIR else size,
            links=links,
            sha256=sha,
            target=target,
            rdev=rdev,
            xattrs=normalize_xattrs(xattrs),
        )
    groups: dict[int, set[str]] = {}
    for path, ino in paths.items():
        if records[ino].kind is not Kind.DIR:
            groups.setdefault(ino, set()).add(path)
    return (
        {path: records[ino] for path, ino in paths.items()},
        {frozenset(g) for g in groups.values() if len(g) > 1},
    )


def assert_reads_back(root: Inode, image: Path, workdir: Path) -> None:
    fsck(image)
    want, want_groups = expected(root)
    got, got_groups = read_back(image, workdir)
    assert root.children is not None
    if "lost+found" not in root.children:
        lost_found = got.pop("/lost+found")
        assert (lost_found.kind, lost_found.mode, lost_found.links) == (Kind.DIR, 0o700, 2)
    assert sorted(got) == sorted(want)
    for path in want:
        assert got[path] == want[path], path
    assert got_groups == want_groups
