"""Other disks built through the CLI and read back by the tools: MBR (BIOS, and BIOS +
UEFI), UEFI-only and BIOS-only GPT, --size, the converted formats (qemu-img), and the
root filesystem alone (--format ext4)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from oci2vm import vm
from oci2vm.util.tools import run
from support.disks import (
    BIOS_BOOT_TYPE,
    ESP_TYPE,
    MIB,
    ROOT_X86_64_TYPE,
    SECTOR,
    Disk,
    Layout,
    assert_core_img,
    assert_grub_boot_sector,
    build_ok,
    debugfs,
    e2fsck_clean,
    expected_fstab,
    image_members,
    mtools_offset,
    part,
    partitions,
    sector,
    sfdisk,
    superblock,
)
from support.layouts import directory, file, write_layout
from support.programs import DISK_TOOLS, requires

pytestmark = requires(*DISK_TOOLS)


def test_mbr_bios_disk_boots_from_the_gap(mbr_bios: Disk, tmp_path: Path) -> None:
    table = sfdisk(mbr_bios.path)
    assert table["label"] == "dos"
    parts = partitions(mbr_bios.path)
    root_sectors = -(-mbr_bios.report["filesystem"]["size"] // MIB) * MIB // SECTOR
    assert parts == [{"start": 2048, "size": root_sectors, "type": "83", "bootable": True}]
    assert mbr_bios.path.stat().st_size == (2048 + root_sectors) * SECTOR
    assert table["id"] == f"0x{struct.unpack_from('<I', sector(mbr_bios.path, 0), 0x1B8)[0]:08x}"
    assert mbr_bios.report["disk"]["table"] == "mbr" and mbr_bios.report["disk"]["boot"] == "bios"
    assert_grub_boot_sector(mbr_bios.path, 1)
    assert_core_img(mbr_bios.path, 1, mbr_bios.report["filesystem"]["uuid"], "mbr")
    root = part(mbr_bios.path, 1, tmp_path / "root.ext4")
    e2fsck_clean(root)
    assert debugfs(root, "cat /etc/fstab") == expected_fstab(mbr_bios.report["filesystem"]["uuid"])


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
    assert parts[1]["start"] * SECTOR == report["disk"]["root_offset"]
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
    assert report["disk"]["boot"] == "uefi"
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
    assert report["disk"]["root_offset"] == 4096 * SECTOR
    assert_grub_boot_sector(out, 2048)
    e2fsck_clean(part(out, 2, tmp_path / "root.ext4"))


def test_size_makes_a_sparse_disk_whose_root_fills_it(layout: Layout, tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--size", "10G")
    st = out.stat()
    assert st.st_size == 10 << 30 == report["disk"]["size"]
    assert st.st_blocks * 512 < 64 * MIB, st.st_blocks
    table = sfdisk(out)
    root = table["partitions"][2]
    # The root partition ends on the last whole 4 KiB block before the backup GPT (33
    # sectors): no gap behind it for a grower at boot to fill.
    assert root["start"] + root["size"] == (10 << 30) // SECTOR - 40
    assert table["lastlba"] == (10 << 30) // SECTOR - 34
    assert run(["sgdisk", "-v", out]).stdout.decode().count("No problems found.") == 1
    copy = part(out, 3, tmp_path / "root.ext4")
    e2fsck_clean(copy)
    blocks = int(superblock(copy)["Block count"])
    assert root["size"] * SECTOR - 128 * MIB < blocks * 4096 <= root["size"] * SECTOR
    assert report["filesystem"]["size"] == blocks * 4096


@pytest.mark.parametrize("table", ["gpt", "mbr"])
@pytest.mark.parametrize("size", ["102500K", "104857601", "100M"])
def test_size_is_never_exceeded(layout: Layout, tmp_path: Path, table: str, size: str) -> None:
    """A --size that is no whole number of MiB gives the whole MiB below it."""
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--size", size, "--table", table)
    assert report["disk"]["size"] == out.stat().st_size == 100 * MIB
    last = sfdisk(out)["partitions"][-1]
    backup_gpt = 40 * SECTOR  # its 33 sectors, to the 4 KiB block
    assert (last["start"] + last["size"]) * SECTOR == 100 * MIB - (
        backup_gpt if table == "gpt" else 0
    )


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
    assert vm.disk_format(out) == qemu_format  # what `run` and `check` give QEMU
    assert info["virtual-size"] == hybrid.report["disk"]["size"] == report["disk"]["size"]
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
