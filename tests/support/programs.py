"""What the tests need from the host, and which Debian package provides it.

`@requires("e2fsck", "debugfs")` marks a test (or, as pytestmark, a module) that needs
those programs; tests/conftest.py skips it with "needs e2fsck (apt-get install
e2fsprogs)" when one is missing, and fails it instead when the CI environment variable is
set, so that a missing install step cannot hide behind a skip. A requirement is a program
on PATH (or in /usr/sbin, /sbin) or one of the FILES below.

The table is the tests' own: the product's oci2vm.util.tools.PACKAGES names only what
the product runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.boot import grub

# program -> Debian package that ships it
PACKAGES: dict[str, str] = {
    "blkid": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "runuser": "util-linux",
    "useradd": "passwd",
    "tar": "tar",
    "e2fsck": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "mke2fs": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "sfdisk": "fdisk",
    "sgdisk": "gdisk",
    "fsck.vfat": "dosfstools",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mmd": "mtools",
    "mtype": "mtools",
    "grub-mkimage": "grub-common",
    "grub-fstest": "grub-common",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "umoci": "umoci",
    "skopeo": "skopeo",
    "docker-registry": "docker-registry",
    "htpasswd": "apache2-utils",
    "debootstrap": "debootstrap",
    "podman": "podman",
    "gpg": "gpg",
    "gpgv": "gpgv",
    "depmod": "kmod",
    "cpio": "cpio",
    "xz": "xz-utils",
    "dpkg-deb": "dpkg",
    "busybox": "busybox",
    "sh": "dash",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ssh-keyscan": "openssh-client",
}

# requirement name -> (file that must exist, Debian package that ships it)
FILES: dict[str, tuple[Path, str]] = {
    "grub-pc-modules": (grub.GRUB_LIB_DIR / "i386-pc" / "moddep.lst", "grub-pc-bin"),
    "grub-efi-modules": (grub.GRUB_LIB_DIR / "x86_64-efi" / "moddep.lst", "grub-efi-amd64-bin"),
    "ovmf-code": (Arch.AMD64.facts.efi_code, "ovmf"),
    "ovmf-vars": (Arch.AMD64.facts.efi_vars, "ovmf"),
}

# What building and reading back a bootable disk takes (tests/readback/test_disk_*.py).
DISK_TOOLS = (
    "grub-pc-modules", "grub-efi-modules", "grub-mkimage", "sfdisk", "sgdisk", "e2fsck",
    "debugfs", "dumpe2fs", "blkid", "fsck.vfat", "mdir", "mcopy", "mtype", "qemu-img",
)  # fmt: skip


def have(need: str) -> bool:
    if need in FILES:
        return FILES[need][0].is_file()
    return bool(shutil.which(need) or shutil.which(need, path="/usr/sbin:/sbin:/usr/bin:/bin"))


def describe(need: str) -> str:
    """'e2fsck (apt-get install e2fsprogs)'; a file requirement names its path."""
    if need in FILES:
        path, package = FILES[need]
        return f"{path} (apt-get install {package})"
    if need not in PACKAGES:
        raise KeyError(f"{need!r} is not in tests/support/programs.py: add its Debian package")
    return f"{need} (apt-get install {PACKAGES[need]})"


def missing(needs: tuple[str, ...] | list[str]) -> str | None:
    """'needs X (apt-get install P), Y (...)' for what is missing, or None."""
    absent = [describe(n) for n in dict.fromkeys(needs) if not have(n)]
    return "needs " + ", ".join(absent) if absent else None


def strict() -> bool:
    """Under CI a missing requirement is a failure, not a skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need(*needs: str, at_item: bool = False) -> None:
    """Skip the running test unless the programs or files are here (fail instead under
    CI): what the requires marker does, for fixtures and helpers to call. at_item:
    report the skip at the test, as pytest's own skip marks do (for the marker's hook)."""
    problem = missing(needs)
    if problem is not None:
        if strict():
            pytest.fail(f"{problem} (CI is set: a missing requirement fails)", pytrace=False)
        raise pytest.skip.Exception(problem, _use_item_location=at_item)


def requires(*needs: str) -> pytest.MarkDecorator:
    """Mark a test as needing these programs (or FILES entries)."""
    for need in needs:
        describe(need)  # an unknown name is a mistake in the test, found at import
    return pytest.mark.requires(*needs)
