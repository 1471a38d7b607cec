"""Sample partition tables and ESP contents that unit tests and tool read-backs share:
one MBR and one GPT of known shape, and a FAT file set that exercises every naming rule."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from oci2vm.arch import Arch
from oci2vm.disk.gpt import (
    ATTR_LEGACY_BIOS_BOOTABLE,
    BIOS_BOOT,
    ESP,
    Partition,
    PartitionSpec,
    layout,
    write_gpt,
)
from oci2vm.disk.mbr import TYPE_ESP, TYPE_LINUX, MbrPartition, disk_signature_from_seed, write_mbr
from oci2vm.disk.placement import place_partitions
from oci2vm.fs.fat import write_fat

MIB = 1024 * 1024
GIB = 1024 * MIB
ROOT_X86_64 = Arch.AMD64.facts.root_partition_type


# -- MBR --------------------------------------------------------------------------------


def mbr_partitions(disk_size: int) -> list[MbrPartition]:
    _, extents = place_partitions([100 * MIB, None], disk_size=disk_size)
    (esp_first, esp_last), (root_first, root_last) = extents
    return [
        MbrPartition(TYPE_ESP, esp_first, esp_last - esp_first + 1, bootable=True),
        MbrPartition(TYPE_LINUX, root_first, root_last - root_first + 1),
    ]


def write_mbr_disk(path: Path, disk_size: int, partitions: list[MbrPartition], seed: bytes) -> Path:
    with path.open("wb") as out:
        out.truncate(disk_size)
        write_mbr(out, partitions, disk_signature=disk_signature_from_seed(seed))
    return path


def read_sector0(path: Path) -> bytes:
    with path.open("rb") as image:
        return image.read(512)


# -- GPT --------------------------------------------------------------------------------


GPT_SPECS = [
    PartitionSpec(BIOS_BOOT, "BIOS boot", 1 * MIB),
    PartitionSpec(ESP, "EFI System", 64 * MIB, ATTR_LEGACY_BIOS_BOOTABLE),
    PartitionSpec(ROOT_X86_64, "root-x86-64 ✓", None),
]


def write_gpt_disk(
    path: Path, disk_size: int, partitions: tuple[Partition, ...], guid: uuid.UUID
) -> Path:
    with path.open("wb") as out:
        out.truncate(disk_size)
        write_gpt(out, disk_size, partitions, disk_guid=guid)
    return path


def gpt_disk(path: Path, seed: bytes = b"seed", disk_size: int = GIB) -> Path:
    disk = layout(GPT_SPECS, seed=seed, disk_size=disk_size)
    return write_gpt_disk(path, disk.disk_size, disk.partitions, disk.disk_guid)


# -- FAT --------------------------------------------------------------------------------


MTIME = 1700000000  # 2023-11-14T22:13:20Z


def fat_files() -> dict[str, bytes]:
    rng = random.Random(7)
    files = {
        "EFI/BOOT/BOOTX64.EFI": rng.randbytes(300_001),
        "EFI/BOOT/grub.cfg": b"search --label root\nconfigfile /boot/grub/grub.cfg\n",
        "EFI/debian/README": b"exact 8.3 upper-case name\n",
        "loader/entries/a very long name, with spaces.conf": rng.randbytes(5000),
        "EMPTY": b"",
        "Ünïcode-ñame.txt": "ünïcode\n".encode(),
        "abcdefghijk.txt": b"first of two names sharing a basis\n",
        "abcdefghijz.txt": b"second of two names sharing a basis\n",
        "exactly13char": b"a long name filling its entry with no terminator\n",
        "MixedCase.Txt": b"mixed\n",
        "deep/er/still/deeper/leaf.bin": rng.randbytes(4096),
        "deep/er/half.bin": rng.randbytes(2048),
    }
    # enough long-named entries that a FAT32 directory spans several 512-byte clusters
    files.update({f"many/file-{n:02}.txt": f"{n}\n".encode() for n in range(40)})
    return files


def write_fat_volume(
    path: Path,
    size: int,
    files: dict[str, bytes],
    offset: int = 0,
    *,
    mtime: int = 0,
    volume_id: int = 0x1234ABCD,
) -> Path:
    with path.open("wb") as out:
        out.truncate(offset + size)
        write_fat(out, offset, size, files, volume_id=volume_id, mtime=mtime)
    return path
