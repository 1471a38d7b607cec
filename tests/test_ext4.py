"""The ext4 writer's images pass `e2fsck -fn` and read back through debugfs equal to the tree
they were built from: type, mode, owner, times to the nanosecond, size, content, link targets,
device numbers, every xattr (ACLs converted back), hardlink groups.

The helpers here are shared by test_ext4_props.py (random trees) and test_ext4_mount.py
(read back through the kernel's ext4 driver)."""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4 import Ext4Result, Ext4Writer
from oci2vm.fs.ext4.dirs import hash_seed_words, name_hash
from oci2vm.fs.ext4.inode import decode_time, encode_time
from oci2vm.fs.ext4.xattr import acl_to_ext4
from oci2vm.tree.model import BytesData, BytesReader, Inode, Kind, link_counts, new_dir, walk
from oci2vm.util.tools import have_program

pytestmark = pytest.mark.skipif(
    not (have_program("e2fsck") and have_program("debugfs")), reason="needs e2fsprogs"
)

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
            seen: set[int] = set()
            for _path, inode in walk(root):
                if inode.kind is Kind.FILE and id(inode) not in seen:
                    seen.add(id(inode))
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
    groups: dict[int, set[str]] = {}
    for path, inode in walk(root):
        links = counts[id(inode)] + (extra_root_link if inode is root else 0)
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
            groups.setdefault(id(inode), set()).add(path)
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


# -- trees ------------------------------------------------------------------------------


def acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL in the VFS xattr form (version 2; id -1 where unused)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


UNUSED = 0xFFFFFFFF


def every_case_tree() -> Inode:
    """A tree with each thing an image can hold."""
    t = 1_650_000_000_123_456_789
    root = new_dir(mode=0o755, mtime_ns=t)
    root.xattrs = {"user.root": b"on the root"}
    c = root.children
    assert c is not None
    c["empty"] = Inode(Kind.FILE, mtime_ns=t)
    c["hello.txt"] = Inode(Kind.FILE, size=6, data=BytesData(b"hello\n"), mtime_ns=t + 1)
    big = bytes(range(256)) * 4096 * 3 + b"tail"  # 3 MiB + 4 bytes
    c["big.bin"] = Inode(Kind.FILE, size=len(big), data=BytesData(big), mtime_ns=t)
    # 12 data regions, some not block-aligned: 12 extents, more than the inode's 4
    regions = tuple((i * 3 * 4096 + (i % 3) * 700, 1000 + i) for i in range(12))
    content = b"".join(bytes([65 + i]) * length for i, (_, length) in enumerate(regions))
    c["sparse"] = Inode(
        Kind.FILE, size=40 * 4096 + 5, data=BytesData(content, sparse=regions), mtime_ns=t
    )
    c["all-hole"] = Inode(Kind.FILE, size=10 * MIB, data=BytesData(b"", sparse=()), mtime_ns=t)
    c["setuid"] = Inode(Kind.FILE, mode=0o4755, size=2, data=BytesData(b"#!"), mtime_ns=t)
    c["setgid-dir"] = new_dir(mode=0o2775, uid=70000, gid=80000, mtime_ns=t)
    c["sticky"] = new_dir(mode=0o1777, mtime_ns=t)
    c["fast-link"] = Inode(Kind.SYMLINK, mode=0o777, target=b"hello.txt", size=9, mtime_ns=t)
    slow = b"/very/" + b"long/" * 40 + b"target"
    c["slow-link"] = Inode(Kind.SYMLINK, mode=0o777, target=slow, size=len(slow), mtime_ns=t)
    c["59-link"] = Inode(Kind.SYMLINK, mode=0o777, target=b"x" * 59, size=59, mtime_ns=t)
    c["60-link"] = Inode(Kind.SYMLINK, mode=0o777, target=b"y" * 60, size=60, mtime_ns=t)
    c["null"] = Inode(Kind.CHAR, mode=0o666, rdev_major=1, rdev_minor=3, mtime_ns=t)
    c["sda1"] = Inode(Kind.BLOCK, mode=0o660, gid=6, rdev_major=8, rdev_minor=1, mtime_ns=t)
    c["bigdev"] = Inode(Kind.CHAR, rdev_major=511, rdev_minor=1_000_000, mtime_ns=t)
    c["fifo"] = Inode(Kind.FIFO, mode=0o600, mtime_ns=t)
    c["socket"] = Inode(Kind.SOCKET, mode=0o755, mtime_ns=t)
    c["old"] = Inode(Kind.FILE, mtime_ns=-1_234_567_890_987_654_321)  # 1930
    c["future"] = Inode(Kind.FILE, mtime_ns=5_000_000_000 * 10**9 + 999_999_999)  # 2128
    c["far-future"] = Inode(Kind.FILE, mtime_ns=11_000_000_000 * 10**9 + 7)  # 2318: clamped
    c["epoch-minus"] = Inode(Kind.FILE, mtime_ns=-1)  # 1969-12-31T23:59:59.999999999
    c["times"] = Inode(Kind.FILE, mtime_ns=t, atime_ns=t + 5, ctime_ns=-(10**18), uid=4_000_000_000)
    shared = Inode(Kind.FILE, size=4, data=BytesData(b"link"), mtime_ns=t)
    c["hard-a"] = shared
    sub = new_dir(mtime_ns=t)
    assert sub.children is not None
    c["sub"] = sub
    sub.children["hard-b"] = shared
    sub.children["hard-c"] = shared
    link_to_link = Inode(Kind.SYMLINK, target=b"../hello.txt", size=12, mtime_ns=t)
    sub.children["sym-a"] = link_to_link
    sub.children["sym-b"] = link_to_link
    c["ünïcödé ✓"] = Inode(Kind.FILE, size=1, data=BytesData(b"u"), mtime_ns=t)
    c["odd\x01\x7f\udcff bytes"] = Inode(Kind.FILE, mtime_ns=t)
    c["n" * 255] = Inode(Kind.FILE, mtime_ns=t)
    acl_access = acl(
        (0x01, 7, UNUSED), (0x02, 5, 1000), (0x04, 5, UNUSED), (0x08, 1, 2000),
        (0x10, 5, UNUSED), (0x20, 0, UNUSED),
    )  # fmt: skip
    acl_default = acl((0x01, 7, UNUSED), (0x04, 5, UNUSED), (0x20, 5, UNUSED))
    c["acl-dir"] = new_dir(mtime_ns=t)
    c["acl-dir"].xattrs = {
        "system.posix_acl_access": acl_access,
        "system.posix_acl_default": acl_default,
    }
    c["ping"] = Inode(
        Kind.FILE,
        mode=0o755,
        size=3,
        data=BytesData(b"elf"),
        mtime_ns=t,
        xattrs={"security.capability": bytes.fromhex("01000002") + bytes.fromhex("00200000") * 4},
    )
    c["xattrs"] = Inode(
        Kind.FILE,
        mtime_ns=t,
        xattrs={
            "user.small": b"s",
            "user.empty": b"",
            "trusted.overlay.opaque": b"y",
            "user.big": bytes(range(256)) * 10,  # 2560 bytes: only fits the xattr block
            "user.binary\u00e9": b"\x00\xff\x00",
        },
    )
    return root


def big_directory_tree(count: int) -> Inode:
    root = new_dir(mtime_ns=FS_TIME * 10**9)
    big = new_dir(mtime_ns=FS_TIME * 10**9)
    assert root.children is not None and big.children is not None
    root.children["many"] = big
    for i in range(count):
        kind = Kind.DIR if i % 1000 == 0 else Kind.FILE
        name = f"entry-{i:05d}-{'x' * (i % 40)}"
        big.children[name] = new_dir() if kind is Kind.DIR else Inode(Kind.FILE, mode=0o600)
    return root


# -- tests ------------------------------------------------------------------------------


def test_every_case_reads_back_equal(tmp_path: Path) -> None:
    image = tmp_path / "every.ext4"
    root = every_case_tree()
    build(root, image)
    assert_reads_back(root, image, tmp_path)


def test_files_left_to_finish_are_written_too(tmp_path: Path) -> None:
    image = tmp_path / "finish.ext4"
    root = every_case_tree()
    build(root, image, stream=False)
    assert_reads_back(root, image, tmp_path)


def test_twenty_thousand_entries_in_one_directory(tmp_path: Path) -> None:
    image = tmp_path / "many.ext4"
    root = big_directory_tree(20_000)
    build(root, image)
    fsck(image)
    stat = subprocess.run(
        ["debugfs", "-R", "stat /many", str(image)], capture_output=True, check=True
    ).stdout
    assert b"Flags: 0x81000" in stat  # extents + hashed index
    htree = subprocess.run(
        ["debugfs", "-R", "htree_dump /many", str(image)], capture_output=True, check=True
    ).stdout
    assert b"Indirect levels: 0" in htree
    want, _ = expected(root)
    got, _ = read_back(image, tmp_path)
    got.pop("/lost+found")
    assert got == want


def two_level_tree() -> Inode:
    root = new_dir()
    big = new_dir()
    assert root.children is not None and big.children is not None
    root.children["d"] = big
    for i in range(9_000):  # 15 names of 250 bytes per leaf: 600 leaves, the root holds 507
        big.children[f"{i:06d}-" + "n" * 243] = Inode(Kind.FIFO)
    return root


def test_two_level_htree_when_the_root_index_is_full(tmp_path: Path) -> None:
    image = tmp_path / "huge-dir.ext4"
    build(two_level_tree(), image)
    fsck(image)
    htree = subprocess.run(
        ["debugfs", "-R", "htree_dump /d", str(image)], capture_output=True, check=True
    ).stdout
    assert b"Indirect levels: 1" in htree


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    digests = []
    for n in range(2):
        image = tmp_path / f"{n}.ext4"
        build(every_case_tree(), image)
        digests.append(hashlib.sha256(image.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_time_encoding_round_trips_across_the_ext4_range() -> None:
    for ns in (
        0,
        -1,
        1,
        2**31 * 10**9,
        -(2**31) * 10**9,
        2**33 * 10**9 + 5,
        (3 * 2**32 - 2**31 - 1) * 10**9 + 999_999_999,  # the latest time written: 2310
        1_700_000_000_5,
    ):
        assert decode_time(*encode_time(ns)) == ns
    assert decode_time(*encode_time(-(2**40) * 10**9)) == -(2**31) * 10**9  # clamped
    assert decode_time(*encode_time(3 * 2**32 * 10**9)) < 3 * 2**32 * 10**9


def test_acl_is_converted_to_the_compact_ext4_form() -> None:
    vfs = acl(
        (0x01, 6, UNUSED), (0x02, 4, 1000), (0x04, 4, UNUSED), (0x10, 4, UNUSED), (0x20, 0, UNUSED)
    )
    assert acl_to_ext4(vfs, "x") == struct.pack(
        "<IHHHHIHHHHHH", 1, 0x01, 6, 0x02, 4, 1000, 0x04, 4, 0x10, 4, 0x20, 0
    )
    with pytest.raises(Oci2vmError, match="version"):
        acl_to_ext4(struct.pack("<I", 1), "x")


def test_name_hash_matches_a_known_value() -> None:
    """e2fsck verifies every htree the tests build; this pins the unseeded default too
    (value from `debugfs -R 'dx_hash -h half_md4 hello'`)."""
    assert name_hash(b"hello", (0, 0, 0, 0))[0] == _debugfs_hash("hello")


def _debugfs_hash(name: str) -> int:
    out = subprocess.run(
        ["debugfs", "-R", f"dx_hash -h half_md4 {name}", "/dev/null"],
        capture_output=True,
        check=False,
    ).stdout
    m = re.search(rb"Hash of \S+ is 0x([0-9a-f]+)", out)
    assert m, out
    return int(m.group(1), 16)


def test_more_than_65000_subdirectories_use_dir_nlink(tmp_path: Path) -> None:
    """ext4 counts at most 65000 links; a directory with more subdirectories stores 1."""
    image = tmp_path / "nlink.ext4"
    root = new_dir()
    top = new_dir()
    assert root.children is not None and top.children is not None
    root.children["top"] = top
    for i in range(65_001):
        top.children[f"{i:05d}"] = new_dir()
    build(root, image)
    fsck(image)
    stat = subprocess.run(
        ["debugfs", "-R", "stat /top", str(image)], capture_output=True, check=True
    ).stdout
    assert re.search(rb"Links: 1\b", stat)


# Two names whose half-MD4 hashes (with HASH_SEED) collide: 0x57a04b10.
COLLIDING = ("c0009589", "c0068903")
COLLIDING_HASH = 0x57A04B10


def colliding_directory_tree() -> Inode:
    """A hashed directory whose first leaf ends between two names of equal hash, so the
    second leaf's index entry carries the continuation bit (hash | 1)."""
    seed = hash_seed_words(HASH_SEED.bytes)
    assert {name_hash(n.encode(), seed)[0] for n in COLLIDING} == {COLLIDING_HASH}
    below = [
        n
        for n in (f"f{i:07d}" for i in range(1000))
        if name_hash(n.encode(), seed)[0] < COLLIDING_HASH
    ]
    above = [
        n
        for n in (f"g{i:07d}" for i in range(300))
        if name_hash(n.encode(), seed)[0] > COLLIDING_HASH
    ]
    # 254 entries of 16 bytes, then one colliding name: 4080 of a leaf's 4084 bytes
    names = [*below[:254], *COLLIDING, *above[:100]]
    root = new_dir()
    directory = new_dir()
    assert root.children is not None and directory.children is not None
    root.children["d"] = directory
    for name in names:
        directory.children[name] = Inode(Kind.FILE, size=len(name), data=BytesData(name.encode()))
    return root


def test_equal_hashes_across_leaves_set_the_continuation_bit(tmp_path: Path) -> None:
    image = tmp_path / "collide.ext4"
    root = colliding_directory_tree()
    build(root, image)
    fsck(image)
    htree = subprocess.run(
        ["debugfs", "-R", "htree_dump /d", str(image)], capture_output=True, check=True
    ).stdout
    assert f"0x{COLLIDING_HASH | 1:08x}".encode() in htree
    assert_reads_back(root, image, tmp_path)
