"""The disk plan: where every partition goes, decided from the options before any byte is
written, so the root filesystem can stream straight to its final offset.

GPT (--boot hybrid): a 1 MiB BIOS boot partition for GRUB's core.img, an ESP (FAT) holding
the architecture's EFI boot loader, and the root partition typed per the Discoverable
Partitions Specification. MBR: core.img lives in the gap before the first partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from oci2vm.arch import Arch
from oci2vm.config import BootMode, PartitionTable
from oci2vm.disk import gpt, mbr
from oci2vm.disk.placement import BLOCK
from oci2vm.errors import Oci2vmError
from oci2vm.util.units import MIB, SECTOR, ceil_div

BIOS_BOOT_SIZE = MIB
GPT_TAIL = gpt.TAIL_SECTORS * SECTOR
MBR_MAX_DISK = (mbr.MAX_LBA32 + 1) * SECTOR  # 32-bit sector numbers: 2 TiB


@dataclass(frozen=True, slots=True)
class DiskPlan:
    """Where everything goes, decided before any byte is written."""

    arch: Arch
    table: PartitionTable
    bios: bool
    uefi: bool
    esp_size: int  # 0 without UEFI
    root_offset: int
    root_size: int | None  # None: as the root filesystem's writer decides

    def specs(self, root_size: int) -> list[gpt.PartitionSpec]:
        specs = []
        if self.bios:
            specs.append(gpt.PartitionSpec(gpt.BIOS_BOOT, "BIOS boot", BIOS_BOOT_SIZE))
        if self.uefi:
            specs.append(gpt.PartitionSpec(gpt.ESP, "EFI System Partition", self.esp_size))
        root_type = self.arch.facts.root_partition_type
        specs.append(gpt.PartitionSpec(root_type, "root", root_size))
        return specs


def boot_modes(boot: BootMode) -> tuple[bool, bool]:
    """(BIOS, UEFI) for a --boot choice."""
    return boot in (BootMode.HYBRID, BootMode.BIOS), boot in (BootMode.HYBRID, BootMode.UEFI)


def plan_disk(
    arch: Arch,
    table: PartitionTable,
    boot: BootMode,
    *,
    esp_size: int,
    disk_size: int | None = None,
    root_need: int = MIB,
) -> DiskPlan:
    """Place the partitions; `disk_size` is --size (the whole disk's), `root_need` the least
    the root filesystem can live in."""
    bios, uefi = boot_modes(boot)
    if table is PartitionTable.MBR:
        # core.img in the gap before the first partition (LBA 1 to 1 MiB).
        offset = MIB + (esp_size if uefi else 0)
        tail = 0
    else:
        offset = MIB + (BIOS_BOOT_SIZE if bios else 0) + (esp_size if uefi else 0)
        tail = GPT_TAIL
    root_size = None
    if disk_size is not None:
        # --size is the disk's size, in whole MiB (never more than asked): the root
        # partition takes what the rest leaves, in whole 4 KiB blocks, with room for the
        # backup GPT (no gap behind it: see disk.placement).
        root_size = (disk_size // MIB * MIB - offset - tail) // BLOCK * BLOCK
        if root_size < root_need:
            need = ceil_div(offset + ceil_div(root_need, MIB) * MIB + tail, MIB)
            raise Oci2vmError(
                f"--size {disk_size} bytes is too small for this disk: it needs at least "
                f"{need} MiB; pass a larger --size or leave it out"
            )
    if table is PartitionTable.MBR and disk_size is not None and disk_size > MBR_MAX_DISK:
        raise Oci2vmError(
            f"--size {disk_size} bytes is beyond what an MBR addresses (2 TiB): "
            "use --table gpt or a smaller --size"
        )
    return DiskPlan(arch, table, bios, uefi, esp_size if uefi else 0, offset, root_size)
