"""The writer's ext4 grows with its partition: e2fsprogs' resize2fs grows an image enlarged
by 2 GiB, and by 100 times, and e2fsck -fn finds it clean after.

The writer sets neither resize_inode nor meta_bg. Offline, resize2fs moves what is in the
way of a larger group descriptor table. Online (EXT4_IOC_RESIZE_FS, what resize2fs and
systemd-growfs use on a mounted root), Linux converts such a filesystem to meta_bg first
(fs/ext4/resize.c, ext4_resize_fs: neither resize_inode nor meta_bg -> ext4_convert_meta_bg,
since Linux 3.7), which GRUB's ext2 driver reads; the online test needs CAP_SYS_RESOURCE
and a loop device, and the boot test tests/boot/test_disk_growth.py grows it in a guest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.ext4check import build, fsck
from support.ext4trees import two_level_tree
from support.programs import requires

pytestmark = requires("resize2fs", "e2fsck", "dumpe2fs")

BLOCK = 4096


def built(path: Path) -> int:
    """A filesystem of the writer's default size for a small tree; its size in bytes."""
    return build(two_level_tree(), path).size


def block_count(image: Path) -> int:
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    (line,) = (line for line in out.splitlines() if line.startswith("Block count:"))
    return int(line.split(":")[1])


@pytest.mark.parametrize(("factor", "extra"), [(1, 2 << 30), (100, 0)], ids=["+2GiB", "x100"])
def test_resize2fs_grows_the_writers_ext4_offline_and_e2fsck_is_clean(
    tmp_path: Path, factor: int, extra: int
) -> None:
    image = tmp_path / "root.ext4"
    size = built(image)
    new_size = size * factor + extra
    with image.open("r+b") as f:
        f.truncate(new_size)
    subprocess.run(["resize2fs", str(image)], check=True, capture_output=True)
    assert block_count(image) == new_size // BLOCK
    fsck(image)


@pytest.mark.root
@requires("mount", "umount")
def test_the_mounted_ext4_grows_online_by_two_gib(tmp_path: Path) -> None:
    image = tmp_path / "root.ext4"
    size = built(image)
    with image.open("r+b") as f:
        f.truncate(size + (2 << 30))
    where = tmp_path / "mnt"
    where.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    try:
        mounts = (line.split() for line in Path("/proc/mounts").read_text().splitlines())
        (source,) = (fields[0] for fields in mounts if fields[1] == str(where))
        grow = subprocess.run(["resize2fs", source], capture_output=True, text=True, check=False)
    finally:
        subprocess.run(["umount", str(where)], check=True)
    if "Permission denied to resize" in grow.stderr:
        pytest.skip("the kernel refuses EXT4_IOC_RESIZE_FS here (no CAP_SYS_RESOURCE)")
    assert grow.returncode == 0, grow.stderr
    assert block_count(image) == (size + (2 << 30)) // BLOCK
    fsck(image)
