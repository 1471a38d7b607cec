"""The disk plan: where the root goes before anything streams, and the sizes a partition
table can address; and sizes parsed exactly."""

from __future__ import annotations

import pytest

from oci2vm.arch import Arch
from oci2vm.config import BootMode, PartitionTable
from oci2vm.disk.plan import plan_disk
from oci2vm.errors import Oci2vmError
from oci2vm.util.units import MIB, TIB, parse_size


def test_root_offsets_follow_the_boot_partitions() -> None:
    esp = 64 * MIB
    hybrid = plan_disk(Arch.AMD64, PartitionTable.GPT, BootMode.HYBRID, esp_size=esp)
    assert (hybrid.bios, hybrid.uefi, hybrid.root_offset) == (True, True, MIB + MIB + esp)
    bios_mbr = plan_disk(Arch.AMD64, PartitionTable.MBR, BootMode.BIOS, esp_size=esp)
    assert (bios_mbr.esp_size, bios_mbr.root_offset) == (0, MIB)
    uefi = plan_disk(Arch.AMD64, PartitionTable.GPT, BootMode.UEFI, esp_size=esp)
    assert uefi.root_offset == MIB + esp


def test_an_mbr_disk_beyond_2_tib_is_refused() -> None:
    plan_disk(Arch.AMD64, PartitionTable.MBR, BootMode.BIOS, esp_size=0, disk_size=2 * TIB)
    with pytest.raises(Oci2vmError, match="beyond what an MBR addresses"):
        plan_disk(
            Arch.AMD64, PartitionTable.MBR, BootMode.BIOS, esp_size=0, disk_size=2 * TIB + MIB
        )
    gpt = plan_disk(Arch.AMD64, PartitionTable.GPT, BootMode.BIOS, esp_size=0, disk_size=3 * TIB)
    assert gpt.root_size is not None and gpt.root_size > 2 * TIB


def test_sizes_are_parsed_exactly() -> None:
    assert parse_size("1000000000000T") == 10**12 * TIB
    assert parse_size("1.5G") == 3 * (1 << 29)
    assert parse_size("0.5K") == 512
    assert parse_size("123") == 123
    with pytest.raises(Oci2vmError, match="malformed size"):
        parse_size("12Q")
