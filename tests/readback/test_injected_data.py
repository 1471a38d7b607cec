"""Content a preparation step injects streams through the tree editor to the filesystem
writer, as layer data does (a kernel's modules, an initramfs): never held in memory, and
read back byte for byte."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from oci2vm.fs.ext4 import Ext4Writer
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import StreamedData, Tree, new_dir
from support.ext4check import FS_TIME, FS_UUID, HASH_SEED, fsck
from support.programs import requires

pytestmark = requires("e2fsck", "debugfs")


class Pieces:
    """A DataReader that hands out a pattern in small pieces, as a stream would."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.counter = 0

    def view(self, size: int) -> memoryview:
        take = min(size, self.left, 4000)
        piece = bytes((self.counter + i) % 251 for i in range(take))
        self.counter += take
        self.left -= take
        return memoryview(piece)


def pattern(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_streamed_files_land_in_the_filesystem(tmp_path: Path) -> None:
    image = tmp_path / "root.ext4"
    with image.open("wb") as out:
        writer = Ext4Writer(
            out, size=None, data_size_hint=3 << 20, uuid=FS_UUID, hash_seed=HASH_SEED,
            fs_time=FS_TIME,
        )  # fmt: skip
        tree = Tree(new_dir())
        edit = TreeEditor(tree, FS_TIME, sink=writer.write_file)
        big = edit.stream("/lib/modules/6.1/kernel/big.ko", Pieces(2_500_003), 2_500_003)
        empty = edit.stream("/boot/empty", Pieces(0), 0, mode=0o600)
        assert isinstance(big.data, StreamedData) and big.data.stored_size == 2_500_003
        assert empty.data is None
        writer.finish(tree.root)
    fsck(image)
    got = subprocess.run(
        ["debugfs", "-R", "cat /lib/modules/6.1/kernel/big.ko", str(image)],
        capture_output=True,
        check=True,
    ).stdout
    assert hashlib.sha256(got).digest() == hashlib.sha256(pattern(2_500_003)).digest()
    stat = subprocess.run(
        ["debugfs", "-R", "stat /boot/empty", str(image)], capture_output=True, check=True
    ).stdout.decode()
    assert "Mode:  0600" in stat and "Size: 0" in stat


def test_a_streamed_file_needs_a_sink() -> None:
    edit = TreeEditor(Tree(new_dir()), FS_TIME)
    with pytest.raises(ValueError, match="no sink"):
        edit.stream("/x", Pieces(1), 1)
