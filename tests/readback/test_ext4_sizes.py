"""Where the ext4 writer puts things and how big it makes them, read back by e2fsck and
debugfs: a given size (exact, sparse, tight), writing at an offset into a larger disk,
stepping over the superblock copies, a file beyond 4 GiB, and GRUB's own driver reading
the result."""

from __future__ import annotations

import hashlib
import subprocess
import zlib
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4 import Ext4Writer, default_size, required_size
from oci2vm.tree.model import BytesData, Inode, Kind, LayerData, new_dir
from support.ext4check import (
    FS_TIME,
    FS_UUID,
    HASH_SEED,
    MIB,
    assert_reads_back,
    build,
    file_bytes,
    fsck,
    read_back,
)
from support.ext4trees import big_directory_tree, every_case_tree
from support.programs import requires

pytestmark = requires("e2fsck", "debugfs")


def test_given_size_is_exact_and_sparse(tmp_path: Path) -> None:
    image = tmp_path / "sized.ext4"
    result = build(every_case_tree(), image, size=3 * 1024 * MIB + 12345)
    assert image.stat().st_size == 3 * 1024 * MIB + 12345
    assert result.size == 3 * 1024 * MIB  # whole 4 KiB blocks
    assert image.stat().st_blocks * 512 < 40 * MIB  # holes, not zeros
    fsck(image)
    dump = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, check=True).stdout
    assert b"Total journal size:       64M" in dump  # as mke2fs for 3 GiB


def test_size_helpers_agree_with_the_writer(tmp_path: Path) -> None:
    data = 50 * MIB
    root = new_dir()
    assert root.children is not None
    for i in range(100):
        blob = bytes([i]) * (data // 100)
        root.children[f"f{i}"] = Inode(Kind.FILE, size=len(blob), data=BytesData(blob))
    need = required_size(data, 101)
    image = tmp_path / "tight.ext4"
    result = build(root, image, size=need, data_size_hint=data)
    assert result.size <= need
    fsck(image)
    assert default_size(data, 101) >= need + 256 * MIB


def test_offset_writes_into_a_partition_of_a_larger_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xaa" * 4096)  # something before the partition stays untouched
    root = every_case_tree()
    result = build(root, disk, offset=MIB, size=512 * MIB)
    assert disk.read_bytes()[:4096] == b"\xaa" * 4096
    assert disk.stat().st_size == MIB + 512 * MIB
    part = tmp_path / "part.ext4"
    with disk.open("rb") as src, part.open("wb") as dst:
        src.seek(MIB)
        while chunk := src.read(8 * MIB):
            dst.write(chunk)
    assert result.size == 512 * MIB
    assert_reads_back(root, part, tmp_path)


def test_superblock_backups_are_skipped_by_large_files(tmp_path: Path) -> None:
    """A 140 MiB file crosses into group 1: its data steps over that superblock copy."""
    image = tmp_path / "backups.ext4"
    root = new_dir()
    assert root.children is not None
    blob = hashlib.sha256(b"seed").digest() * (140 * MIB // 32)
    root.children["big"] = Inode(Kind.FILE, size=len(blob), data=BytesData(blob))
    build(root, image, data_size_hint=len(blob))
    fsck(image)
    got, _ = read_back(image, tmp_path)
    assert got["/big"].sha256 == hashlib.sha256(blob).hexdigest()


@requires("grub-fstest")
def test_grub_reads_the_filesystem(tmp_path: Path) -> None:
    """GRUB's own ext2/3/4 driver (grub-fstest runs it in user space) lists and reads files,
    including one whose extent tree has an index block, and a hashed directory."""
    image = tmp_path / "grub.ext4"
    root = every_case_tree()
    assert root.children is not None
    many_tree = big_directory_tree(2000).children
    assert many_tree is not None
    root.children["many"] = many_tree["many"]
    build(root, image)

    def grub(*args: str) -> str:
        proc = subprocess.run(["grub-fstest", str(image), *args], capture_output=True, check=True)
        return proc.stdout.decode("utf-8", "replace")

    listing = grub("ls", "/").split()
    assert {"hello.txt", "big.bin", "sparse", "lost+found/", "sub/", "many/"} <= set(listing)
    assert grub("cat", "/hello.txt") == "hello\n"
    assert grub("cat", "/sub/sym-a") == "hello\n"  # a symlink followed
    for name in ("big.bin", "sparse"):  # 3 MiB contiguous; 12 extents under an index block
        content = file_bytes(root.children[name])
        assert grub("crc", f"/{name}").strip() == f"{zlib.crc32(content):08x}"
    many = grub("ls", "/many").split()
    assert len(many) == 2000 and "entry-01999-" + "x" * (1999 % 40) in many


def test_smallest_filesystem_has_a_journal_and_smaller_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "tiny.ext4"
    root = new_dir()
    assert root.children is not None
    root.children["f"] = Inode(Kind.FILE, size=3, data=BytesData(b"abc"))
    assert required_size(0, 1) == 8 * MIB
    build(root, image, size=8 * MIB)
    assert_reads_back(root, image, tmp_path)
    with pytest.raises(Oci2vmError, match="too small"):
        build(root, tmp_path / "tinier.ext4", size=4 * MIB)


def test_file_beyond_4_gib_keeps_its_size_and_far_blocks(tmp_path: Path) -> None:
    """i_size_high (large_file) and a logical block past 2**20: a 5 GiB file, all holes but
    its last 100 bytes."""
    image = tmp_path / "large.ext4"
    size = 5 << 30
    root = new_dir()
    assert root.children is not None
    tail = BytesData(b"z" * 100, sparse=((size - 100, 100),))
    root.children["large"] = Inode(Kind.FILE, size=size, data=tail)
    build(root, image)
    fsck(image)
    stat = subprocess.run(
        ["debugfs", "-R", "stat /large", str(image)], capture_output=True, check=True
    ).stdout
    assert f"Size: {size}\n".encode() in stat
    assert b"(1310719):" in stat  # the one extent: the file's last block
    assert b"Blockcount: 8\n" in stat
    bmap = subprocess.run(
        ["debugfs", "-R", "bmap /large 1310719", str(image)], capture_output=True, check=True
    ).stdout
    with image.open("rb") as f:
        f.seek(int(bmap) * 4096 + 4096 - 100)
        assert f.read(100) == b"z" * 100


def test_tight_size_trades_spare_inodes_for_data(tmp_path: Path) -> None:
    """256 MiB holding 238 MiB of data: one inode per 16 KiB (4 MiB of inode tables) and the
    16 MiB journal would not fit, so the writer keeps just the inodes it needs plus room."""
    image = tmp_path / "tight.ext4"
    root = new_dir()
    assert root.children is not None
    blob = b"\7" * (238 * MIB)
    root.children["big"] = Inode(Kind.FILE, size=len(blob), data=BytesData(blob))
    result = build(root, image, size=256 * MIB)
    assert result.inodes_count < 1000
    fsck(image)


class _Repeat:
    """A DataReader of `size` bytes of one repeated pattern, without holding them."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._piece = memoryview(b"\7" * (1 << 20))

    def view(self, size: int) -> memoryview:
        piece = self._piece[: min(size, self._left)]
        self._left -= len(piece)
        return piece


@pytest.mark.parametrize("data_blocks", [59_000, 60_000, 60_250])
def test_a_given_size_counts_blocks_that_inodes_allocate_late(
    tmp_path: Path, data_blocks: int
) -> None:
    """Slow symlinks' blocks are allocated after the inode tables are placed: a size that
    holds them with fewer inodes must get fewer inodes, not fail."""
    root = new_dir()
    assert root.children is not None
    big = Inode(Kind.FILE, size=data_blocks * 4096, data=LayerData(0, 0, data_blocks * 4096))
    root.children["big"] = big
    for i in range(600):
        root.children[f"l{i:04d}"] = Inode(Kind.SYMLINK, target=b"/" + b"x" * 99, size=100)
    image = tmp_path / "late.ext4"
    with image.open("wb") as out:
        writer = Ext4Writer(out, size=256 * MIB, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)
        writer.write_file(big, _Repeat(data_blocks * 4096))
        result = writer.finish(root)
    assert result.size <= 256 * MIB
    fsck(image)
