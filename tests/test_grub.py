"""GRUB installation: the byte patches grub-bios-setup would make, the grub.cfg we write, and
disks that really boot GRUB to a marker in QEMU (TCG), for BIOS on GPT, BIOS in the MBR gap
and UEFI from an ESP."""

from __future__ import annotations

import io
import struct
import uuid
from pathlib import Path

import pytest

from oci2vm import vm
from oci2vm.boot import grub
from oci2vm.boot.grub import BootEntry
from oci2vm.disk import gpt
from oci2vm.errors import Oci2vmError
from oci2vm.fs import fat
from oci2vm.util.tools import have_program, run

SECTOR = 512
BOOT_FS_UUID = "0ccd2b3c-7b0e-4f4c-9d8f-1a2b3c4d5e6f"

have_grub_pc = (grub.I386_PC_DIR / "moddep.lst").is_file() and have_program("grub-mkimage")
have_grub_efi = (grub.X86_64_EFI_DIR / "moddep.lst").is_file() and have_program("grub-mkimage")
needs_grub_pc = pytest.mark.skipif(not have_grub_pc, reason="needs grub-pc-bin")
needs_grub_efi = pytest.mark.skipif(not have_grub_efi, reason="needs grub-efi-amd64-bin")
needs_disk_tools = pytest.mark.skipif(
    not all(have_program(p) for p in ("sgdisk", "sfdisk", "mke2fs")),
    reason="needs gdisk, fdisk and e2fsprogs to build test disks",
)


def marker_cfg(marker: str) -> str:
    """A grub.cfg that prints `marker` on the serial port and powers the machine off."""
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        f"echo {marker}\n"
        "halt\n"
    )


# -- test disk builders (test-only tools: sgdisk, sfdisk, mke2fs, mkfs.vfat, mcopy) --------


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


# -- boot.img and diskboot patches ---------------------------------------------------------


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


def test_disk_without_partition_table_is_refused() -> None:
    with pytest.raises(Oci2vmError, match="write the GPT or MBR first"):
        grub.embedding_space(io.BytesIO(bytes(4096)), 1)


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


# -- grub.cfg ------------------------------------------------------------------------------


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


@needs_grub_efi
def test_efi_image_embeds_the_early_config() -> None:
    image = grub.build_efi(BOOT_FS_UUID)
    assert image[:2] == b"MZ"
    assert grub.early_config(BOOT_FS_UUID).encode() in image


def test_missing_grub_modules_name_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grub, "I386_PC_DIR", tmp_path / "i386-pc")
    monkeypatch.setattr(grub, "X86_64_EFI_DIR", tmp_path / "x86_64-efi")
    with pytest.raises(Oci2vmError, match="apt-get install grub-pc-bin"):
        grub.build_bios_core(BOOT_FS_UUID, "gpt")
    with pytest.raises(Oci2vmError, match="apt-get install grub-efi-amd64-bin"):
        grub.build_efi(BOOT_FS_UUID)


# -- booting (QEMU, TCG) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bios_marker_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (have_grub_pc and have_program("sgdisk") and have_program("mke2fs")):
        pytest.skip("needs grub-pc-bin, gdisk and e2fsprogs")
    return gpt_bios_disk(tmp_path_factory.mktemp("bios"), marker_cfg("OCI2VM-GRUB-MARKER-BIOS"))


@pytest.mark.qemu
@pytest.mark.parametrize("bus", ["virtio", "sata", "ide", "nvme"])
def test_bios_grub_on_gpt_bios_boot_partition_boots(bios_marker_disk: Path, bus: vm.Bus) -> None:
    result = vm.check_boot(
        bios_marker_disk, expect="OCI2VM-GRUB-MARKER-BIOS", timeout=60, accel="tcg", bus=bus
    )
    assert result.ok, result.tail
    assert "GRUB loading" in result.tail


@pytest.mark.qemu
@needs_grub_pc
@needs_disk_tools
def test_bios_grub_in_mbr_gap_boots(tmp_path: Path) -> None:
    image = mbr_gap_disk(tmp_path, marker_cfg("OCI2VM-GRUB-MARKER-MBR"))
    result = vm.check_boot(
        image, expect="OCI2VM-GRUB-MARKER-MBR", timeout=60, accel="tcg", bus="ide"
    )
    assert result.ok, result.tail


@pytest.mark.qemu
@needs_grub_efi
@needs_disk_tools
def test_uefi_grub_from_esp_boots(tmp_path: Path) -> None:
    if not vm.OVMF_CODE.is_file():
        pytest.skip("needs ovmf")
    image = uefi_disk(tmp_path, marker_cfg("OCI2VM-GRUB-MARKER-UEFI"))
    result = vm.check_boot(
        image, expect="OCI2VM-GRUB-MARKER-UEFI", timeout=90, accel="tcg", firmware="uefi"
    )
    assert result.ok, result.tail


@pytest.mark.qemu
@needs_grub_pc
@needs_grub_efi
@needs_disk_tools
def test_one_disk_from_oci2vm_writers_boots_grub_with_bios_and_uefi(tmp_path: Path) -> None:
    if not vm.OVMF_CODE.is_file():
        pytest.skip("needs ovmf")
    image = hybrid_disk(tmp_path, marker_cfg("OCI2VM-GRUB-MARKER-HYBRID"))
    boots: list[tuple[vm.Firmware, vm.Bus]] = [("bios", "virtio"), ("uefi", "sata")]
    for firmware, bus in boots:
        result = vm.check_boot(
            image, expect="OCI2VM-GRUB-MARKER-HYBRID", timeout=90, accel="tcg",
            firmware=firmware, bus=bus,
        )  # fmt: skip
        assert result.ok, f"{firmware}: {result.reason}\n{result.tail}"


@pytest.mark.qemu
@needs_grub_pc
@needs_disk_tools
def test_written_grub_cfg_shows_its_menu_on_the_serial_console(tmp_path: Path) -> None:
    kernels = [BootEntry("6.1.0-18-amd64", "/boot/vmlinuz-6.1.0-18-amd64", None)]
    cfg = grub.grub_cfg(kernels, str(uuid.uuid4()), cmdline_extra="", timeout=30, show_menu=True)
    image = gpt_bios_disk(tmp_path, cfg)
    result = vm.check_boot(image, expect=r"Linux 6\.1\.0-18-amd64", timeout=60, accel="tcg")
    assert result.ok, result.tail
