"""Small disks that boot GRUB, for the GRUB and QEMU tests: BIOS GRUB on a GPT BIOS boot
partition or in the MBR gap, UEFI GRUB from an ESP, and one disk for both firmwares
written by oci2vm's own GPT and FAT writers; each with a grub.cfg of the test's choosing
on an ext4 /boot (made by mke2fs). Test-only tools: sgdisk, sfdisk, mke2fs, mkfs.vfat,
mmd, mcopy."""

from __future__ import annotations

from pathlib import Path

from oci2vm.boot import grub
from oci2vm.disk import gpt
from oci2vm.fs import fat
from oci2vm.util.tools import run

SECTOR = 512


BOOT_FS_UUID = "0ccd2b3c-7b0e-4f4c-9d8f-1a2b3c4d5e6f"


def marker_cfg(marker: str) -> str:
    """A grub.cfg that prints `marker` on the serial port and powers the machine off."""
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        f"echo {marker}\n"
        "halt\n"
    )


def write_boot_fs(image: Path, first_lba: int, sectors: int, grub_cfg_text: str) -> None:
    """An ext4 filesystem with /boot/grub/grub.cfg at first_lba of image."""
    tree = image.parent / f"{image.name}.tree"
    (tree / "boot" / "grub").mkdir(parents=True)
    (tree / "boot" / "grub" / "grub.cfg").write_text(grub_cfg_text)
    run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, "-U", BOOT_FS_UUID,
         "-E", f"offset={first_lba * SECTOR}", image, f"{sectors * SECTOR // 1024}k"],
    )  # fmt: skip


def gpt_bios_disk(tmp_path: Path, grub_cfg_text: str) -> Path:
    """16 MiB GPT disk: BIOS boot partition at 2048 (1 MiB), ext4 /boot at 4096 (12 MiB)."""
    image = tmp_path / "gpt-bios.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    run(["sgdisk", "-o", "-n", "1:2048:4095", "-t", "1:EF02",
         "-n", "2:4096:28671", "-t", "2:8300", image])  # fmt: skip
    write_boot_fs(image, 4096, 28672 - 4096, grub_cfg_text)
    core = grub.build_bios_core(BOOT_FS_UUID, "gpt")
    with open(image, "r+b") as disk:
        grub.install_bios(disk, core, 2048)
    return image


def mbr_gap_disk(tmp_path: Path, grub_cfg_text: str) -> Path:
    """16 MiB MBR disk: core.img in the gap at LBA 1, ext4 /boot from 2048 to the end."""
    image = tmp_path / "mbr.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    run(["sfdisk", "--quiet", image], input=b"label: dos\nstart=2048, type=83\n")
    write_boot_fs(image, 2048, (16 << 20) // SECTOR - 2048, grub_cfg_text)
    core = grub.build_bios_core(BOOT_FS_UUID, "mbr")
    with open(image, "r+b") as disk:
        grub.install_bios(disk, core, 1)
    return image


def uefi_disk(tmp_path: Path, grub_cfg_text: str) -> Path:
    """24 MiB GPT disk: an 8 MiB ESP holding \\EFI\\BOOT\\BOOTX64.EFI, ext4 /boot after it."""
    image = tmp_path / "uefi.img"
    with open(image, "wb") as f:
        f.truncate(24 << 20)
    run(["sgdisk", "-o", "-n", "1:2048:18431", "-t", "1:EF00",
         "-n", "2:18432:43007", "-t", "2:8300", image])  # fmt: skip
    write_boot_fs(image, 18432, 43008 - 18432, grub_cfg_text)
    esp = tmp_path / "esp.img"
    efi = tmp_path / "BOOTX64.EFI"
    efi.write_bytes(grub.build_efi(BOOT_FS_UUID))
    run(["mkfs.vfat", "-C", esp, str(8 << 10)])
    run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI"])
    with open(image, "r+b") as disk:
        disk.seek(2048 * SECTOR)
        disk.write(esp.read_bytes())
    return image


def hybrid_disk(tmp_path: Path, grub_cfg_text: str) -> Path:
    """One GPT disk for both firmwares, written by oci2vm's own GPT and FAT writers:
    BIOS boot partition, ESP with BOOTX64.EFI, ext4 /boot (mke2fs until fs/ext4 serves)."""
    esp_files = {"EFI/BOOT/BOOTX64.EFI": grub.build_efi(BOOT_FS_UUID)}
    specs = [
        gpt.PartitionSpec(gpt.BIOS_BOOT, "BIOS boot", 1 << 20),
        gpt.PartitionSpec(gpt.ESP, "ESP", fat.fat_size_for(esp_files)),
        gpt.PartitionSpec(gpt.LINUX_DATA, "boot", 12 << 20),
    ]
    disk_layout = gpt.layout(specs, seed=b"test_grub hybrid")
    bios_boot, esp, boot = disk_layout.partitions
    image = tmp_path / "hybrid.img"
    with open(image, "w+b") as disk:
        disk.truncate(disk_layout.disk_size)
        gpt.write_gpt(
            disk, disk_layout.disk_size, disk_layout.partitions, disk_guid=disk_layout.disk_guid
        )
        fat.write_fat(
            disk, esp.first_lba * SECTOR, (esp.last_lba - esp.first_lba + 1) * SECTOR,
            esp_files, volume_id=0x0C12F00D,
        )  # fmt: skip
    write_boot_fs(image, boot.first_lba, boot.last_lba - boot.first_lba + 1, grub_cfg_text)
    with open(image, "r+b") as disk:
        grub.install_bios(disk, grub.build_bios_core(BOOT_FS_UUID, "gpt"), bios_boot.first_lba)
    return image
