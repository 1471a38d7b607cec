"""The disk around a finished root filesystem: the partition table, the ESP and GRUB's
BIOS boot code, written once the root's size is known (its offset was fixed by the plan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from oci2vm.boot import grub
from oci2vm.config import PartitionTable
from oci2vm.disk import gpt, mbr
from oci2vm.disk.placement import place_partitions
from oci2vm.disk.plan import DiskPlan
from oci2vm.fs import fat
from oci2vm.identity import Identity
from oci2vm.util.units import SECTOR

ESP_LABEL = "ESP"


@dataclass(frozen=True, slots=True)
class BootFiles:
    """What the firmware boots: GRUB's core.img (BIOS) and the ESP's files (UEFI)."""

    core: bytes
    esp_files: dict[str, bytes]


def assemble_disk(
    disk: BinaryIO, plan: DiskPlan, root_size: int, identity: Identity, boot: BootFiles
) -> int:
    """Write the table, the ESP and the boot code around the root filesystem at
    plan.root_offset; returns the disk's size."""
    if plan.table is PartitionTable.GPT:
        return _assemble_gpt(disk, plan, root_size, identity, boot)
    return _assemble_mbr(disk, plan, root_size, identity, boot)


def _assemble_gpt(
    disk: BinaryIO, plan: DiskPlan, root_size: int, identity: Identity, boot: BootFiles
) -> int:
    layout = gpt.layout(plan.specs(root_size), seed=identity.disk_seed.encode())
    root = layout.partitions[-1]
    if root.first_lba * SECTOR != plan.root_offset:
        raise AssertionError("GPT layout disagrees with the planned root offset")
    disk.truncate(layout.disk_size)
    gpt.write_gpt(disk, layout.disk_size, layout.partitions, disk_guid=layout.disk_guid)
    if plan.uefi:
        esp = layout.partitions[1 if plan.bios else 0]
        write_esp(disk, esp.first_lba, esp.last_lba, boot.esp_files, identity)
    if plan.bios:
        grub.install_bios(disk, boot.core, layout.partitions[0].first_lba)
    return layout.disk_size


def _assemble_mbr(
    disk: BinaryIO, plan: DiskPlan, root_size: int, identity: Identity, boot: BootFiles
) -> int:
    sizes: list[int | None] = []
    if plan.uefi:
        sizes.append(plan.esp_size)
    sizes.append(root_size)
    disk_size, extents = place_partitions(sizes)
    disk.truncate(disk_size)
    partitions = []
    if plan.uefi:
        first, last = extents[0]
        partitions.append(mbr.MbrPartition(mbr.TYPE_ESP, first, last - first + 1))
        write_esp(disk, first, last, boot.esp_files, identity)
    first, last = extents[-1]
    if first * SECTOR != plan.root_offset:
        raise AssertionError("MBR layout disagrees with the planned root offset")
    partitions.append(mbr.MbrPartition(mbr.TYPE_LINUX, first, last - first + 1, bootable=True))
    seed = identity.disk_seed.encode()
    mbr.write_mbr(disk, partitions, disk_signature=mbr.disk_signature_from_seed(seed))
    if plan.bios:
        grub.install_bios(disk, boot.core, 1)
    return disk_size


def write_esp(
    disk: BinaryIO, first: int, last: int, files: dict[str, bytes], identity: Identity
) -> None:
    fat.write_fat(
        disk,
        first * SECTOR,
        (last - first + 1) * SECTOR,
        files,
        volume_id=identity.derive("esp").int & 0xFFFFFFFF,
        label=ESP_LABEL,
        mtime=identity.fs_time,
    )
