"""GRUB installation without GRUB's files: the byte patches grub-bios-setup would make to
boot.img and core.img, and the grub.cfg and early config we write.
(tests/readback/test_grub_install.py installs real GRUB images onto disks.)"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from oci2vm.boot import grub
from oci2vm.boot.grub import BootEntry
from oci2vm.errors import Oci2vmError
from support.grubdisks import (
    BOOT_FS_UUID,
    SECTOR,
)
from support.programs import requires

needs_grub_pc = requires("grub-pc-modules", "grub-mkimage")
needs_grub_efi = requires("grub-efi-modules", "grub-mkimage")
needs_disk_tools = requires("sgdisk", "sfdisk", "mke2fs")


# -- boot.img and diskboot patches -------------------------------------------------------


def test_boot_sector_takes_boot_code_and_keeps_partition_table() -> None:
    boot_img = bytes(range(256)) * 2
    sector0 = bytes((i * 7 + 3) % 256 for i in range(SECTOR))
    patched = grub.patch_boot_sector(sector0, boot_img, 0x123456789A)

    assert len(patched) == SECTOR
    assert patched[:0x5C] == boot_img[:0x5C]
    assert patched[0x5C:0x64] == struct.pack("<Q", 0x123456789A)  # kernel_sector
    assert patched[0x64] == 0xFF  # boot_drive: use DL
    assert patched[0x65] == boot_img[0x65]
    assert patched[0x66:0x68] == b"\x90\x90"  # boot_drive_check jump NOPed
    assert patched[0x68:0x1B8] == boot_img[0x68:0x1B8]
    assert patched[0x1B8:0x1FE] == sector0[0x1B8:0x1FE]  # disk signature + partitions
    assert patched[0x1FE:] == b"\x55\xaa"


def test_core_blocklist_points_after_its_first_sector() -> None:
    core = bytearray(b"\x11" * (3 * SECTOR + 100))  # 4 sectors once padded
    struct.pack_into("<QHH", core, 0x1F4, 2, 3, 0x820)
    core[0x1E8:0x1F4] = bytes(12)
    core[0x214:0x216] = b"\x00\x10"  # no_rs_length, valid
    patched = grub.patch_core(bytes(core), 2048)

    assert len(patched) == 4 * SECTOR
    assert patched[0x1F4:0x200] == struct.pack("<QHH", 2049, 3, 0x820)
    assert patched[0x1E8:0x1F4] == bytes(12)  # list terminator
    assert patched[:0x1E8] == core[:0x1E8]
    assert patched[0x200 : len(core)] == core[0x200:]
    assert patched[len(core) :] == bytes(4 * SECTOR - len(core))


def test_core_larger_than_grub_can_load_is_refused() -> None:
    core = bytes((grub.MAX_CORE_SECTORS + 1) * SECTOR)
    with pytest.raises(Oci2vmError, match="at most 888"):
        grub.patch_core(core, 2048)


def test_core_of_another_grub_version_is_refused() -> None:
    core = bytearray(4 * SECTOR)
    core[0x214:0x216] = b"\xff\xff"
    with pytest.raises(Oci2vmError, match="version"):
        grub.patch_core(bytes(core), 1)


def test_disk_without_partition_table_is_refused() -> None:
    with pytest.raises(Oci2vmError, match="write the GPT or MBR first"):
        grub.embedding_space(io.BytesIO(bytes(4096)), 1)


# -- grub.cfg ----------------------------------------------------------------------------


def test_grub_cfg_boots_newest_kernel_by_default_on_serial_and_screen() -> None:
    kernels = [
        BootEntry("6.1.0-9-amd64", "/boot/vmlinuz-6.1.0-9-amd64", "/boot/initrd.img-6.1.0-9-amd64"),
        BootEntry("6.1.0-18-amd64", "/boot/vmlinuz-6.1.0-18-amd64", None),
    ]
    cfg = grub.grub_cfg(
        kernels, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", cmdline_extra="quiet  net.ifnames=0",
        timeout=2,
    )  # fmt: skip
    root = "root=UUID=4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
    args = f"{root} ro console=tty0 console=ttyS0,115200 quiet net.ifnames=0"
    assert cfg == (
        "# Written by oci2vm; read by BIOS and UEFI GRUB alike.\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=2\n"
        "set timeout_style=hidden\n"
        "set default=0\n"
        "\n"
        "menuentry 'Linux 6.1.0-18-amd64' {\n"
        '\tif [ "$grub_platform" = pc ]; then\n'
        f"\t\tlinux16 /boot/vmlinuz-6.1.0-18-amd64 {args}\n"
        "\telse\n"
        f"\t\tlinux /boot/vmlinuz-6.1.0-18-amd64 {args}\n"
        "\tfi\n"
        "}\n"
        "menuentry 'Linux 6.1.0-9-amd64' {\n"
        '\tif [ "$grub_platform" = pc ]; then\n'
        f"\t\tlinux16 /boot/vmlinuz-6.1.0-9-amd64 {args}\n"
        "\t\tinitrd16 /boot/initrd.img-6.1.0-9-amd64\n"
        "\telse\n"
        f"\t\tlinux /boot/vmlinuz-6.1.0-9-amd64 {args}\n"
        "\t\tinitrd /boot/initrd.img-6.1.0-9-amd64\n"
        "\tfi\n"
        "}\n"
    )


def test_grub_cfg_quotes_what_grub_would_interpret() -> None:
    kernels = [BootEntry("6.1 it's", "/boot/vmlinuz $x", "/boot/init;rd")]
    cfg = grub.grub_cfg(
        kernels, BOOT_FS_UUID, cmdline_extra="init=/bin/sh x=$y", timeout=0, read_only=False
    )
    assert "menuentry 'Linux 6.1 it'\\''s' {\n" in cfg
    assert f"\t\tlinux '/boot/vmlinuz $x' root=UUID={BOOT_FS_UUID} rw " in cfg
    assert f"\t\tlinux16 '/boot/vmlinuz $x' root=UUID={BOOT_FS_UUID} rw " in cfg
    assert " init=/bin/sh 'x=$y'\n" in cfg
    assert "\t\tinitrd '/boot/init;rd'\n" in cfg
    assert "\t\tinitrd16 '/boot/init;rd'\n" in cfg
    assert "set timeout=0\n" in cfg


def test_grub_cfg_needs_a_kernel_and_a_uuid() -> None:
    with pytest.raises(Oci2vmError, match="no kernel"):
        grub.grub_cfg([], BOOT_FS_UUID, cmdline_extra="", timeout=1)
    with pytest.raises(Oci2vmError, match="not a filesystem UUID"):
        grub.grub_cfg([BootEntry("1", "/k")], "sda1", cmdline_extra="", timeout=1)


def test_kernel_versions_sort_naturally() -> None:
    versions = ["6.10.0", "6.1.0-18-amd64", "6.1.0-9-amd64", "5.15.0", "6.9.1"]
    ordered = sorted(versions, key=grub.version_key, reverse=True)
    assert ordered == ["6.10.0", "6.9.1", "6.1.0-18-amd64", "6.1.0-9-amd64", "5.15.0"]


def test_early_config_finds_boot_filesystem_by_uuid() -> None:
    assert grub.early_config(BOOT_FS_UUID.upper()) == (
        f"search --no-floppy --fs-uuid --set=root {BOOT_FS_UUID}\nset prefix=($root)/boot/grub\n"
    )
    assert grub.early_config(BOOT_FS_UUID, "/grub").endswith("set prefix=($root)/grub\n")
    with pytest.raises(Oci2vmError, match="absolute plain path"):
        grub.early_config(BOOT_FS_UUID, "/boot/grub; reboot")


def test_missing_grub_modules_name_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grub, "GRUB_LIB_DIR", tmp_path)
    with pytest.raises(Oci2vmError, match="apt-get install grub-pc-bin"):
        grub.build_bios_core(BOOT_FS_UUID, "gpt")
    with pytest.raises(Oci2vmError, match="apt-get install grub-efi-amd64-bin"):
        grub.build_efi(BOOT_FS_UUID)


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        (b"/boot/vmlinuz-6.1-\xff".decode("utf-8", "surrogateescape"), "is not UTF-8"),
        ("/boot/vmlinuz-6.1\nmenuentry x", "control characters"),
    ],
)
def test_grub_cfg_refuses_kernel_names_it_cannot_hold(kernel: str, message: str) -> None:
    with pytest.raises(Oci2vmError, match=message):
        grub.grub_cfg([grub.BootEntry("6.1", kernel)], BOOT_FS_UUID)
    with pytest.raises(Oci2vmError, match=message):
        grub.grub_cfg([grub.BootEntry("6.1", "/boot/vmlinuz-6.1", kernel)], BOOT_FS_UUID)


def test_grub_cfg_puts_a_first_entry_ahead_with_the_kernels_as_fallbacks() -> None:
    kernels = [
        BootEntry("6.1.0-9-amd64", "/boot/vmlinuz-6.1.0-9-amd64", "/boot/initrd.img-6.1.0-9-amd64")
    ]
    first = BootEntry("", "/vmlinuz", "/initrd.img", title="Linux (via /vmlinuz)")
    cfg = grub.grub_cfg(kernels, BOOT_FS_UUID, timeout=0, first=first)
    args = f"root=UUID={BOOT_FS_UUID} ro console=tty0 console=ttyS0,115200"
    assert cfg.split("set default=0\n", 1)[1] == (
        "set fallback=1\n"
        "\n"
        "menuentry 'Linux (via /vmlinuz)' {\n"
        '\tif [ "$grub_platform" = pc ]; then\n'
        f"\t\tlinux16 /vmlinuz {args}\n"
        "\t\tinitrd16 /initrd.img\n"
        "\telse\n"
        f"\t\tlinux /vmlinuz {args}\n"
        "\t\tinitrd /initrd.img\n"
        "\tfi\n"
        "}\n"
        "menuentry 'Linux 6.1.0-9-amd64' {\n"
        '\tif [ "$grub_platform" = pc ]; then\n'
        f"\t\tlinux16 /boot/vmlinuz-6.1.0-9-amd64 {args}\n"
        "\t\tinitrd16 /boot/initrd.img-6.1.0-9-amd64\n"
        "\telse\n"
        f"\t\tlinux /boot/vmlinuz-6.1.0-9-amd64 {args}\n"
        "\t\tinitrd /boot/initrd.img-6.1.0-9-amd64\n"
        "\tfi\n"
        "}\n"
    )
