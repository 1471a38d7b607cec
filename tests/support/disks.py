"""Bootable disks built through the CLI from a small image with a (fake) kernel, and the
readers the disk tests check them with: sfdisk, sgdisk, e2fsck, debugfs, dumpe2fs, blkid,
fsck.vfat, mtools and qemu-img (support.programs.DISK_TOOLS). The session fixtures
`layout`, `kernelless`, `hybrid` and `mbr_bios` are in tests/conftest.py."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oci2vm import vm
from oci2vm.boot import grub
from oci2vm.cli import main
from oci2vm.util.tools import run
from support.initrds import cpio_of
from support.layouts import Member, OciLayout, directory, file, symlink

SECTOR = 512


MIB = 1 << 20


BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"


ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


KERNEL = b"MZ fake kernel \x00\x01\x02" * 100


# An initrd the kernel could unpack, whose ext4 module lets it mount the root by UUID.
INITRD = gzip.compress(cpio_of("init", "usr/lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko"),
                       mtime=0)  # fmt: skip


PASSWD = b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\n"


SHADOW = b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"


SERIAL_GETTY = b"[Unit]\nDescription=Serial Getty on %I\n"


NETWORKD_UNIT = (
    b"[Unit]\nDescription=Network Configuration\n\n[Install]\n"
    b"WantedBy=multi-user.target\nAlias=dbus-org.freedesktop.network1.service\n"
)
RESOLVED_UNIT = b"[Install]\nWantedBy=multi-user.target\n"


NOBODY_NOTE = (
    "nobody can log in: no --root-password, --ssh-key or --add-user with a password was "
    "given (the image's own accounts are unchanged)"
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
        file("etc/os-release", b'PRETTY_NAME="Test Linux 1"\nID=test\nID_LIKE=debian\n'),
        directory("lib"),
        directory("lib/systemd"),
        file("lib/systemd/systemd", b"\x7fELF systemd", mode=0o755),
        directory("lib/systemd/system"),
        file("lib/systemd/system/serial-getty@.service", SERIAL_GETTY),
        # networkd and resolved, as Debian's systemd and systemd-resolved ship them
        file("lib/systemd/systemd-networkd", b"\x7fELF networkd", mode=0o755),
        file("lib/systemd/system/systemd-networkd.service", NETWORKD_UNIT),
        file("lib/systemd/system/systemd-resolved.service", RESOLVED_UNIT),
        directory("sbin"),
        symlink("sbin/init", "/lib/systemd/systemd"),
        file("sbin/resize2fs", b"\x7fELF resize2fs", mode=0o755),  # e2fsprogs
        directory("root", mode=0o700),
        file(".dockerenv"),
    ]


@dataclass
class Layout:
    source: str
    built: OciLayout


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
    """The readback layout's grub.cfg: a systemd image (no firstboot prompts)."""
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
        " console=ttyS0,115200 systemd.firstboot=off\n"
        "\t\tinitrd16 /boot/initrd.img-6.1.0-9-amd64\n"
        "\telse\n"
        f"\t\tlinux /boot/vmlinuz-6.1.0-9-amd64 root=UUID={fs_uuid} rw console=tty0"
        " console=ttyS0,115200 systemd.firstboot=off\n"
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
    boot_img = (grub.GRUB_LIB_DIR / "i386-pc" / "boot.img").read_bytes()
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
