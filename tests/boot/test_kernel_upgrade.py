"""A kernel upgrade inside the guest (QEMU, TCG): the next boot runs the new kernel.

The debian-systemd fixture (bookworm, no kernel, no initramfs generator) is built with
bookworm's kernel injected and oci2vm's initramfs, which leaves the guest kernel hook in
/etc/kernel (prepare/kernelhook). Trixie's linux-image-6.12 package (newer, .ko.xz
modules) is written into the disk's filesystem with debugfs before the first boot, with
what its maintainer scripts call: kmod (depmod) from bookworm and linux-base (>= 4.12,
linux-update-symlinks and linux-run-hooks) from trixie. In the guest, `dpkg -i` installs
them: the package's postinst moves /vmlinuz and /initrd.img, and the hook builds the new
kernel's initramfs from the old one. The second boot follows grub.cfg's default entry,
the links, and `uname -r` says the new version.

Packages come from the shared fixture store (support.debarchives.fixture_store), verified
through the archive's signed chain."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fixture_images import debian_systemd_fixture
from oci2vm import vm
from oci2vm.arch import Arch
from oci2vm.debian.archive import Archive
from support.debarchives import configured_mirror, fixture_store
from support.disks import SECTOR, cli, sfdisk
from support.programs import requires
from support.runcli import skip_unless_buildable

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.fixture,
    requires("qemu-system-x86_64", "sfdisk", "debugfs", "dpkg-deb"),
]

PASSWORD = "oci2vm-Test-pw"
ROOT_PARTITION = 3  # of the default GPT hybrid disk: BIOS boot, ESP, root
# trixie's linux-image-6.12.117+deb13-amd64, kept in the fixture store
NEW_KERNEL_BLOB = "sha256:ca712d36790184f6ac125ce2b20ea4e2202ae6bb7817b7de268f1f0115ccda73"
INSTALL_TIMEOUT = 2400.0  # dpkg unpacks ~110 MB and depmod reads ~4000 modules, emulated
BOOT_TIMEOUT = 420.0


def build(out: Path) -> dict[str, Any]:
    fx = debian_systemd_fixture()
    result = cli("build", f"oci:{fx.oci_layout}:{fx.tag}", "-o", str(out), "--json",
                 "--cache-dir", str(fixture_store().root), "--mirror", configured_mirror(),
                 "--root-password", PASSWORD, "--size", "2G")  # fmt: skip
    assert result.code == 0, result.err
    report: dict[str, Any] = json.loads(result.out)
    return report


def packages() -> dict[str, Path]:
    """The .deb files to install in the guest, by the name they get there."""
    store = fixture_store()
    kernel = store.get(NEW_KERNEL_BLOB)
    if kernel is None:
        pytest.skip(f"trixie's kernel package ({NEW_KERNEL_BLOB}) is not in the fixture store")
    found = {"linux-image.deb": kernel.path}
    for suite, name in (("bookworm", "kmod"), ("trixie", "linux-base")):
        archive = Archive(store, suite, Arch.AMD64, mirror=configured_mirror())
        found[f"{name}.deb"] = archive.download(archive.package(name)).path
    return found


def write_into_root(disk: Path, files: dict[str, Path]) -> None:
    """Copy host files into /root of the disk's root filesystem, in place (debugfs opens
    the filesystem at its partition's offset: e2fsprogs' unix_io `offset=` option)."""
    offset = sfdisk(disk)["partitions"][ROOT_PARTITION - 1]["start"] * SECTOR
    commands = "".join(f"write {path} /root/{name}\n" for name, path in files.items())
    subprocess.run(["debugfs", "-w", "-f", "-", f"{disk}?offset={offset}"],
                   input=commands.encode(), check=True, capture_output=True)  # fmt: skip


def new_version(deb: Path) -> str:
    package = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], check=True,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    return package.removeprefix("linux-image-")


def login(*steps: tuple[str, str | None]) -> list[tuple[str, str | None]]:
    return [("", "root"), ("Password:", PASSWORD), *steps]


INSTALL = (
    "cd /root && dpkg -i --force-depends kmod.deb linux-base.deb >dpkg.log 2>&1 && "
    "dpkg -i --force-depends linux-image.deb >>dpkg.log 2>&1; echo dpkg-rc=$?; "
    "tail -n 15 dpkg.log; ls -l /vmlinuz /initrd.img /boot; sync; echo synced-$((6*7))"
)


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The disk after a first boot that installed the new kernel; its version."""
    skip_unless_buildable("debian-systemd")
    disk = tmp_path_factory.mktemp("upgrade") / "disk.img"
    build(disk)
    debs = packages()
    version = new_version(debs["linux-image.deb"])
    write_into_root(disk, debs)
    result = vm.check_boot(
        disk, timeout=INSTALL_TIMEOUT, accel="tcg", snapshot=False,
        script=login((r"# ", INSTALL), (r"synced-42", None)),
    )  # fmt: skip
    assert result.ok, f"{result.reason}\n--- console tail ---\n{result.tail}"
    print(result.tail)
    assert "dpkg-rc=0" in result.tail, result.tail
    # the hook's initrd, and the link the package's linux-update-symlinks moved to it
    assert f"oci2vm kernel hook: building /boot/initrd.img-{version}" in result.tail
    assert f"/initrd.img -> boot/initrd.img-{version}" in result.tail
    return disk, version


def test_the_next_boot_runs_the_kernel_installed_in_the_guest(upgraded: tuple[Path, str]) -> None:
    disk, version = upgraded
    result = vm.check_boot(
        disk, timeout=BOOT_TIMEOUT, accel="tcg",
        script=login((r"# ", "uname -r; cat /proc/cmdline; echo up-$((6*7))"), (r"up-42", None)),
    )  # fmt: skip
    assert result.ok, f"{result.reason}\n--- console tail ---\n{result.tail}"
    assert re.search(rf"\n{re.escape(version)}\r?\n", result.tail), result.tail
    assert "BOOT_IMAGE=/vmlinuz " in result.tail  # grub.cfg's entry through the links
