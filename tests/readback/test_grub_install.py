"""Real GRUB images (grub-mkimage and the installed modules): boot.img's fields where
boot.h says, core.img's blocklist, reproducibility, where core.img may go on disks made
by sgdisk and sfdisk, and an install that touches only the boot sector and core.img's
sectors."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from oci2vm.boot import grub
from oci2vm.errors import Oci2vmError
from oci2vm.util.tools import run
from support.grubdisks import (
    BOOT_FS_UUID,
    SECTOR,
)
from support.programs import requires

needs_grub_pc = requires("grub-pc-modules", "grub-mkimage")
needs_grub_efi = requires("grub-efi-modules", "grub-mkimage")
needs_disk_tools = requires("sgdisk", "sfdisk", "mke2fs")


@needs_grub_pc
def test_installed_boot_img_has_fields_where_boot_h_says() -> None:
    boot_img = grub.boot_image()
    # boot.S: "jmp LOCAL(after_BPB); nop", the BPB, then kernel_sector (default 1, the
    # MBR gap), boot_drive 0xFF, cli, and the 2-byte short jmp that setup.c NOPs.
    assert boot_img[0] == 0xEB and boot_img[2] == 0x90
    assert struct.unpack_from("<Q", boot_img, 0x5C) == (1,)
    assert boot_img[0x64] == 0xFF
    assert boot_img[0x65] == 0xFA  # cli
    assert boot_img[0x66] == 0xEB  # jmp rel8
    assert boot_img[0x1FE:] == b"\x55\xaa"


@needs_grub_pc
def test_real_core_has_the_blocklist_grub_mkimage_sets() -> None:
    core = grub.build_bios_core(BOOT_FS_UUID, "gpt")
    sectors = -(-len(core) // SECTOR)
    assert 2 < sectors <= grub.MAX_CORE_SECTORS
    # diskboot.S default: start 2 (the MBR gap), count filled in by grub-mkimage, 0x820
    assert struct.unpack_from("<QHH", core, 0x1F4) == (2, sectors - 1, 0x820)
    assert core[0x1E8:0x1F4] == bytes(12)
    assert struct.unpack_from("<I", core, 0x210) == (0,)  # no Reed-Solomon redundancy


@needs_grub_pc
def test_bios_core_is_reproducible() -> None:
    assert grub.build_bios_core(BOOT_FS_UUID, "mbr") == grub.build_bios_core(BOOT_FS_UUID, "mbr")


@needs_grub_efi
def test_efi_image_embeds_the_early_config() -> None:
    image = grub.build_efi(BOOT_FS_UUID)
    assert image[:2] == b"MZ"
    assert grub.early_config(BOOT_FS_UUID).encode() in image


# -- where core.img may go -----------------------------------------------------------------


@needs_disk_tools
def test_gpt_embedding_space_is_the_bios_boot_partition(tmp_path: Path) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(bytes(8 << 20))
    run(["sgdisk", "-o", "-n", "1:2048:3071", "-t", "1:EF02", "-n", "2:4096:0", image])
    with open(image, "rb") as disk:
        assert grub.embedding_space(disk, 2048) == 1024
        with pytest.raises(Oci2vmError, match="not a BIOS boot partition"):
            grub.embedding_space(disk, 4096)
        with pytest.raises(Oci2vmError, match="no GPT partition starts at sector 1"):
            grub.embedding_space(disk, 1)


@needs_disk_tools
def test_mbr_embedding_space_is_the_gap_before_the_first_partition(tmp_path: Path) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(bytes(8 << 20))
    run(["sfdisk", "--quiet", image], input=b"label: dos\nstart=2048, size=4096\nstart=8192\n")
    with open(image, "rb") as disk:
        assert grub.embedding_space(disk, 1) == 2047
        assert grub.embedding_space(disk, 6144) == 2048  # between the two partitions
        with pytest.raises(Oci2vmError, match="inside the partition at 2048"):
            grub.embedding_space(disk, 3000)
        with pytest.raises(Oci2vmError, match="sector 0"):
            grub.embedding_space(disk, 0)


@needs_grub_pc
@needs_disk_tools
def test_core_too_big_for_the_gap_is_refused_and_disk_untouched(tmp_path: Path) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(bytes(4 << 20))
    run(["sfdisk", "--quiet", image], input=b"label: dos\nstart=64\n")
    before = image.read_bytes()
    core = grub.build_bios_core(BOOT_FS_UUID, "mbr")
    with open(image, "r+b") as disk, pytest.raises(Oci2vmError, match="only 63 are free"):
        grub.install_bios(disk, core, 1)
    assert image.read_bytes() == before


@needs_grub_pc
@needs_disk_tools
def test_install_bios_writes_boot_sector_and_core_only(tmp_path: Path) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(bytes(8 << 20))
    run(["sgdisk", "-o", "-n", "1:2048:4095", "-t", "1:EF02", "-n", "2:4096:0", image])
    before = image.read_bytes()
    core = grub.build_bios_core(BOOT_FS_UUID, "gpt")
    with open(image, "r+b") as disk:
        grub.install_bios(disk, core, 2048)
    after = image.read_bytes()

    expected_core = grub.patch_core(core, 2048)
    end = 2048 * SECTOR + len(expected_core)
    assert after[0:SECTOR] == grub.patch_boot_sector(before[:SECTOR], grub.boot_image(), 2048)
    assert after[SECTOR : 2048 * SECTOR] == before[SECTOR : 2048 * SECTOR]  # GPT untouched
    assert after[2048 * SECTOR : end] == expected_core
    assert after[end:] == before[end:]
    assert struct.unpack_from("<QHH", after, 2048 * SECTOR + 0x1F4) == (
        2049,
        len(expected_core) // SECTOR - 1,
        0x820,
    )
    verify = run(["sgdisk", "-v", image])
    assert b"No problems found" in verify.stdout
