"""Unusual inputs to the ext4 writer: a tree bringing its own lost+found, data streamed for a
file that the final tree no longer holds, and the one-line errors for what ext4 cannot store."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4 import Ext4Writer
from oci2vm.tree.model import BytesData, BytesReader, Inode, Kind, new_dir
from oci2vm.util.tools import have_program
from test_ext4 import FS_TIME, FS_UUID, HASH_SEED, assert_reads_back, build, fsck

pytestmark = pytest.mark.skipif(
    not (have_program("e2fsck") and have_program("debugfs")), reason="needs e2fsprogs"
)


def _writer(out: io.BufferedRandom) -> Ext4Writer:
    return Ext4Writer(out, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)


def test_tree_with_its_own_lost_found_keeps_it(tmp_path: Path) -> None:
    root = new_dir()
    lost_found = new_dir(mode=0o700, mtime_ns=123)
    assert root.children is not None and lost_found.children is not None
    root.children["lost+found"] = lost_found
    lost_found.children["#12"] = Inode(Kind.FILE, size=2, data=BytesData(b"hi"))
    image = tmp_path / "own-lpf.ext4"
    build(root, image)
    assert_reads_back(root, image, tmp_path)


def test_data_streamed_for_a_file_not_in_the_final_tree_is_left_free(tmp_path: Path) -> None:
    image = tmp_path / "orphan.ext4"
    root = new_dir()
    assert root.children is not None
    kept = Inode(Kind.FILE, size=5, data=BytesData(b"kept\n"))
    root.children["kept"] = kept
    blob = b"\1" * (3 << 20)
    dropped = Inode(Kind.FILE, size=len(blob), data=BytesData(blob))
    with image.open("w+b") as out:
        writer = _writer(out)
        writer.write_file(dropped, BytesReader(blob))
        writer.write_file(kept, BytesReader(b"kept\n"))
        result = writer.finish(root)
    fsck(image)  # its 768 blocks are free in the bitmaps
    assert_reads_back(root, image, tmp_path)
    with_dropped = tmp_path / "with.ext4"
    root.children["dropped"] = dropped
    assert build(root, with_dropped).free_blocks == result.free_blocks - 768


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
        (Inode(Kind.FILE, uid=1 << 32), "exceeds 32 bits"),
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
