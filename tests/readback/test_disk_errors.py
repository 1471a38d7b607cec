"""`oci2vm build` errors: one line, exit 1, no file left (and an existing output kept);
sizes too small name a minimum that fits. And `oci2vm check` of a source or a disk file,
with QEMU replaced by a recorder that reads the disk it is given."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from oci2vm import vm
from oci2vm.config import CHECK_EXPECT
from support.disks import (
    MIB,
    Disk,
    Layout,
    Result,
    build,
    build_ok,
    cli,
    fake_boot,
)
from support.programs import DISK_TOOLS, requires

pytestmark = requires(*DISK_TOOLS)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "disk.img",
            ["{kernelless}", "--kernel", "image"],
            r"oci:.*/nokernel: the image has no kernel \(looked for /boot/vmlinuz-\*, "
            r"/lib/modules/\*/vmlinuz, /vmlinuz\): drop --kernel image to inject Debian's$",
        ),
        (
            "disk.qcow2",
            ["{kernelless}", "--kernel", "image"],
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
            "disk.qcow2",
            ["{source}", "--format", "raw"],
            r"-o disk\.qcow2: its extension says qcow2, --format says raw: rename it",
        ),
        ("disk.ext4", ["{source}", "--format", "vmdk"], r"its extension says ext4, --format"),
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
    assert report["disk"]["size"] == out.stat().st_size == minimum * MIB


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
    result = build(kernelless, "--kernel", "image", "-o", str(out))
    assert result.code == 1
    assert out.read_bytes() == b"previous disk"
    assert [p.name for p in tmp_path.iterdir()] == ["disk.img"]


# -- check of a SOURCE: the temporary disk (QEMU replaced by a recorder) ------------------


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
        "expect": CHECK_EXPECT,
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
            "expect": CHECK_EXPECT,
            "timeout": 5.0,
            "firmware": "uefi",
            "bus": "virtio",
            "accel": "auto",
            "memory_mib": 1024,
            "cpus": 2,
            "fail": f"{vm.KERNEL_PANIC}|{vm.APP_FAILED}|{vm.NO_BOOT_DEVICE}",
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
