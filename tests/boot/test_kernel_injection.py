"""Images without a kernel built into disks that boot (QEMU, TCG): Debian's kernel
injected (verified through the archive's signed chain) with oci2vm's initramfs.

- debian-systemd (systemd, no kernel): the kernel of its own release (bookworm, from its
  os-release) with its modules and their indexes in the root; boots to `login:` on BIOS
  and on UEFI.
- busybox-app (no init): a disk whose GRUB boots the kernel and our initramfs, which runs
  the workload baked in at build time (`-- CMD`); its output reaches the serial console.
- Two builds of the same app disk are byte-identical, the initramfs inside too.

Kernel packages come from the shared fixture store (support.debarchives.fixture_store)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from fixture_images import FixtureSet, busybox_app_fixture, debian_systemd_fixture
from oci2vm import vm
from support.debarchives import configured_mirror, fixture_store
from support.disks import cli, debugfs, e2fsck_clean, part
from support.layouts import whiteout, write_layout
from support.programs import requires
from support.runcli import skip_unless_buildable

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.fixture,
    requires("qemu-system-x86_64", "sfdisk", "e2fsck", "debugfs"),
]

PASSWORD = "oci2vm-Test-pw"
BOOT_TIMEOUT = 420.0  # TCG on two shared cores: far more than idle under load
ROOT_PARTITION = 3  # of the default GPT hybrid disk: BIOS boot, ESP, root
APP_SCRIPT = "echo marker-$((6*7)); exit 3"


def source(fx: FixtureSet) -> str:
    return f"oci:{fx.oci_layout}:{fx.tag}"


def build(src: str, out: Path, *args: str) -> dict[str, Any]:
    """`oci2vm build` in-process with the shared kernel cache; its --json report."""
    result = cli("build", src, "-o", str(out), "--json", "--cache-dir",
                 str(fixture_store().root), "--mirror", configured_mirror(), *args)  # fmt: skip
    assert result.code == 0, result.err
    report: dict[str, Any] = json.loads(result.out)
    return report


def assert_boots(disk: Path, expect: str, firmware: str) -> vm.CheckResult:
    result = vm.check_boot(
        disk, expect=expect, timeout=BOOT_TIMEOUT, accel="tcg", firmware=firmware
    )
    assert result.ok, f"{result.reason}\n--- console tail ---\n{result.tail}"
    print(f"{disk.name} on {firmware}: /{expect}/ after {result.seconds:.1f} s")
    return result


@pytest.fixture(scope="module")
def systemd_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """debian-systemd without /etc/localtime, as images with no time zone set have it:
    on the first boot that the "uninitialized" machine-id makes, systemd-firstboot would
    ask for one on the console and wait for a key (no login: until someone presses one)."""
    skip_unless_buildable("debian-systemd")
    work = tmp_path_factory.mktemp("systemd")
    base = debian_systemd_fixture().rootfs_tar.read_bytes()
    layout = write_layout(work / "img", [base, [whiteout("etc/localtime")]], compression="none")
    out = work / "disk.img"
    build(f"oci:{layout.path}:latest", out, "--root-password", PASSWORD)
    return out


@pytest.fixture(scope="module")
def app_disks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The busybox-app image with a baked workload, built twice."""
    directory = tmp_path_factory.mktemp("app")
    disks = (directory / "app.img", directory / "again.img")
    for disk in disks:
        build(source(busybox_app_fixture()), disk, "--", "sh", "-c", APP_SCRIPT)
    return disks


def boot_files(root: Path) -> list[str]:
    listing = debugfs(root, "ls -p /boot").decode()
    names = (line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6)
    return sorted(name for name in names if name not in (".", ".."))


def kernel_version(root: Path) -> str:
    (kernel,) = (name for name in boot_files(root) if name.startswith("vmlinuz-"))
    return kernel.removeprefix("vmlinuz-")


def test_systemd_image_gets_bookworms_kernel_its_modules_and_our_initramfs(
    systemd_disk: Path, tmp_path: Path
) -> None:
    root = part(systemd_disk, ROOT_PARTITION, tmp_path / "root.ext4")
    e2fsck_clean(root)
    version = kernel_version(root)
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", version), version  # bookworm's, not stable's
    # the package's files (config, System.map) beside ours, and GRUB's
    expected = {f"initrd.img-{version}", f"vmlinuz-{version}", f"config-{version}", "grub"}
    assert expected <= set(boot_files(root))
    modules = f"/lib/modules/{version}"
    for path in (f"{modules}/modules.dep.bin", f"{modules}/kernel/fs/ext4/ext4.ko"):
        stat = debugfs(root, f"stat {path}").decode()
        assert "Type: regular" in stat, (path, stat)
    # kmod's index magic (libkmod-index.c: INDEX_MAGIC 0xB007F457, big-endian)
    assert debugfs(root, f"cat {modules}/modules.dep.bin")[:4] == bytes.fromhex("b007f457")


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_systemd_image_with_injected_kernel_boots_to_login(
    systemd_disk: Path, firmware: str
) -> None:
    result = assert_boots(systemd_disk, "login:", firmware)
    assert "login:" in result.tail


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_app_disk_runs_the_baked_workload_on_the_serial_console(
    app_disks: tuple[Path, Path], firmware: str
) -> None:
    result = assert_boots(app_disks[0], r"marker-42", firmware)
    assert "marker-$((6*7))" not in result.tail  # the shell's output, not an echo of argv


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_two_builds_of_an_app_disk_are_byte_identical(
    app_disks: tuple[Path, Path], tmp_path: Path
) -> None:
    first, again = app_disks
    assert sha256_file(first) == sha256_file(again)
    initrds = []
    for n, disk in enumerate(app_disks):
        root = part(disk, ROOT_PARTITION, tmp_path / f"root{n}.ext4")
        version = kernel_version(root)
        initrds.append(debugfs(root, f"cat /boot/initrd.img-{version}"))
    assert initrds[0] == initrds[1]
    assert len(initrds[0]) > 1 << 20  # busybox, the virtio and ext4 modules, the init
