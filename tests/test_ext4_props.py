"""Random trees (odd names, depth, sparse files with many extents, big xattrs that need an
xattr block, ACLs, hardlink groups, devices, extreme owners and times) become ext4 images
that e2fsck passes and that debugfs reads back equal to the tree."""

from __future__ import annotations

import os
import random
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oci2vm.tree.model import BytesData, Inode, Kind, new_dir
from oci2vm.util.tools import have_program
from test_ext4 import assert_reads_back, build

pytestmark = pytest.mark.skipif(
    not (have_program("e2fsck") and have_program("debugfs")), reason="needs e2fsprogs"
)

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


@settings(
    max_examples=int(os.environ.get("EXT4_PROP_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(root=trees(), stream=st.booleans())
def test_random_trees_pass_e2fsck_and_read_back_equal(root: Inode, stream: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ext4-prop-"))
    try:
        image = workdir / "fs.ext4"
        build(root, image, stream=stream)
        assert_reads_back(root, image, workdir)
    finally:
        shutil.rmtree(workdir)
