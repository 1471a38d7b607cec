"""Disks that really boot GRUB to a marker in QEMU (TCG): BIOS on GPT, BIOS in the MBR
gap, UEFI from an ESP, one disk from oci2vm's writers for both, and the grub.cfg we write
showing its menu, and its fallback from a first entry that cannot load."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from oci2vm import vm
from oci2vm.boot import grub
from oci2vm.boot.grub import BootEntry
from support.grubdisks import (
    gpt_bios_disk,
    hybrid_disk,
    marker_cfg,
    mbr_gap_disk,
    uefi_disk,
)
from support.programs import requires

needs_grub_pc = requires("grub-pc-modules", "grub-mkimage")
needs_grub_efi = requires("grub-efi-modules", "grub-mkimage")
needs_disk_tools = requires("sgdisk", "sfdisk", "mke2fs")

needs_qemu = requires("qemu-system-x86_64")


@pytest.fixture(scope="module")
def bios_marker_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gpt_bios_disk(tmp_path_factory.mktemp("bios"), marker_cfg("OCI2VM-GRUB-MARKER-BIOS"))


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
@pytest.mark.parametrize("bus", ["virtio", "sata", "ide", "nvme"])
def test_bios_grub_on_gpt_bios_boot_partition_boots(bios_marker_disk: Path, bus: vm.Bus) -> None:
    result = vm.check_boot(
        bios_marker_disk, expect="OCI2VM-GRUB-MARKER-BIOS", timeout=60, accel="tcg", bus=bus
    )
    assert result.ok, result.tail
    assert "GRUB loading" in result.tail


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_bios_grub_in_mbr_gap_boots(tmp_path: Path) -> None:
    image = mbr_gap_disk(tmp_path, marker_cfg("OCI2VM-GRUB-MARKER-MBR"))
    result = vm.check_boot(
        image, expect="OCI2VM-GRUB-MARKER-MBR", timeout=60, accel="tcg", bus="ide"
    )
    assert result.ok, result.tail


@pytest.mark.qemu
@needs_qemu
@needs_grub_efi
@needs_disk_tools
@requires("ovmf-code")
def test_uefi_grub_from_esp_boots(tmp_path: Path) -> None:
    image = uefi_disk(tmp_path, marker_cfg("OCI2VM-GRUB-MARKER-UEFI"))
    result = vm.check_boot(
        image, expect="OCI2VM-GRUB-MARKER-UEFI", timeout=90, accel="tcg", firmware="uefi"
    )
    assert result.ok, result.tail


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_grub_efi
@needs_disk_tools
@requires("ovmf-code")
def test_one_disk_from_oci2vm_writers_boots_grub_with_bios_and_uefi(tmp_path: Path) -> None:
    image = hybrid_disk(tmp_path, marker_cfg("OCI2VM-GRUB-MARKER-HYBRID"))
    boots: list[tuple[vm.Firmware, vm.Bus]] = [("bios", "virtio"), ("uefi", "sata")]
    for firmware, bus in boots:
        result = vm.check_boot(
            image, expect="OCI2VM-GRUB-MARKER-HYBRID", timeout=90, accel="tcg",
            firmware=firmware, bus=bus,
        )  # fmt: skip
        assert result.ok, f"{firmware}: {result.reason}\n{result.tail}"


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_written_grub_cfg_shows_its_menu_on_the_serial_console(tmp_path: Path) -> None:
    kernels = [BootEntry("6.1.0-18-amd64", "/boot/vmlinuz-6.1.0-18-amd64", None)]
    cfg = grub.grub_cfg(kernels, str(uuid.uuid4()), cmdline_extra="", timeout=30, show_menu=True)
    image = gpt_bios_disk(tmp_path, cfg)
    result = vm.check_boot(image, expect=r"Linux 6\.1\.0-18-amd64", timeout=60, accel="tcg")
    assert result.ok, result.tail


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_a_first_entry_that_cannot_load_falls_back_to_the_kernels(tmp_path: Path) -> None:
    """A dangling /vmlinuz (no such file here) sends GRUB to the next entry on its own."""
    kernels = [BootEntry("6.1.0-18-amd64", "/boot/vmlinuz-6.1.0-18-amd64", None)]
    first = BootEntry("", "/vmlinuz", "/initrd.img", title="Linux (via /vmlinuz)")
    cfg = grub.grub_cfg(kernels, str(uuid.uuid4()), timeout=0, first=first)
    image = gpt_bios_disk(tmp_path, cfg)
    result = vm.check_boot(
        image, expect=r"Falling back to .Linux 6\.1\.0-18-amd64", timeout=90, accel="tcg"
    )
    assert result.ok, f"{result.reason}\n{result.tail}"
    assert "/vmlinuz' not found" in result.tail
