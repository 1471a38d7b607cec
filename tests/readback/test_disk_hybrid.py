"""The default disk (GPT, BIOS and UEFI), built through the CLI from a small image with a
(fake) kernel and read back by the tools that would read the real thing: sfdisk, sgdisk,
e2fsck, debugfs, dumpe2fs, blkid, fsck.vfat and mtools; the report, the output, the
options that reach the disk, and kernels. Nothing boots here (tests/boot/ boots)."""

from __future__ import annotations

import re
from pathlib import Path

from oci2vm.boot import grub
from oci2vm.util.tools import run
from support.disks import (
    BIOS_BOOT_TYPE,
    ESP_TYPE,
    INITRD,
    KERNEL,
    MIB,
    NOBODY_NOTE,
    ROOT_X86_64_TYPE,
    SECTOR,
    SHADOW,
    Disk,
    Layout,
    assert_core_img,
    assert_grub_boot_sector,
    build,
    build_ok,
    data_regions,
    debugfs,
    e2fsck_clean,
    expected_fstab,
    expected_grub_cfg,
    image_members,
    mtools_offset,
    part,
    partitions,
    sector,
    sfdisk,
    sha256,
    superblock,
)
from support.layouts import directory, file, write_layout
from support.programs import DISK_TOOLS, requires

pytestmark = requires(*DISK_TOOLS)


def test_hybrid_gpt_layout_as_sfdisk_reads_it(hybrid: Disk) -> None:
    table = sfdisk(hybrid.path)
    size = hybrid.path.stat().st_size
    assert size == hybrid.report["disk"]["size"]
    assert size % 4096 == 0
    assert (table["label"], table["unit"], table["sectorsize"]) == ("gpt", "sectors", 512)
    assert (table["firstlba"], table["lastlba"]) == (34, size // SECTOR - 34)
    parts = partitions(hybrid.path)
    esp_sectors = parts[1]["size"]
    root_start = 4096 + esp_sectors
    root_sectors = hybrid.report["filesystem"]["size"] // SECTOR  # whole 4 KiB blocks
    assert [(p["start"], p["size"], p["type"], p["name"]) for p in parts] == [
        (2048, 2048, BIOS_BOOT_TYPE, "BIOS boot"),
        (4096, esp_sectors, ESP_TYPE, "EFI System Partition"),
        (root_start, root_sectors, ROOT_X86_64_TYPE, "root"),
    ]
    assert esp_sectors * SECTOR >= 64 * MIB and esp_sectors % 2048 == 0
    assert root_start * SECTOR == hybrid.report["disk"]["root_offset"]
    # The disk ends at the 4 KiB block holding the backup GPT's end, right after the root
    # partition: no gap behind the root for a grower at boot (systemd-repart) to fill.
    assert size == -(-((root_start + root_sectors + 33) * SECTOR) // 4096) * 4096
    assert size // SECTOR - 33 - (root_start + root_sectors) < 8
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
    fs_uuid = hybrid.report["filesystem"]["uuid"]
    sb = superblock(root)
    assert sb["Filesystem UUID"] == fs_uuid
    assert sb["Filesystem state"] == "clean"
    assert int(sb["Block count"]) * 4096 == hybrid.report["filesystem"]["size"]
    assert int(sb["Inode count"]) == hybrid.report["filesystem"]["inodes"]
    assert int(sb["Free blocks"]) == hybrid.report["filesystem"]["free_blocks"]
    probe = run(["blkid", "-p", "-o", "export", root]).stdout.decode()
    assert f"UUID={fs_uuid}\n" in probe
    assert "TYPE=ext4\n" in probe
    probe_in_place = run(
        [
            "blkid",
            "-p",
            "-o",
            "export",
            "-O",
            str(hybrid.report["disk"]["root_offset"]),
            hybrid.path,
        ]
    ).stdout.decode()
    assert f"UUID={fs_uuid}\n" in probe_in_place
    assert debugfs(root, "cat /etc/fstab") == expected_fstab(fs_uuid)


def test_root_filesystem_holds_the_prepared_system(hybrid: Disk, tmp_path: Path) -> None:
    root = part(hybrid.path, 3, tmp_path / "root.ext4")
    fs_uuid = hybrid.report["filesystem"]["uuid"]
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
    # /proc, /sys, /dev, /run and /tmp: the mount points the image lacked
    assert names == {".", "..", "boot", "etc", "lib", "lost+found", "root", "sbin", "proc",
                     "sys", "dev", "run", "tmp"}  # fmt: skip
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
    assert efi == grub.build_efi(hybrid.report["filesystem"]["uuid"])
    assert run(["mtype", "-i", where, "::/EFI/BOOT/BOOTX64.EFI"]).stdout == efi


def test_hybrid_sector0_is_grub_boot_img_pointing_at_bios_boot(hybrid: Disk) -> None:
    assert_grub_boot_sector(hybrid.path, 2048)
    # The protective MBR record stays behind the boot code.
    sector0 = sector(hybrid.path, 0)
    assert sector0[0x1BE + 4] == 0xEE
    assert_core_img(hybrid.path, 2048, hybrid.report["filesystem"]["uuid"], "gpt")


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
        "filesystem": {
            "type": "ext4",
            "uuid": sb["Filesystem UUID"],
            "size": int(sb["Block count"]) * 4096,
            "blocks": int(sb["Block count"]),
            "free_blocks": int(sb["Free blocks"]),
            "inodes": int(sb["Inode count"]),
            "free_inodes": int(sb["Free inodes"]),
        },
        "disk": {
            "size": hybrid.path.stat().st_size,
            "table": "gpt",
            "boot": "hybrid",
            "root_offset": sfdisk(hybrid.path)["partitions"][2]["start"] * SECTOR,
            "arch": "amd64",
        },
        "system": {
            "hostname": "debian",
            "kernels": ["6.1.0-9-amd64"],
            "init": "systemd",
            "mode": "system",
        },
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
    assert report["system"]["hostname"] == "vm7"
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


def test_given_uuid_names_the_root_everywhere(layout: Layout, hybrid: Disk, tmp_path: Path) -> None:
    """--uuid names the root filesystem, and sets the disk's own identifiers apart from
    those of the same image built without it (two such disks attached to one VM would
    clash on PARTUUIDs and the ESP's serial)."""
    fs_uuid = "12345678-9abc-4def-8123-456789abcdef"
    out = tmp_path / "disk.img"
    report = build_ok(layout.source, "-o", str(out), "--uuid", fs_uuid.upper())
    assert report["filesystem"]["uuid"] == fs_uuid
    root = part(out, 3, tmp_path / "root.ext4")
    assert superblock(root)["Filesystem UUID"] == fs_uuid
    assert debugfs(root, "cat /etc/fstab") == expected_fstab(fs_uuid)
    assert debugfs(root, "cat /boot/grub/grub.cfg").decode() == expected_grub_cfg(fs_uuid)
    assert_core_img(out, 2048, fs_uuid, "gpt")
    ids = [
        {p["uuid"] for p in partitions(disk)} | {sfdisk(disk)["id"]} for disk in (out, hybrid.path)
    ]
    assert len(ids[0] | ids[1]) == 8
    serials = [sector(disk, partitions(disk)[1]["start"])[0x43:0x47] for disk in (out, hybrid.path)]
    assert serials[0] != serials[1]  # (FAT32's volume id, in the ESP's boot sector)


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
    assert report["system"]["kernels"] == ["6.1.0-10-amd64", "6.1.0-9-amd64", "5.10.0-28-amd64"]
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


def test_fedora_kernel_layout_boots_its_kernel(
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
                directory("sbin"),
                file("sbin/init", b"", mode=0o755),
                directory("boot"),
                file(f"boot/initramfs-{version}.img", INITRD),
            ]
        ],
    )
    out = tmp_path / "disk.img"
    report = build_ok(f"oci:{source}", "-o", str(out), "--boot", "uefi")
    assert report["system"]["kernels"] == [version]
    assert NOBODY_NOTE in report["notes"]
    cfg = debugfs(part(out, 2, tmp_path / "root.ext4"), "cat /boot/grub/grub.cfg").decode()
    assert f"\t\tlinux /lib/modules/{version}/vmlinuz root=UUID=" in cfg
    assert f"\t\tinitrd /boot/initramfs-{version}.img\n" in cfg
