"""Trees for the ext4 tests: one with every case an image can hold, big and hashed
directories, names whose hashes collide across leaves, many small files, deep chains of
directories, and a Hypothesis strategy for random trees (`trees`); and an output that
discards what is written (DiscardingOutput), for filesystems too big to keep."""

from __future__ import annotations

import io
import random
import struct

from hypothesis import strategies as st

from oci2vm.fs.ext4.dirs import hash_seed_words, name_hash
from oci2vm.tree.model import BytesData, Inode, Kind, new_dir
from support.ext4check import FS_TIME, HASH_SEED, MIB


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


class DiscardingOutput(io.BytesIO):
    """An output with no file descriptor that keeps nothing: it counts the bytes written
    (`written`) and remembers the size the output was made to span (`size`)."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = 0
        self.size = 0
        self.written = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.size + pos if whence == 2 else self.pos + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def write(self, data: object) -> int:
        n = memoryview(data).nbytes  # type: ignore[arg-type]
        self.pos += n
        self.size = max(self.size, self.pos)
        self.written += n
        return n

    def truncate(self, size: int | None = None) -> int:
        self.size = self.pos if size is None else size
        return self.size


def small_files_tree(count: int, content: bytes = b"") -> Inode:
    """`count` files holding `content` (empty: an inode but no data block), a thousand to
    a directory."""
    root = new_dir()
    assert root.children is not None
    for i in range(count):
        group = f"g{i // 1000:04d}"
        if group not in root.children:
            root.children[group] = new_dir()
        folder = root.children[group].children
        assert folder is not None
        folder[f"f{i:06d}"] = Inode(Kind.FILE, size=len(content), data=BytesData(content))
    return root


def deep_tree(depth: int) -> tuple[Inode, str]:
    """A chain of `depth` directories named d with a file at its bottom; and its path."""
    root = directory = new_dir()
    for _ in range(depth):
        assert directory.children is not None
        directory.children["d"] = directory = new_dir()
    assert directory.children is not None
    directory.children["bottom"] = Inode(Kind.FILE, size=6, data=BytesData(b"found\n"))
    return root, "/d" * depth + "/bottom"


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


def two_level_tree() -> Inode:
    root = new_dir()
    big = new_dir()
    assert root.children is not None and big.children is not None
    root.children["d"] = big
    for i in range(9_000):  # 15 names of 250 bytes per leaf: 600 leaves, the root holds 507
        big.children[f"{i:06d}-" + "n" * 243] = Inode(Kind.FIFO)
    return root


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


# -- random trees (Hypothesis) ---------------------------------------------------------

MIN_NS = -(2**31) * 10**9
MAX_NS = (3 * 2**32 - 2**31 - 1) * 10**9 + 999_999_999  # e2fsck's limit, 2310

# Names: raw bytes (decoded with surrogateescape as the tree does) or UTF-8 text. debugfs
# prints a name on one line, so read-back through it needs names without a newline.
_byte_names = st.binary(min_size=1, max_size=40).filter(
    lambda b: b not in (b".", b"..") and not (set(b) & {0, 0x2F, 0x0A})
)
_text_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0\n"),
    min_size=1,
    max_size=60,
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)
names = st.one_of(_byte_names.map(lambda b: b.decode("utf-8", "surrogateescape")), _text_names)
times = st.one_of(st.integers(MIN_NS, MAX_NS), st.integers(-(10**18), 10**19), st.just(0))
# 2**32 - 1 is Linux's "no id" (-1): the kernel shows it as the overflow id and root's
# capabilities do not cover it, so a tree cannot meaningfully carry it.
owners = st.one_of(st.integers(0, 2**32 - 2), st.integers(0, 70000))
_xattr_keys = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=30)


@st.composite
def acls(draw: st.DrawFn) -> bytes:
    entries = [(0x01, draw(st.integers(0, 7)), 0xFFFFFFFF)]
    named = draw(st.lists(st.tuples(st.sampled_from([0x02, 0x08]), st.integers(0, 2**32 - 2))))
    entries += [(tag, draw(st.integers(0, 7)), ident) for tag, ident in sorted(set(named))]
    entries.append((0x04, draw(st.integers(0, 7)), 0xFFFFFFFF))
    if named:
        entries.append((0x10, draw(st.integers(0, 7)), 0xFFFFFFFF))
    entries.append((0x20, draw(st.integers(0, 7)), 0xFFFFFFFF))
    entries.sort(key=lambda e: (e[0], e[2]))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


@st.composite
def xattr_sets(draw: st.DrawFn, is_dir: bool) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    budget = 3000  # what fits in one 4 KiB xattr block with its entries
    for prefix in draw(st.lists(st.sampled_from(["user.", "trusted.", "security."]), max_size=5)):
        name = prefix + draw(_xattr_keys)
        big = draw(st.booleans()) and budget > 1200
        value = draw(st.binary(min_size=0, max_size=1100 if big else 40))
        if len(value) + 60 <= budget:
            out[name] = value
            budget -= len(value) + 60
    if draw(st.integers(0, 3)) == 0:
        out["system.posix_acl_access"] = draw(acls())
    if is_dir and draw(st.integers(0, 3)) == 0:
        out["system.posix_acl_default"] = draw(acls())
    return out


@st.composite
def file_data(draw: st.DrawFn) -> tuple[int, BytesData | None]:
    """(size, data): dense, empty, or a sparse map of up to 12 regions (often > 4 extents)."""
    seed = draw(st.integers(0, 2**16))
    rng = random.Random(seed)
    shape = draw(st.sampled_from(["empty", "dense", "sparse", "hole"]))
    if shape == "empty":
        return 0, None
    if shape == "hole":
        return draw(st.integers(1, 3 << 20)), BytesData(b"", sparse=())
    if shape == "dense":
        size = draw(st.integers(1, 300_000))
        return size, BytesData(rng.randbytes(size))
    regions = []
    at = 0
    for _ in range(draw(st.integers(1, 12))):
        at += draw(st.integers(0, 40_000))
        length = draw(st.integers(1, 20_000))
        regions.append((at, length))
        at += length
    size = at + draw(st.integers(0, 50_000))
    content = rng.randbytes(sum(length for _, length in regions))
    return size, BytesData(content, sparse=tuple(regions))


@st.composite
def trees(draw: st.DrawFn) -> Inode:
    root = new_dir(mode=draw(st.integers(0, 0o7777)), mtime_ns=draw(times))
    dirs = [root]
    files: list[Inode] = []
    for _ in range(draw(st.integers(0, 60))):
        parent = draw(st.sampled_from(dirs))
        assert parent.children is not None
        name = draw(names)
        if name in parent.children or (parent is root and name == "lost+found"):
            continue
        kind = draw(st.sampled_from(list(Kind)))
        node = Inode(
            kind,
            mode=draw(st.integers(0, 0o7777)),
            uid=draw(owners),
            gid=draw(owners),
            mtime_ns=draw(times),
            atime_ns=draw(st.none() | times),
            ctime_ns=draw(st.none() | times),
        )
        if kind is Kind.DIR:
            node.children = {}
            dirs.append(node)
        elif kind is Kind.FILE:
            node.size, node.data = draw(file_data())
            files.append(node)
        elif kind is Kind.SYMLINK:
            target = draw(
                st.binary(min_size=1, max_size=300).filter(lambda b: not set(b) & {0, 10})
            )
            node.target, node.size = target, len(target)
        elif kind in (Kind.CHAR, Kind.BLOCK):
            node.rdev_major = draw(st.integers(0, 4095))
            node.rdev_minor = draw(st.integers(0, 2**20 - 1))
        node.xattrs = draw(xattr_sets(kind is Kind.DIR))
        parent.children[name] = node
    # hardlink groups: more names for some files (and symlinks/devices) elsewhere
    linkable = [n for d in dirs for n in (d.children or {}).values() if n.kind is not Kind.DIR]
    for _ in range(draw(st.integers(0, 10)) if linkable else 0):
        target = draw(st.sampled_from(linkable))
        parent = draw(st.sampled_from(dirs))
        assert parent.children is not None
        name = draw(names)
        if name not in parent.children and not (parent is root and name == "lost+found"):
            parent.children[name] = target
    return root
