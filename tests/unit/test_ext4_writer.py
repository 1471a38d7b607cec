"""The ext4 writer without reading its images back: time and ACL encodings, extent trees,
the size rule and sizes that are too small, reproducible bytes, and the one-line errors
for inputs ext4 cannot store. (tests/readback/test_ext4_*.py read images back.)"""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.fs import blockio
from oci2vm.fs.ext4 import Ext4Writer, dirs
from oci2vm.fs.ext4.inode import (
    Extent,
    InodeFields,
    build_extent_tree,
    decode_time,
    encode_time,
    extent_tree_blocks,
    leaves_length,
    leaves_tree,
    pack_inode,
    pack_inode_into,
    pack_leaves,
    split_extents,
    unpack_leaves,
)
from oci2vm.fs.ext4.layout import INODE_SIZE
from oci2vm.fs.ext4.xattr import acl_to_ext4
from oci2vm.tree.model import BytesData, BytesReader, Inode, Kind, new_dir
from support.ext4check import FS_TIME, FS_UUID, HASH_SEED, MIB, build
from support.ext4trees import UNUSED, acl, every_case_tree

# -- encodings ------------------------------------------------------------------------


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


@pytest.mark.parametrize("count", [0, 1, 4, 5, 340, 341, 1360, 1361, 340 * 340 * 4 + 1])
def test_extent_tree_blocks_counts_what_build_extent_tree_allocates(count: int) -> None:
    """The writer sizes the filesystem before packing inodes with this count."""
    extents = [Extent(i, 1000 + 2 * i, 1) for i in range(count)]
    blocks = iter(range(10_000_000, 20_000_000))
    tree = build_extent_tree(extents, lambda: next(blocks), 0)
    assert extent_tree_blocks(count) == len(tree.blocks)


@pytest.mark.parametrize(
    "runs",
    [
        [],
        [(0, 5000, 7)],
        [(0, 5000, 70_000)],  # split into 32768-block extents
        [(0, 1 << 33, 3), (10, (1 << 33) + 100, 2)],  # physical blocks past 32 bits
        [(i * 3, 1000 + i * 5, 2) for i in range(700)],  # needs index blocks
    ],
)
def test_packed_leaves_make_the_same_tree_as_extents(runs: list[tuple[int, int, int]]) -> None:
    """The writer keeps each file's extents as packed leaf entries; the inode built from
    them must equal the one built from Extent objects."""
    packed = pack_leaves(runs)
    extents = split_extents(runs)
    assert unpack_leaves(packed) == extents
    assert leaves_length(packed) == sum(e.length for e in extents)
    blocks_a, blocks_b = iter(range(1 << 20, 1 << 21)), iter(range(1 << 20, 1 << 21))
    from_leaves = leaves_tree(packed, lambda: next(blocks_a), 7)
    from_extents = build_extent_tree(extents, lambda: next(blocks_b), 7)
    assert (from_leaves.i_block, from_leaves.blocks) == (from_extents.i_block, from_extents.blocks)


# -- sizes and bytes -------------------------------------------------------------------


def test_default_size_leaves_a_quarter_free_and_at_least_256_mib(tmp_path: Path) -> None:
    image = tmp_path / "default.ext4"
    root = every_case_tree()
    result = build(root, image)
    assert result.free_blocks * 4096 >= 256 * MIB
    assert result.free_inodes >= 256
    used = result.blocks_count - result.free_blocks
    assert result.free_blocks >= used // 4
    assert result.size < 300 * MIB


def test_too_small_size_fails_before_anything_is_written(tmp_path: Path) -> None:
    image = tmp_path / "small.ext4"
    with image.open("wb") as out, pytest.raises(Oci2vmError, match="too small"):
        Ext4Writer(
            out,
            size=64 * MIB,
            data_size_hint=100 * MIB,
            inode_count_hint=1000,
            uuid=FS_UUID,
            hash_seed=HASH_SEED,
            fs_time=FS_TIME,
        )
    assert image.stat().st_size == 0


def test_data_beyond_a_given_size_is_an_error(tmp_path: Path) -> None:
    root = new_dir()
    assert root.children is not None
    blob = b"\1" * (40 * MIB)
    root.children["big"] = Inode(Kind.FILE, size=len(blob), data=BytesData(blob))
    with pytest.raises(Oci2vmError, match="larger --size"):
        build(root, tmp_path / "overflow.ext4", size=32 * MIB)


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    digests = []
    for n in range(2):
        image = tmp_path / f"{n}.ext4"
        build(every_case_tree(), image)
        digests.append(hashlib.sha256(image.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.parametrize(("in_memory", "punch"), [(False, True), (False, False), (True, False)])
def test_data_of_a_file_dropped_after_it_was_placed_does_not_stay_in_free_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool, punch: bool
) -> None:
    """A layer's later entry at the same path replaces a file whose data is already on
    disk (tar -r duplicates, a directory replaced): its blocks are free, and read as
    zeros, not as the old content (a secret a later entry meant to remove): a hole
    punched, or zeros written where none can be."""
    if not punch:
        monkeypatch.setattr(blockio, "punch_hole", lambda *_args: False)
    secret = b"SECRET-API-KEY-" * 1000
    old = Inode(Kind.FILE, size=len(secret), data=BytesData(secret))
    new = Inode(Kind.FILE, size=3, data=BytesData(b"new"))
    root = new_dir()
    assert root.children is not None
    root.children["etc"] = new
    path = tmp_path / "fs.ext4"
    with path.open("w+b") as file:
        out: io.BufferedRandom | io.BytesIO = io.BytesIO() if in_memory else file
        writer = Ext4Writer(out, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)
        writer.write_file(old, BytesReader(secret))
        writer.write_file(new, BytesReader(b"new"))
        writer.finish(root)
        image = out.getvalue() if isinstance(out, io.BytesIO) else path.read_bytes()
    assert b"SECRET-API-KEY" not in image
    assert b"new" in image


# -- inputs ext4 cannot take -----------------------------------------------------------


def _writer(out: io.BufferedRandom) -> Ext4Writer:
    return Ext4Writer(out, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (Inode(Kind.SYMLINK, target=b"x" * 4096, size=4096), "symlink target"),
        (Inode(Kind.SYMLINK, target=b"", size=0), "symlink target"),
        (Inode(Kind.FILE, xattrs={"user.a": b"v" * 5000}), "extended attributes need"),
        (Inode(Kind.FILE, xattrs={"os2.name": b"v"}), "namespace"),
        (Inode(Kind.FILE, xattrs={"system.posix_acl_access": b"\2\0\0\0\1"}), "malformed"),
        (Inode(Kind.FILE, size=10, data=BytesData(b"ab", sparse=((9, 2),))), "sparse map"),
        (Inode(Kind.CHAR, rdev_major=4096), "device 4096:0"),
        (Inode(Kind.FILE, uid=1 << 32), "out of range"),
        # (uid_t)-1 fits the field, but no file can be owned by it
        (Inode(Kind.FILE, uid=(1 << 32) - 1), "owner 4294967295:0 is out of range"),
        (Inode(Kind.FIFO, gid=(1 << 32) - 1), "owner 0:4294967295 is out of range"),
    ],
)
def test_what_ext4_cannot_store_is_a_one_line_error(
    tmp_path: Path, node: Inode, message: str
) -> None:
    root, sub = new_dir(), new_dir()
    assert root.children is not None and sub.children is not None
    root.children["sub"] = sub
    sub.children["bad"] = node
    with pytest.raises(Oci2vmError, match=message) as info:
        build(root, tmp_path / "bad.ext4")
    assert "\n" not in str(info.value)
    if message != "sparse map":  # found while placing the data, not the inode
        assert str(info.value).startswith("/sub/bad: ")


def test_a_name_ext4_cannot_hold_is_refused_naming_its_directory(tmp_path: Path) -> None:
    root, sub, deeper = new_dir(), new_dir(), new_dir()
    assert root.children is not None and sub.children is not None
    assert deeper.children is not None
    root.children["sub"] = sub
    sub.children["deeper"] = deeper
    deeper.children["n" * 256] = Inode(Kind.FILE)
    with pytest.raises(Oci2vmError, match=r"^in /sub/deeper: file name 'n+\.\.\.n+' \(256 bytes\)"):
        build(root, tmp_path / "name.ext4")


def test_a_directory_hardlinked_below_the_root_is_refused_naming_its_second_path(
    tmp_path: Path,
) -> None:
    root, a, c, shared = new_dir(), new_dir(), new_dir(), new_dir()
    assert root.children is not None and a.children is not None and c.children is not None
    root.children["a"], root.children["c"] = a, c
    a.children["d"] = c.children["d"] = shared
    with pytest.raises(Oci2vmError, match=r"^/c/d: a directory cannot be hardlinked$"):
        build(root, tmp_path / "dirlink.ext4")


def test_a_directory_beyond_a_two_level_hash_tree_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Millions of entries in one directory; the tree's limits made small here.)"""
    monkeypatch.setattr(dirs, "ROOT_LIMIT", 2)
    monkeypatch.setattr(dirs, "NODE_LIMIT", 2)
    root, big = new_dir(), new_dir()
    assert root.children is not None and big.children is not None
    root.children["big"] = big
    for n in range(200):
        big.children[f"{n:0>200}"] = Inode(Kind.FIFO)
    with pytest.raises(
        Oci2vmError, match=r"^/big: a directory of 200 entries is more than ext4's two-level"
    ):
        build(root, tmp_path / "big.ext4")


def test_a_file_written_twice_is_a_bug(tmp_path: Path) -> None:
    node = Inode(Kind.FILE, size=1, data=BytesData(b"a"))
    with (tmp_path / "twice.ext4").open("w+b") as out:
        writer = _writer(out)
        writer.write_file(node, BytesReader(b"a"))
        with pytest.raises(ValueError, match="twice"):
            writer.write_file(node, BytesReader(b"a"))


def test_short_file_data_is_an_error(tmp_path: Path) -> None:
    node = Inode(Kind.FILE, size=10, data=BytesData(b"0123456789"))
    with (tmp_path / "short.ext4").open("w+b") as out:
        writer = _writer(out)
        with pytest.raises(Oci2vmError, match="ended before"):
            writer.write_file(node, BytesReader(b"01234"))


def test_a_directory_at_two_paths_is_an_error_naming_the_second(tmp_path: Path) -> None:
    root, shared = new_dir(), new_dir()
    assert root.children is not None
    root.children["a"] = root.children["b"] = shared
    with pytest.raises(Oci2vmError, match=r"^/b: a directory cannot be hardlinked$"):
        build(root, tmp_path / "dirlink.ext4")


def test_an_inode_packed_into_a_table_is_the_inode_packed_alone() -> None:
    fields = InodeFields(
        mode=0o100644, uid=70000, gid=5, size=(1 << 32) + 7, links=2, blocks_512=8,
        flags=0x80000, i_block=bytes(range(60)), atime_ns=1, ctime_ns=2 * 10**9,
        mtime_ns=-(10**18), crtime_ns=1_700_000_000 * 10**9, file_acl=(1 << 33) + 1,
        ibody_xattrs=b"\x00\x00\x02\xea" + b"x" * 20,
    )  # fmt: skip
    table = bytearray(3 * INODE_SIZE)
    pack_inode_into(table, INODE_SIZE, fields, 12345)
    assert table[INODE_SIZE : 2 * INODE_SIZE] == pack_inode(fields, 12345)
    assert not any(table[:INODE_SIZE]) and not any(table[2 * INODE_SIZE :])


def test_plain_inodes_packed_from_columns_match_the_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finish() packs most inodes straight from the store's columns (_plain_packer) and
    the rest through _inode(): the same tree written with every inode sent the general way
    must give the same bytes, and both ways must have been taken."""
    fast = tmp_path / "fast.img"
    build(every_case_tree(), fast)
    real = Ext4Writer._plain_packer
    taken: list[bool] = []

    def counting(self: Ext4Writer, *args: object) -> object:
        pack = real(self, *args)  # type: ignore[arg-type]

        def count(*a: object) -> bool:
            taken.append(pack(*a))  # type: ignore[arg-type]
            return taken[-1]

        return count

    monkeypatch.setattr(Ext4Writer, "_plain_packer", counting)
    build(every_case_tree(), tmp_path / "counted.img")
    assert True in taken and False in taken
    monkeypatch.setattr(Ext4Writer, "_plain_packer", lambda *_: lambda *_a: False)
    general = tmp_path / "general.img"
    build(every_case_tree(), general)
    assert fast.read_bytes() == general.read_bytes()
