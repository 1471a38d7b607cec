"""Files the ext4 writer streamed, read back before the metadata is written: what a
preparation step uses to look inside a file of the image (an initrd, a kernel module)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4 import Ext4Writer
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import BytesReader, Inode, Kind, StreamedData, Tree, new_dir
from support.ext4check import FS_TIME, FS_UUID, HASH_SEED


def data(seed: str, size: int) -> bytes:
    return hashlib.shake_256(seed.encode()).digest(size)


def streamed(size: int) -> Inode:
    return Inode(Kind.FILE, mode=0o644, size=size, data=StreamedData(size) if size else None)


def test_streamed_files_read_back_whole_while_more_are_written(tmp_path: Path) -> None:
    out = tmp_path / "fs.ext4"
    out.write_bytes(b"")
    with open(out, "r+b") as f:
        writer = Ext4Writer(f, size=None, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)
        contents = {name: data(name, size) for name, size in
                    (("a", 3 * 4096 + 100), ("b", 1), ("c", 5 << 20))}  # fmt: skip
        inodes = {}
        for name, content in contents.items():
            inodes[name] = streamed(len(content))
            writer.write_file(inodes[name], BytesReader(content))
            assert writer.read_file(inodes[name], 8 << 20) == content
        for name, content in contents.items():
            assert writer.read_file(inodes[name], 8 << 20) == content
        late = streamed(70_000)
        writer.write_file(late, BytesReader(data("late", 70_000)))
        assert writer.read_file(late, 1 << 20) == data("late", 70_000)
        with pytest.raises(Oci2vmError, match="more than oci2vm reads back"):
            writer.read_file(inodes["c"], 1 << 20)
        assert writer.read_file(streamed(10), 100) is None  # never streamed
        root = new_dir()
        assert root.children is not None
        root.children.update({"a": inodes["a"], "late": late})
        writer.finish(root)


def test_the_editor_reads_files_in_memory_or_streamed_through_symlinks(tmp_path: Path) -> None:
    out = tmp_path / "fs.ext4"
    out.write_bytes(b"")
    with open(out, "r+b") as f:
        writer = Ext4Writer(f, size=None, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)
        tree = Tree(new_dir())
        edit = TreeEditor(tree, FS_TIME, sink=writer.write_file, read_back=writer.read_file)
        edit.stream("/boot/initrd.img-1", BytesReader(b"x" * 9000), 9000)
        edit.write("/etc/small", b"held")
        edit.symlink("/initrd.img", "boot/initrd.img-1")
        assert edit.read_file("/initrd.img", 1 << 20) == b"x" * 9000
        assert edit.read_file("/etc/small", 10) == b"held"
        assert edit.read_file("/missing", 10) is None
        assert edit.read_file("/boot", 10) is None
