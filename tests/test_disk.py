"""Bootable disks built through the CLI from a small image with a (fake) kernel, read back
by the tools that would read the real thing: sfdisk, sgdisk, e2fsck, debugfs, dumpe2fs,
blkid, fsck.vfat, mtools and qemu-img. Nothing boots here (tests/test_vm.py boots)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layouts import Built, Member, directory, file, symlink, write_layout
from oci2vm import vm
from oci2vm.boot import grub
from oci2vm.cli import main
from oci2vm.util.tools import have_program, run

SECTOR = 512
MIB = 1 << 20
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
KERNEL = b"MZ fake kernel \x00\x01\x02" * 100
INITRD = b"\x1f\x8b fake initrd" * 50
PASSWD = b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\n"
SHADOW = b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"
SERIAL_GETTY = b"[Unit]\nDescription=Serial Getty on %I\n"
NOBODY_NOTE = (
    "nobody can log in: no --root-password or --ssh-key was given "
    "(the image's own accounts are unchanged)"
)

pytestmark = pytest.mark.skipif(
    not (grub.I386_PC_DIR / "moddep.lst").is_file()
    or not (grub.X86_64_EFI_DIR / "moddep.lst").is_file()
    or not all(
        have_program(p)
        for p in (
            "grub-mkimage",
            "sfdisk",
            "sgdisk",
            "e2fsck",
            "debugfs",
            "dumpe2fs",
            "blkid",
            "fsck.vfat",
            "mdir",
            "mcopy",
            "qemu-img",
        )
    ),
    reason="needs grub-pc-bin, grub-efi-amd64-bin, fdisk, gdisk, e2fsprogs, dosfstools, "
    "mtools and qemu-utils",
)


def image_members() -> list[Member]:
    """A Debian-like image: a kernel and initrd in /boot, systemd as init, accounts."""
    return [
        directory("boot"),
        file("boot/vmlinuz-6.1.0-9-amd64", KERNEL),
        file("boot/initrd.img-6.1.0-9-amd64", INITRD),
        directory("etc"),
        file("etc/passwd", PASSWD),
        file("etc/shadow", SHADOW, mode=0o640, gid=42),
        file("etc/os-release", b'PRETTY_NAME="Test Linux 1"\nID=test\n'),
        directory("lib"),
        directory("lib/systemd"),
        file("lib/systemd/systemd", b"\x7fELF systemd", mode=0o755),
        directory("lib/systemd/system"),
        file("lib/systemd/system/serial-getty@.service", SERIAL_GETTY),
        directory("sbin"),
        symlink("sbin/init", "/lib/systemd/systemd"),
        directory("root", mode=0o700),
        file(".dockerenv"),
    ]


@dataclass
class Layout:
    source: str
    built: Built


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    path = tmp_path_factory.mktemp("layouts") / "debian"
    built = write_layout(path, [image_members()])
    return Layout(f"oci:{path}", built)


@dataclass
class Result:
    code: int
    out: str
    err: str


def build(*args: str) -> Result:
    """Run `oci2vm build ARGS` in-process and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["build", *args])
    return Result(code, out.getvalue(), err.getvalue())


def build_ok(*args: str) -> dict[str, Any]:
    result = build(*args, "--json")
    assert result.code == 0, result.err
    report: dict[str, Any] = json.loads(result.out)
    return report


@dataclass
class Disk:
    path: Path
    report: dict[str, Any]


@pytest.fixture(scope="module")
def hybrid(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Disk:
    """The default build: GPT, BIOS + UEFI, raw."""
    out = tmp_path_factory.mktemp("hybrid") / "disk.img"
    return Disk(out, build_ok(layout.source, "-o", str(out)))


@pytest.fixture(scope="module")
def mbr_bios(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Disk:
    out = tmp_path_factory.mktemp("mbr") / "disk.img"
    return Disk(out, build_ok(layout.source, "-o", str(out), "--table", "mbr", "--boot", "bios"))


# -- reading disks back -------------------------------------------------------------------


def sfdisk(disk: Path) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(run(["sfdisk", "--json", disk]).stdout)["partitiontable"]
    return table


def partitions(disk: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "node"} for p in sfdisk(disk)["partitions"]]


def extract(disk: Path, first_lba: int, sectors: int, dest: Path) -> Path:
    """Copy a partition into its own file, keeping holes as holes (e2fsck, fsck.vfat and
    debugfs read files, and a copy bounded by the partition proves the filesystem fits)."""
    start, end = first_lba * SECTOR, (first_lba + sectors) * SECTOR
    with open(disk, "rb") as src, open(dest, "wb") as out:
        out.truncate(end - start)
        fd = src.fileno()
        pos = start
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            src.seek(data)
            out.seek(data - start)
            remaining = hole - data
            while remaining:
                chunk = src.read(min(remaining, 8 * MIB))
                out.write(chunk)
                remaining -= len(chunk)
            pos = hole
    return dest


def part(disk: Path, number: int, dest: Path) -> Path:
    p = sfdisk(disk)["partitions"][number - 1]
    return extract(disk, p["start"], p["size"], dest)


def e2fsck_clean(fs: Path) -> None:
    proc = run(["e2fsck", "-fn", fs], check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


def debugfs(fs: Path, command: str) -> bytes:
    proc = run(["debugfs", "-R", command, fs])
    return proc.stdout


def superblock(fs: Path) -> dict[str, str]:
    text = run(["dumpe2fs", "-h", fs]).stdout.decode()
    return dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines())
    )


def sector(disk: Path, lba: int, count: int = 1) -> bytes:
    with open(disk, "rb") as f:
        f.seek(lba * SECTOR)
        return f.read(count * SECTOR)


def data_regions(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each run of a sparse file that holds data."""
    regions = []
    with open(path, "rb") as f:
        fd, pos, end = f.fileno(), 0, os.fstat(f.fileno()).st_size
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            pos = os.lseek(fd, data, os.SEEK_HOLE)
            regions.append((data, pos - data))
    return regions


def sha256(path: Path, regions: list[tuple[int, int]]) -> str:
    """The SHA-256 of the bytes of `regions` of the file, offsets included."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for offset, length in regions:
            f.seek(offset)
            digest.update(struct.pack("<QQ", offset, length))
            digest.update(f.read(length))
    return digest.hexdigest()


def expected_grub_cfg(fs_uuid: str) -> str:
    return (
        "# Written by oci2vm; read by BIOS and UEFI GRUB alike.\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=1\n"
        "set timeout_style=hidden\n"
        "set default=0\n"
        "\n"
        "menuentry 'Linux 6.1.0-9-amd64' {\n"
        '\tif [ "$grub_platform" = pc ]; then\n'
        f"\t\tlinux16 /boot/vmlinuz-6.1.0-9-amd64 root=UUID={fs_uuid} rw console=tty0"
        " console=ttyS0,115200\n"
        "\t\tinitrd16 /boot/initrd.img-6.1.0-9-amd64\n"
        "\telse\n"
        f"\t\tlinux /boot/vmlinuz-6.1.0-9-amd64 root=UUID={fs_uuid} rw console=tty0"
        " console=ttyS0,115200\n"
        "\t\tinitrd /boot/initrd.img-6.1.0-9-amd64\n"
        "\tfi\n"
        "}\n"
    )


def expected_fstab(fs_uuid: str) -> bytes:
    return (
        "# Written by oci2vm.\n"
        "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>\n"
        f"UUID={fs_uuid}  /  ext4  rw,errors=remount-ro  0  1\n"
    ).encode()


def assert_grub_boot_sector(disk: Path, core_lba: int) -> None:
    """Sector 0 is boot.img's code with grub-bios-setup's patches, the table untouched."""
    boot_img = (grub.I386_PC_DIR / "boot.img").read_bytes()
    sector0 = sector(disk, 0)
    assert sector0[:0x5C] == boot_img[:0x5C]
    assert struct.unpack_from("<Q", sector0, 0x5C)[0] == core_lba  # kernel_sector
    assert sector0[0x64] == 0xFF  # boot_drive: the drive the BIOS booted
    assert sector0[0x65] == boot_img[0x65]
    assert sector0[0x66:0x68] == b"\x90\x90"  # boot_drive_check NOPed for hard disks
    assert sector0[0x68:0x1B8] == boot_img[0x68:0x1B8]
    assert sector0[0x1FE:] == b"\x55\xaa"


def assert_core_img(disk: Path, core_lba: int, fs_uuid: str, table: str) -> None:
    """core.img at core_lba, its blocklist pointing at the sectors after its first."""
    core = grub.build_bios_core(fs_uuid, table)  # type: ignore[arg-type]
    sectors = -(-len(core) // SECTOR)
    on_disk = sector(disk, core_lba, sectors)
    start, count, segment = struct.unpack_from("<QHH", on_disk, 0x1F4)
    assert (start, count, segment) == (core_lba + 1, sectors - 1, 0x820)
    assert on_disk[0x1E8:0x1F4] == bytes(12)  # the list's terminator
    assert on_disk[:0x1E8] == core[:0x1E8]
    assert on_disk[SECTOR:] == core[SECTOR:].ljust((sectors - 1) * SECTOR, b"\0")


def mtools_offset(disk: Path, first_lba: int) -> str:
    return f"{disk}@@{first_lba * SECTOR}"


# -- the default disk: GPT, BIOS and UEFI -------------------------------------------------


def test_hybrid_gpt_layout_as_sfdisk_reads_it(hybrid: Disk) -> None:
    table = sfdisk(hybrid.path)
    size = hybrid.path.stat().st_size
    assert size == hybrid.report["disk_size"]
    assert size % MIB == 0
    assert (table["label"], table["unit"], table["sectorsize"]) == ("gpt", "sectors", 512)
    assert (table["firstlba"], table["lastlba"]) == (34, size // SECTOR - 34)
    parts = partitions(hybrid.path)
    esp_sectors = parts[1]["size"]
    root_start = 4096 + esp_sectors
    root_sectors = -(-hybrid.report["root"]["size"] // MIB) * MIB // SECTOR
    assert [(p["start"], p["size"], p["type"], p["name"]) for p in parts] == [
        (2048, 2048, BIOS_BOOT_TYPE, "BIOS boot"),
        (4096, esp_sectors, ESP_TYPE, "EFI System Partition"),
        (root_start, root_sectors, ROOT_X86_64_TYPE, "root"),
    ]
    assert esp_sectors * SECTOR >= 64 * MIB and esp_sectors % 2048 == 0
    assert root_start * SECTOR == hybrid.report["root"]["offset"]
    # The disk ends at the next MiB after the root partition and the backup GPT.
    assert size == -(-((root_start + root_sectors + 33) * SECTOR) // MIB) * MIB
    guids = {p["uuid"] for p in parts} | {table["id"]}
    assert len(guids) == 4


def test_hybrid_gpt_passes_sgdisk_verify(hybrid: Disk) -> None:
    proc = run(["sgdisk", "-v", hybrid.path], check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out
    assert "No problems found." in out, out
    assert "Warning" not in out and "Problem" not in out, out


def test_root_partition_is_clean_ext4_with_fstab_by_uuid(hybrid: Disk, tmp_path: Path) -> None:
    root = part(hybrid.path, 3, tmp_path / "root.ext4")
    e2fsck_clean(root)
    fs_uuid = hybrid.report["root"]["uuid"]
    sb = superblock(root)
    assert sb["Filesystem UUID"] == fs_uuid
    assert sb["Filesystem state"] == "clean"
    assert int(sb["Block count"]) * 4096 == hybrid.report["root"]["size"]
    assert int(sb["Inode count"]) == hybrid.report["root"]["inodes"]
    assert int(sb["Free blocks"]) == hybrid.report["root"]["free_blocks"]
    probe = run(["blkid", "-p", "-o", "export", root]).stdout.decode()
    assert f"UUID={fs_uuid}\n" in probe
    assert "TYPE=ext4\n" in probe
    probe_in_place = run(
        ["blkid", "-p", "-o", "export", "-O", str(hybrid.report["root"]["offset"]), hybrid.path]
    ).stdout.decode()
    assert f"UUID={fs_uuid}\n" in probe_in_place
    assert debugfs(root, "cat /etc/fstab") == expected_fstab(fs_uuid)


def test_root_filesystem_holds_the_prepared_system(hybrid: Disk, tmp_path: Path) -> None:
    root = part(hybrid.path, 3, tmp_path / "root.ext4")
    fs_uuid = hybrid.report["root"]["uuid"]
    assert debugfs(root, "cat /boot/grub/grub.cfg").decode() == expected_grub_cfg(fs_uuid)
    assert debugfs(root, "cat /boot/vmlinuz-6.1.0-9-amd64") == KERNEL
    assert debugfs(root, "cat /boot/initrd.img-6.1.0-9-amd64") == INITRD
    assert debugfs(root, "cat /etc/hostname") == b"debian\n"
    assert b"127.0.1.1\tdebian\n" in debugfs(root, "cat /etc/hosts")
    assert debugfs(root, "cat /etc/shadow") == SHADOW  # no --root-password: unchanged
    link = "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
    stat = debugfs(root, f"stat {link}").decode()
    assert 'Fast link dest: "/lib/systemd/system/serial-getty@.service"' in stat
    root_dir = debugfs(root, "ls -p /").decode()
    names = {line.split("/")[5] for line in root_dir.splitlines() if line.count("/") >= 6}
    assert names == {".", "..", "boot", "etc", "lib", "lost+found", "root", "sbin"}
    assert hybrid.report["notes"] == [NOBODY_NOTE]


def test_esp_is_clean_fat_with_grub_efi(hybrid: Disk, tmp_path: Path) -> None:
    esp_part = sfdisk(hybrid.path)["partitions"][1]
    esp = part(hybrid.path, 2, tmp_path / "esp.fat")
    proc = run(["fsck.vfat", "-n", esp], check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
    where = mtools_offset(hybrid.path, esp_part["start"])
    listing = run(["mdir", "-i", where, "-b", "-/", "::/"]).stdout.decode().split()
    assert listing == ["::/EFI/", "::/EFI/BOOT/", "::/EFI/BOOT/BOOTX64.EFI"]
    copied = tmp_path / "BOOTX64.EFI"
    run(["mcopy", "-i", where, "::/EFI/BOOT/BOOTX64.EFI", copied])
    efi = copied.read_bytes()
    assert efi[:2] == b"MZ"
    assert efi == grub.build_efi(hybrid.report["root"]["uuid"])
    assert run(["mtype", "-i", where, "::/EFI/BOOT/BOOTX64.EFI"]).stdout == efi


def test_hybrid_sector0_is_grub_boot_img_pointing_at_bios_boot(hybrid: Disk) -> None:
    assert_grub_boot_sector(hybrid.path, 2048)
    # The protective MBR record stays behind the boot code.
    sector0 = sector(hybrid.path, 0)
    assert sector0[0x1BE + 4] == 0xEE
    assert_core_img(hybrid.path, 2048, hybrid.report["root"]["uuid"], "gpt")


def test_json_report_describes_the_disk(hybrid: Disk, layout: Layout, tmp_path: Path) -> None:
    report = dict(hybrid.report)
    seconds = report.pop("seconds")
    assert isinstance(seconds, float) and seconds > 0
    root = part(hybrid.path, 3, tmp_path / "root.ext4")
    sb = superblock(root)
    used_inodes = int(sb["Inode count"]) - int(sb["Free inodes"])
    assert report == {
        "output": str(hybrid.path),
        "format": "raw",
        "image_id": layout.built.config_digest,
        "manifest_digest": layout.built.manifest_digest,
        "source_digest": layout.built.config_digest,
        "disk_size": hybrid.path.stat().st_size,
        "table": "gpt",
        "boot": "hybrid",
        "root": {
            "type": "ext4",
            "uuid": sb["Filesystem UUID"],
            "offset": sfdisk(hybrid.path)["partitions"][2]["start"] * SECTOR,
            "size": int(sb["Block count"]) * 4096,
            "free_blocks": int(sb["Free blocks"]),
            "inodes": int(sb["Inode count"]),
        },
        "kernels": ["6.1.0-9-amd64"],
        "hostname": "debian",
        # Every inode but the 10 reserved ones (the root is number 2) and lost+found.
        "entries": used_inodes - 11,
        "notes": [NOBODY_NOTE],
    }


def test_human_output_names_the_disk_and_warns_that_nobody_can_log_in(
    layout: Layout, tmp_path: Path
) -> None:
    out = tmp_path / "disk.img"
    result = build(layout.source, "-o", str(out))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"Wrote {out} (raw)"
    assert re.fullmatch(r"  ext4 UUID=[0-9a-f-]{36}  \d+ MiB, \d+ MiB free", lines[1])
    assert lines[2:-1] == [f"  {NOBODY_NOTE}"]
    assert re.fullmatch(r"  in \d+\.\d s", lines[-1])
    assert " ".join(result.err.split()) == f"warning: {NOBODY_NOTE}"


def test_warnings_are_one_line_each_when_stderr_is_not_a_terminal(
    layout: Layout, tmp_path: Path
) -> None:
    result = build(layout.source, "-o", str(tmp_path / "disk.img"))
    assert result.code == 0, result.err
    assert result.err == f"warning: {NOBODY_NOTE}\n"


def test_two_builds_give_identical_disks(layout: Layout, hybrid: Disk, tmp_path: Path) -> None:
    again = tmp_path / "again.img"
    build_ok(layout.source, "-o", str(again))
    assert again.stat().st_size == hybrid.path.stat().st_size
    # Outside both files' data regions both read as zeros: hashing the union is enough.
    regions = sorted(set(data_regions(again)) | set(data_regions(hybrid.path)))
    assert sum(length for _, length in regions) > 1 * MIB
    assert sha256(again, regions) == sha256(hybrid.path, regions)


def test_root_password_and_ssh_key_reach_the_disk(layout: Layout, tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host\n")
    out = tmp_path / "disk.img"
    report = build_ok(
        layout.source, "-o", str(out), "--root-password", "Sw0rdfish!", "--ssh-key", str(key),
        "--hostname", "vm7",
    )  # fmt: skip
    assert report["notes"] == [
        "the image has no SSH server: the key only helps once one is installed"
    ]
    assert report["hostname"] == "vm7"
    root = part(out, 3, tmp_path / "root.ext4")
    e2fsck_clean(root)
    shadow = debugfs(root, "cat /etc/shadow").decode().splitlines()
    hashed = shadow[0].split(":")[1]
    assert hashed.startswith("$6$")
    from oci2vm.prepare.passwords import sha512_crypt

    assert sha512_crypt("Sw0rdfish!", hashed.split("$")[2]) == hashed
    assert shadow[1:] == ["nobody:*:19000:0:99999:7:::"]
    assert debugfs(root, "cat /root/.ssh/authorized_keys") == (
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host\n"
    )
    assert "Mode:  0600" in debugfs(root, "stat /root/.ssh/authorized_keys").decode()
    assert "Mode:  0700" in debugfs(root, "stat /root/.ssh").decode()
    assert debugfs(root, "cat /etc/hostname") == b"vm7\n"
    assert b"Sw0rdfish!" not in out.read_bytes()


def test_given_uuid_names_the_root_everywhere(layout: Layout, tmp_path: Path) -> None:
    fs_uuid = "12345678-9abc-4def-8123-456789abcdef"
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--uuid", fs_uuid.upper())
    assert report["root"]["uuid"] == fs_uuid
    root = part(out, 3, tmp_path / "root.ext4")
    assert superblock(root)["Filesystem UUID"] == fs_uuid
    assert debugfs(root, "cat /etc/fstab") == expected_fstab(fs_uuid)
    assert debugfs(root, "cat /boot/grub/grub.cfg").decode() == expected_grub_cfg(fs_uuid)
    assert_core_img(out, 2048, fs_uuid, "gpt")


def test_several_kernels_newest_boots_by_default(tmp_path: Path) -> None:
    source = tmp_path / "kernels"
    write_layout(
        source,
        [
            [
                *image_members(),
                file("boot/vmlinuz-6.1.0-10-amd64", b"newer"),
                file("boot/initrd.img-6.1.0-10-amd64", b"newer initrd"),
                file("boot/vmlinuz-5.10.0-28-amd64", b"older, no initrd"),
            ]
        ],
    )
    out = tmp_path / "disk.img"
    report = build_ok(f"oci:{source}", "-o", str(out), "--boot", "bios")
    assert report["kernels"] == ["6.1.0-10-amd64", "6.1.0-9-amd64", "5.10.0-28-amd64"]
    cfg = debugfs(part(out, 2, tmp_path / "root.ext4"), "cat /boot/grub/grub.cfg").decode()
    entries = re.findall(
        r"menuentry '([^']+)' \{\n.*\n\t\tlinux16 (\S+) .*\n(?:\t\tinitrd16 (\S+)\n)?", cfg
    )
    assert entries == [
        ("Linux 6.1.0-10-amd64", "/boot/vmlinuz-6.1.0-10-amd64", "/boot/initrd.img-6.1.0-10-amd64"),
        ("Linux 6.1.0-9-amd64", "/boot/vmlinuz-6.1.0-9-amd64", "/boot/initrd.img-6.1.0-9-amd64"),
        ("Linux 5.10.0-28-amd64", "/boot/vmlinuz-5.10.0-28-amd64", ""),
    ]
    assert "set default=0\n" in cfg


def test_fedora_kernel_layout_without_init_boots_its_kernel_and_says_no_init(
    tmp_path: Path,
) -> None:
    version = "6.5.6-300.fc39.x86_64"
    source = tmp_path / "fedora"
    write_layout(
        source,
        [
            [
                directory("lib"),
                directory("lib/modules"),
                directory(f"lib/modules/{version}"),
                file(f"lib/modules/{version}/vmlinuz", KERNEL),
                directory("boot"),
                file(f"boot/initramfs-{version}.img", INITRD),
            ]
        ],
    )
    out = tmp_path / "disk.img"
    report = build_ok(f"oci:{source}", "-o", str(out), "--boot", "uefi")
    assert report["kernels"] == [version]
    assert report["notes"] == [
        "no init system found (/sbin/init): the kernel will have nothing to run",
        NOBODY_NOTE,
    ]
    cfg = debugfs(part(out, 2, tmp_path / "root.ext4"), "cat /boot/grub/grub.cfg").decode()
    assert f"\t\tlinux /lib/modules/{version}/vmlinuz root=UUID=" in cfg
    assert f"\t\tinitrd /boot/initramfs-{version}.img\n" in cfg


# -- other layouts ------------------------------------------------------------------------


def test_mbr_bios_disk_boots_from_the_gap(mbr_bios: Disk, tmp_path: Path) -> None:
    table = sfdisk(mbr_bios.path)
    assert table["label"] == "dos"
    parts = partitions(mbr_bios.path)
    root_sectors = -(-mbr_bios.report["root"]["size"] // MIB) * MIB // SECTOR
    assert parts == [{"start": 2048, "size": root_sectors, "type": "83", "bootable": True}]
    assert mbr_bios.path.stat().st_size == (2048 + root_sectors) * SECTOR
    assert table["id"] == f"0x{struct.unpack_from('<I', sector(mbr_bios.path, 0), 0x1B8)[0]:08x}"
    assert mbr_bios.report["table"] == "mbr" and mbr_bios.report["boot"] == "bios"
    assert_grub_boot_sector(mbr_bios.path, 1)
    assert_core_img(mbr_bios.path, 1, mbr_bios.report["root"]["uuid"], "mbr")
    root = part(mbr_bios.path, 1, tmp_path / "root.ext4")
    e2fsck_clean(root)
    assert debugfs(root, "cat /etc/fstab") == expected_fstab(mbr_bios.report["root"]["uuid"])


def test_mbr_hybrid_disk_has_an_esp_before_the_bootable_root(
    layout: Layout, tmp_path: Path
) -> None:
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--table", "mbr")
    parts = partitions(out)
    esp_sectors = parts[0]["size"]
    assert [(p["start"], p["type"], p.get("bootable", False)) for p in parts] == [
        (2048, "ef", False),
        (2048 + esp_sectors, "83", True),
    ]
    assert parts[1]["start"] * SECTOR == report["root"]["offset"]
    assert_grub_boot_sector(out, 1)
    proc = run(["fsck.vfat", "-n", part(out, 1, tmp_path / "esp.fat")], check=False)
    assert proc.returncode == 0, proc.stdout.decode()
    e2fsck_clean(part(out, 2, tmp_path / "root.ext4"))


def test_uefi_only_disk_has_no_bios_boot_partition_or_boot_code(
    layout: Layout, tmp_path: Path
) -> None:
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--boot", "uefi")
    parts = partitions(out)
    assert [(p["start"], p["type"]) for p in parts] == [
        (2048, ESP_TYPE),
        (2048 + parts[0]["size"], ROOT_X86_64_TYPE),
    ]
    assert report["boot"] == "uefi"
    assert sector(out, 0)[:440] == bytes(440)
    assert run(["sgdisk", "-v", out]).stdout.decode().count("No problems found.") == 1
    e2fsck_clean(part(out, 2, tmp_path / "root.ext4"))
    where = mtools_offset(out, parts[0]["start"])
    assert run(["mtype", "-i", where, "::/EFI/BOOT/BOOTX64.EFI"]).stdout[:2] == b"MZ"


def test_bios_only_gpt_disk_has_no_esp(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--boot", "bios")
    parts = partitions(out)
    assert [(p["start"], p["size"], p["type"]) for p in parts] == [
        (2048, 2048, BIOS_BOOT_TYPE),
        (4096, parts[1]["size"], ROOT_X86_64_TYPE),
    ]
    assert report["root"]["offset"] == 4096 * SECTOR
    assert_grub_boot_sector(out, 2048)
    e2fsck_clean(part(out, 2, tmp_path / "root.ext4"))


def test_size_makes_a_sparse_disk_whose_root_fills_it(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--size", "10G")
    st = out.stat()
    assert st.st_size == 10 << 30 == report["disk_size"]
    assert st.st_blocks * 512 < 64 * MIB, st.st_blocks
    table = sfdisk(out)
    root = table["partitions"][2]
    # The root partition ends on the last whole MiB before the backup GPT.
    assert root["start"] + root["size"] == (10 << 30) // SECTOR - 2048
    assert table["lastlba"] == (10 << 30) // SECTOR - 34
    assert run(["sgdisk", "-v", out]).stdout.decode().count("No problems found.") == 1
    copy = part(out, 3, tmp_path / "root.ext4")
    e2fsck_clean(copy)
    blocks = int(superblock(copy)["Block count"])
    assert root["size"] * SECTOR - 128 * MIB < blocks * 4096 <= root["size"] * SECTOR
    assert report["root"]["size"] == blocks * 4096


@pytest.mark.parametrize("table", ["gpt", "mbr"])
@pytest.mark.parametrize("size", ["102500K", "104857601", "100M"])
def test_size_is_never_exceeded(layout: Layout, tmp_path: Path, table: str, size: str) -> None:
    """A --size that is no whole number of MiB gives the whole MiB below it."""
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--size", size, "--table", table)
    assert report["disk_size"] == out.stat().st_size == 100 * MIB
    last = sfdisk(out)["partitions"][-1]
    assert (last["start"] + last["size"]) * SECTOR == 100 * MIB - (MIB if table == "gpt" else 0)


@pytest.mark.parametrize(
    ("name", "args", "qemu_format"),
    [
        ("disk.qcow2", [], "qcow2"),
        ("disk.vmdk", [], "vmdk"),
        ("disk.vdi", [], "vdi"),
        ("disk.vhdx", [], "vhdx"),
        ("disk.bin", ["--format", "qcow2"], "qcow2"),
        ("disk.img", ["--format", "vhdx"], "vhdx"),
        ("disk.qcow2", ["--compress"], "qcow2"),
    ],
)
def test_converted_formats_hold_the_raw_disk(
    layout: Layout, hybrid: Disk, tmp_path: Path, name: str, args: list[str], qemu_format: str
) -> None:
    out = tmp_path / name
    report = build_ok(layout.source, "-o", str(out), *args)
    assert report["format"] == qemu_format
    info = json.loads(run(["qemu-img", "info", "--output=json", out]).stdout)
    assert info["format"] == qemu_format
    assert info["virtual-size"] == hybrid.report["disk_size"] == report["disk_size"]
    assert run(["qemu-img", "check", "-f", qemu_format, out]).returncode == 0
    compared = run(["qemu-img", "compare", "-f", "raw", "-F", qemu_format, hybrid.path, out])
    assert compared.stdout.decode().strip() == "Images are identical."
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert info["actual-size"] < 64 * MIB  # zeros are not stored
    if "--compress" in args:
        plain = tmp_path.parent / "plain.qcow2"
        assert (
            json.loads(run(["qemu-img", "info", "--output=json", out]).stdout)["format-specific"][
                "type"
            ]
            == "qcow2"
        )
        run(["qemu-img", "convert", "-O", "qcow2", hybrid.path, plain])
        assert out.stat().st_size < plain.stat().st_size
        plain.unlink()


# -- errors -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernelless(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("layouts") / "nokernel"
    members = [m for m in image_members() if not m.info.name.startswith("boot/")]
    write_layout(path, [members])
    return f"oci:{path}"


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "disk.img",
            ["{kernelless}"],
            r"oci:.*/nokernel: the image has no kernel \(looked for /boot/vmlinuz-\*, "
            r"/lib/modules/\*/vmlinuz, /vmlinuz\): install one in the image, e\.g\. "
            r"linux-image-amd64 on Debian",
        ),
        (
            "disk.qcow2",
            ["{kernelless}"],
            r"the image has no kernel",
        ),
        (
            "disk.img",
            ["{source}", "--size", "10M"],
            r"--size 10485760 bytes is too small for this disk: it needs at least \d+ MiB; "
            r"pass a larger --size or leave it out$",
        ),
        (  # room for a root partition, but not for the image in it
            "disk.img",
            ["{source}", "--size", "68M"],
            r"--size 71303168 bytes is too small for this disk: it needs at least \d+ MiB",
        ),
        (
            "disk.img",
            ["{source}", "--size", "3M", "--table", "mbr", "--boot", "bios"],
            r"--size 3145728 bytes is too small for this disk: it needs at least \d+ MiB",
        ),
        ("disk.img", ["{source}", "--compress"], r"--compress is only for qcow2 output"),
        ("disk.vdi", ["{source}", "--compress"], r"--compress is only for qcow2 output"),
        ("disk.img", ["{source}", "--hostname", "Bad_Name"], r"malformed --hostname 'Bad_Name'"),
        ("disk.img", ["{source}", "--ssh-key", "/nonexistent.pub"], r"--ssh-key /nonexistent"),
        ("disk.img", ["{source}", "--uuid", "not-a-uuid"], r"malformed --uuid 'not-a-uuid'"),
        (
            "disk.bin",
            ["{source}"],
            r"cannot tell the format of 'disk\.bin' from its extension: "
            r"use --format ext4\|raw\|qcow2\|vmdk\|vdi\|vhdx",
        ),
    ],
)
def test_build_errors_are_one_line_and_leave_no_file(
    layout: Layout,
    kernelless: str,
    tmp_path: Path,
    name: str,
    args: list[str],
    message: str,
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    argv = [a.format(source=layout.source, kernelless=kernelless) for a in args]
    result = build(*argv, "-o", str(outdir / name))
    assert result.code == 1, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("oci2vm: error: "), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert list(outdir.iterdir()) == []


def minimum_size(result: Result) -> int:
    found = re.search(r"it needs at least (\d+) MiB", result.err)
    assert found, result.err
    return int(found[1])


@pytest.mark.parametrize("table_args", [[], ["--table", "mbr", "--boot", "bios"]])
def test_too_small_size_names_a_minimum_that_is_not_too_small(
    layout: Layout, tmp_path: Path, table_args: list[str]
) -> None:
    out = tmp_path / "disk.img"
    minimum = minimum_size(build(layout.source, "-o", str(out), "--size", "1M", *table_args))
    below = build(layout.source, "-o", str(out), "--size", f"{minimum - 1}M", *table_args)
    assert below.code == 1 and minimum_size(below) == minimum
    report = build_ok(layout.source, "-o", str(out), "--size", f"{minimum}M", *table_args)
    assert report["disk_size"] == out.stat().st_size == minimum * MIB


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_unwritable_output_directory_is_a_one_line_error(layout: Layout) -> None:
    result = build(layout.source, "-o", "/proc/disk.img")
    assert (result.code, result.out) == (1, "")
    assert re.fullmatch(
        r"oci2vm: error: /proc: cannot create files there \(.+\): choose another -o\n", result.err
    )


def test_failed_build_keeps_an_existing_output(
    layout: Layout, kernelless: str, tmp_path: Path
) -> None:
    out = tmp_path / "disk.img"
    out.write_bytes(b"previous disk")
    result = build(kernelless, "-o", str(out))
    assert result.code == 1
    assert out.read_bytes() == b"previous disk"
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


# -- the root filesystem alone ------------------------------------------------------------


def test_ext4_format_is_the_flattened_image_unprepared(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "root.img"
    report = build_ok(layout.source, "-o", str(out), "--format", "ext4")
    e2fsck_clean(out)
    sb = superblock(out)
    assert report["format"] == "ext4"
    assert report["filesystem"]["uuid"] == sb["Filesystem UUID"]
    assert report["filesystem"]["size"] == out.stat().st_size == int(sb["Block count"]) * 4096
    assert report["entries"] == len(image_members())
    for member in image_members():
        path = "/" + member.info.name
        stat = debugfs(out, f"stat {path}").decode()
        assert f"Mode:  {member.info.mode:04o}" in stat, (path, stat)
        assert f"Group: {member.info.gid:>5}" in stat, (path, stat)
        if member.info.isfile():
            assert debugfs(out, f"cat {path}") == member.data, path
        elif member.info.issym():
            assert f'Fast link dest: "{member.info.linkname}"' in stat
    # Nothing of the disk's preparation: no fstab, no grub.cfg, .dockerenv still there.
    assert "File not found" in run(["debugfs", "-R", "stat /etc/fstab", out]).stderr.decode()
    assert "File not found" in run(["debugfs", "-R", "stat /boot/grub", out]).stderr.decode()


# -- check of a SOURCE: the temporary disk (QEMU replaced by a recorder) ------------------


@dataclass
class FakeBoot:
    """Stands in for vm.check_boot: records the disk it was given and what it saw there."""

    result: vm.CheckResult
    disks: list[Path]
    labels: list[str]
    options: list[dict[str, Any]]

    def __call__(self, disk: Path, **options: Any) -> vm.CheckResult:
        self.disks.append(disk)
        self.labels.append(sfdisk(disk)["label"])
        self.options.append(options)
        return self.result


def fake_boot(monkeypatch: pytest.MonkeyPatch, result: vm.CheckResult) -> FakeBoot:
    fake = FakeBoot(result, [], [], [])
    monkeypatch.setattr(vm, "check_boot", fake)
    return fake


def cli(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Result(code, out.getvalue(), err.getvalue())


def test_check_of_a_source_boots_a_temporary_disk_and_prints_only_its_json(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_boot(monkeypatch, vm.CheckResult(True, 1.25, "debian login: ", ""))
    result = cli(
        "check", layout.source, "--json", "--firmware", "uefi", "--timeout", "5",
        "--table", "mbr", "--root-password", "pw",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "ok": True,
        "seconds": 1.25,
        "expect": "login:",
        "reason": "",
        "console_tail": "debian login: ",
    }
    # Compared without whitespace: paths in the notes may be long.
    notes = "".join(result.err.split())
    assert re.fullmatch(
        re.escape(f"building{layout.source}intoatemporarydisk") + r"Wrote/\S+/disk\.img\(raw\).*",
        notes,
    ), result.err
    assert fake.labels == ["dos"]  # built with the given options
    assert fake.options == [
        {
            "expect": "login:",
            "timeout": 5.0,
            "firmware": "uefi",
            "bus": "virtio",
            "accel": "auto",
            "memory_mib": 1024,
            "cpus": 2,
        }
    ]
    assert fake.disks[0].name == "disk.img"
    assert not fake.disks[0].parent.exists()  # the temporary disk is gone


def test_failed_check_of_a_disk_file_exits_1_with_the_console_tail(
    hybrid: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_boot(monkeypatch, vm.CheckResult(False, 5.0, "Kernel panic", "timed out"))
    result = cli("check", str(hybrid.path), "--expect", "READY", "-q")
    assert result.code == 1
    assert result.out == "failed: timed out after 5.0 s\n--- console tail ---\nKernel panic\n"
    assert fake.disks == [hybrid.path]  # the file itself, not a copy
    assert fake.options[0]["expect"] == "READY"


def test_directories_no_layer_lists_take_the_filesystem_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker's layers seldom list "./", and may leave parents implicit: such directories
    get SOURCE_DATE_EPOCH (else the image's creation time), not 1970."""
    source = tmp_path / "img"
    write_layout(source, [[directory("a/b"), file("a/b/f", b"x")]])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1714564800")
    out = tmp_path / "root.ext4"
    build_ok(f"oci:{source}", "-o", str(out))
    for path in ("/", "/a"):
        stat = debugfs(out, f"stat {path}").decode()
        mtime = re.search(r"mtime: (0x[0-9a-f]+):", stat)
        assert mtime is not None and int(mtime[1], 16) == 1714564800, stat
    listed = re.search(r"mtime: (0x[0-9a-f]+):", debugfs(out, "stat /a/b").decode())
    assert listed is not None and int(listed[1], 16) != 1714564800  # the layer's own time
