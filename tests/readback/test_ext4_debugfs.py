"""The ext4 writer's images pass `e2fsck -fn` and read back through debugfs equal to the tree
they were built from: type, mode, owner, times to the nanosecond, size, content, link targets,
device numbers, every xattr (ACLs converted back), hardlink groups; big and hashed
directories; a tree with its own lost+found; data streamed for a file the tree dropped."""

from __future__ import annotations

import io
import random
import re
import subprocess
from pathlib import Path

from oci2vm.fs.ext4 import Ext4Writer
from oci2vm.fs.ext4.dirs import name_hash, name_hash_py
from oci2vm.tree.model import BytesData, BytesReader, Inode, Kind, new_dir
from support.ext4check import (
    FS_TIME,
    FS_UUID,
    HASH_SEED,
    assert_reads_back,
    build,
    expected,
    fsck,
    read_back,
)
from support.ext4trees import (
    COLLIDING_HASH,
    big_directory_tree,
    colliding_directory_tree,
    every_case_tree,
    two_level_tree,
)
from support.programs import requires

pytestmark = requires("e2fsck", "debugfs")


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


def test_two_level_htree_when_the_root_index_is_full(tmp_path: Path) -> None:
    image = tmp_path / "huge-dir.ext4"
    build(two_level_tree(), image)
    fsck(image)
    htree = subprocess.run(
        ["debugfs", "-R", "htree_dump /d", str(image)], capture_output=True, check=True
    ).stdout
    assert b"Indirect levels: 1" in htree


def test_name_hash_matches_a_known_value() -> None:
    """e2fsck verifies every htree the tests build; this pins the unseeded default too
    (value from `debugfs -R 'dx_hash -h half_md4 hello'`)."""
    assert name_hash(b"hello", (0, 0, 0, 0))[0] == _debugfs_hash("hello")
    assert name_hash_py(b"hello", (0, 0, 0, 0))[0] == _debugfs_hash("hello")


def test_the_library_hash_is_the_python_one() -> None:
    """name_hash is libext2fs's ext2fs_dirhash() where the system has it (e2fsprogs, which
    these tests need): it must hash every name as name_hash_py(), the fallback, does."""
    assert name_hash is not name_hash_py  # the library is there, so it is what runs
    rng = random.Random(7)
    allowed = [b for b in range(1, 256) if b != ord("/")]
    names = [bytes(rng.choices(allowed, k=rng.randrange(1, 256))) for _ in range(3000)]
    names += [b"a" * n for n in range(1, 70)] + [b"\xff" * n for n in (1, 31, 32, 33, 255)]
    for seed in ((0, 0, 0, 0), (1, 2, 3, 4), (0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x12345678)):
        assert [name_hash(n, seed) for n in names] == [name_hash_py(n, seed) for n in names]


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


# -- unusual inputs ---------------------------------------------------------------------


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
