"""ext4 images of hostile sizes and shapes, read back by e2fsck and debugfs: the largest
size (backup superblocks past group 65535), an image's own lost+found that is a file, a
symlink or a populated directory, 100,000 empty files in a default size, and a directory
chain 3,000 deep."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from oci2vm.fs.ext4.layout import MAX_SIZE, crc32c
from oci2vm.tree.model import BytesData, Inode, Kind, new_dir
from support.ext4check import MIB, assert_reads_back, build, fsck
from support.ext4trees import deep_tree, small_files_tree
from support.programs import requires

pytestmark = requires("e2fsck", "debugfs")


def _one_file() -> Inode:
    root = new_dir()
    assert root.children is not None
    root.children["f"] = Inode(Kind.FILE, size=3, data=BytesData(b"abc"))
    return root


def test_the_largest_filesystem_a_host_file_holds_is_clean(tmp_path: Path) -> None:
    """16 TiB less one block (a host's ext4 holds no larger file): 131,072 groups, whose
    backups in groups 78125 and 117649 cannot say their number in 16 bits."""
    image = tmp_path / "largest.ext4"
    size = MAX_SIZE - 4096
    result = build(_one_file(), image, size=size)
    assert result.size == size and image.stat().st_size == size
    assert image.stat().st_blocks * 512 < 1024 * MIB  # holes, not zeros
    fsck(image)
    with image.open("rb") as f:
        f.seek(1024)
        primary = f.read(1024)
        for group in (78125, 117649):  # dumpe2fs -o superblock= cannot reach them
            f.seek(group * 32768 * 4096)
            backup = f.read(1024)
            assert int.from_bytes(backup[0x5A:0x5C], "little") == 65535  # as mke2fs
            assert backup[:0x5A] + backup[0x5C:0x3FC] == primary[:0x5A] + primary[0x5C:0x3FC]
            assert int.from_bytes(backup[0x3FC:], "little") == crc32c(0xFFFFFFFF, backup[:0x3FC])


def _lost_found_file() -> Inode:
    return Inode(Kind.FILE, mode=0o600, size=6, data=BytesData(b"found\n"), mtime_ns=10**18)


def _lost_found_symlink() -> Inode:
    return Inode(Kind.SYMLINK, mode=0o777, target=b"/tmp", size=4, mtime_ns=10**18)


def _lost_found_populated() -> Inode:
    found = new_dir(mode=0o755, uid=1000, mtime_ns=10**18)
    assert found.children is not None
    found.children["#12345"] = Inode(Kind.FILE, size=2, data=BytesData(b"x\n"))
    sub = found.children["sub"] = new_dir()
    assert sub.children is not None
    sub.children["deeper"] = Inode(Kind.SYMLINK, target=b"..", size=2)
    for i in range(300):  # more than one block of entries: a hashed directory
        found.children[f"entry-{i:04d}-" + "n" * 30] = Inode(Kind.FIFO)
    return found


@pytest.mark.parametrize(
    "make",
    [_lost_found_file, _lost_found_symlink, _lost_found_populated],
    ids=["file", "symlink", "populated-directory"],
)
def test_an_images_own_lost_found_is_kept_and_clean(
    tmp_path: Path, make: Callable[[], Inode]
) -> None:
    root = _one_file()
    assert root.children is not None
    root.children["lost+found"] = make()
    image = tmp_path / "lost-found.ext4"
    build(root, image)
    assert_reads_back(root, image, tmp_path)


def test_a_default_size_holds_100000_empty_files(tmp_path: Path) -> None:
    image = tmp_path / "many.ext4"
    result = build(small_files_tree(100_000), image)
    fsck(image)
    assert result.inodes_count - result.free_inodes == 11 + 100 + 100_000
    listed = subprocess.run(
        ["debugfs", "-R", "ls -l /g0099", str(image)], capture_output=True, check=True
    ).stdout
    assert listed.count(b" f0") == 1000


def test_a_chain_of_3000_directories_is_clean_and_reachable(tmp_path: Path) -> None:
    root, bottom = deep_tree(3000)
    image = tmp_path / "deep.ext4"
    result = build(root, image)
    fsck(image)
    assert result.inodes_count - result.free_inodes == 11 + 3000 + 1
    content = subprocess.run(
        ["debugfs", "-R", f"cat {bottom}", str(image)], capture_output=True, check=True
    ).stdout
    assert content == b"found\n"
