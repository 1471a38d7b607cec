"""The initramfs' partition growth (src/oci2vm/initramfs/growroot.sh's grow_table), run by
busybox sh on the host against disk image files enlarged after they were written: the
grown table is byte for byte the one oci2vm's own writers write for the larger disk, sgdisk
and sfdisk find nothing wrong with it, and a disk that is not laid out as oci2vm lays it
out, or has no room to grow into, is left as it was."""

from __future__ import annotations

import dataclasses
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from oci2vm.disk.gpt import TAIL_SECTORS, Partition, layout, write_gpt
from oci2vm.disk.mbr import MbrPartition, disk_signature_from_seed, write_mbr
from support.programs import requires
from support.tables import GIB, GPT_SPECS, mbr_partitions, write_mbr_disk

pytestmark = requires("busybox", "sgdisk", "sfdisk")

SECTOR = 512
GROWN = 3 * GIB + 5 * SECTOR  # +2 GiB on a 1 GiB disk, and a few odd sectors


def grow_table(tmp_path: Path, disk: Path, partno: int, start: int, size: int) -> str:
    """Run grow_table on `disk` as the kernel would see partition `partno`; returns
    "grown NEW_SIZE" or "refused: WHY"."""
    script = resources.files("oci2vm.initramfs").joinpath("growroot.sh").read_bytes()
    (tmp_path / "growroot.sh").write_bytes(script)
    sectors = disk.stat().st_size // SECTOR
    command = (
        f". ./growroot.sh; GROW_TMP={tmp_path}/grow; "
        f'if grow_table "$1" {sectors} {partno} {start} {size}; '
        'then echo "grown $GROW_NEW_SIZE"; else echo "refused: $GROW_WHY"; fi'
    )
    result = subprocess.run(["busybox", "sh", "-c", command, "sh", str(disk)],
                            capture_output=True, text=True, check=True, cwd=tmp_path)  # fmt: skip
    assert result.stderr == ""
    return result.stdout.strip()


def gpt_disk(path: Path, size: int = GIB) -> tuple[Path, tuple[Partition, ...]]:
    disk = layout(GPT_SPECS, seed=b"seed", disk_size=size)
    with path.open("wb") as out:
        out.truncate(disk.disk_size)
        write_gpt(out, disk.disk_size, disk.partitions, disk_guid=disk.disk_guid)
    return path, disk.partitions


def tables(path: Path) -> bytes:
    """Sector 0's table part, the primary GPT, and the disk's last 33 sectors: all that
    grow_table writes (the disks are sparse and GiBs long)."""
    with path.open("rb") as disk:
        head = disk.read((2 + 32) * SECTOR)[440:]
        disk.seek(-TAIL_SECTORS * SECTOR, 2)
        return head + disk.read()


def extent(partition: Partition) -> tuple[int, int]:
    return partition.first_lba, partition.last_lba - partition.first_lba + 1


def test_grown_gpt_is_the_one_oci2vm_writes_for_the_larger_disk(tmp_path: Path) -> None:
    disk, partitions = gpt_disk(tmp_path / "disk.img")
    with disk.open("r+b") as f:
        f.truncate(GROWN)
    root = partitions[-1]
    # The root ends on the last whole MiB before the backup GPT.
    new_last = (GROWN // SECTOR - TAIL_SECTORS) // 2048 * 2048 - 1
    assert grow_table(tmp_path, disk, 3, *extent(root)) == f"grown {new_last - root.first_lba + 1}"

    expected = tmp_path / "expected.img"
    grown = (*partitions[:-1], dataclasses.replace(root, last_lba=new_last))
    with expected.open("wb") as out:
        out.truncate(GROWN)
        write_gpt(
            out, GROWN, grown, disk_guid=layout(GPT_SPECS, seed=b"seed", disk_size=GIB).disk_guid
        )
    assert tables(disk) == tables(expected)
    verify = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True, check=True)
    assert "No problems found" in verify.stdout, verify.stdout
    subprocess.run(["sfdisk", "--verify", str(disk)], check=True, capture_output=True)


def test_a_grown_gpt_is_not_grown_again(tmp_path: Path) -> None:
    disk, partitions = gpt_disk(tmp_path / "disk.img")
    with disk.open("r+b") as f:
        f.truncate(GROWN)
    assert grow_table(tmp_path, disk, 3, *extent(partitions[-1])).startswith("grown ")
    before = tables(disk)
    again = grow_table(tmp_path, disk, 3, *extent(partitions[-1]))
    assert again == "refused: the backup GPT is already at the disk's end"
    assert tables(disk) == before


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ((SECTOR + 60, b"\x01"), "the GPT header's CRC32 does not check"),  # in DiskGUID
        ((2 * SECTOR + 200, b"\x01"), "the GPT entries' CRC32 does not check"),
        ((SECTOR, b"EFI-PART"), "no GPT header"),
    ],
)
def test_a_damaged_gpt_is_left_alone(tmp_path: Path, damage: tuple[int, bytes], why: str) -> None:
    disk, partitions = gpt_disk(tmp_path / "disk.img")
    with disk.open("r+b") as f:
        f.truncate(GROWN)
        f.seek(damage[0])
        f.write(damage[1])
    before = tables(disk)
    assert grow_table(tmp_path, disk, 3, *extent(partitions[-1])) == f"refused: {why}"
    assert tables(disk) == before


def test_gpt_root_not_last_or_not_as_the_kernel_sees_it_is_left_alone(tmp_path: Path) -> None:
    disk, partitions = gpt_disk(tmp_path / "disk.img")
    with disk.open("r+b") as f:
        f.truncate(GROWN)
    before = tables(disk)
    esp = partitions[1]
    assert grow_table(tmp_path, disk, 2, *extent(esp)) == (
        "refused: the root is not the disk's last partition"
    )
    first, size = extent(partitions[-1])
    assert grow_table(tmp_path, disk, 3, first, size + 8) == (
        "refused: GPT entry 3 is not the kernel's root partition"
    )
    assert tables(disk) == before


def test_less_than_a_mib_to_grow_into_is_left_alone(tmp_path: Path) -> None:
    disk, partitions = gpt_disk(tmp_path / "disk.img")
    with disk.open("r+b") as f:
        f.truncate(GIB + 16 * 1024)  # room for the backup GPT and less
    before = tables(disk)
    assert grow_table(tmp_path, disk, 3, *extent(partitions[-1])) == (
        "refused: less than 1 MiB to grow into"
    )
    assert tables(disk) == before


def test_grown_mbr_is_the_one_oci2vm_writes_for_the_larger_disk(tmp_path: Path) -> None:
    disk = write_mbr_disk(tmp_path / "disk.img", GIB, mbr_partitions(GIB), b"seed")
    with disk.open("r+b") as f:
        f.truncate(GROWN)
    esp, root = mbr_partitions(GIB)
    new_size = GROWN // SECTOR // 2048 * 2048 - root.first_lba
    assert grow_table(tmp_path, disk, 2, root.first_lba, root.sector_count) == f"grown {new_size}"
    expected = tmp_path / "expected.img"
    with expected.open("wb") as out:
        out.truncate(GROWN)
        grown = MbrPartition(root.type, root.first_lba, new_size)
        write_mbr(out, [esp, grown], disk_signature=disk_signature_from_seed(b"seed"))
    assert tables(disk)[:72] == tables(expected)[:72]
    subprocess.run(["sfdisk", "--verify", str(disk)], check=True, capture_output=True)


def test_mbr_root_not_last_is_left_alone(tmp_path: Path) -> None:
    disk = write_mbr_disk(tmp_path / "disk.img", GIB, mbr_partitions(GIB), b"seed")
    with disk.open("r+b") as f:
        f.truncate(GROWN)
    before = tables(disk)[:72]
    esp, _root = mbr_partitions(GIB)
    assert grow_table(tmp_path, disk, 1, esp.first_lba, esp.sector_count) == (
        "refused: the root is not the disk's last partition"
    )
    assert tables(disk)[:72] == before
