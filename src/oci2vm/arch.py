"""Every per-architecture fact, in one place: nothing else in oci2vm names an architecture.

An `Arch` is a CPU architecture a built disk can boot on. Its facts come from the specs and
packages that define them: OCI's image-index platform names (GOARCH values), GRUB's platform
directories under /usr/lib/grub and their Debian packages, the UEFI specification's removable
media boot path (UEFI 2.10 §3.5.1.1: BOOTX64.EFI, BOOTAA64.EFI), the Discoverable Partitions
Specification's root partition type GUIDs, QEMU's system emulators and machine types, the
kernel's name for the first serial port, and Debian's kernel metapackages.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from oci2vm.errors import Oci2vmError


@dataclass(frozen=True, slots=True)
class ArchFacts:
    oci: str  # the OCI platform's architecture (GOARCH)
    aliases: tuple[str, ...]  # other spellings users and `uname -m` give
    grub_bios: str | None  # GRUB's BIOS platform, if the architecture has a BIOS
    grub_efi: str  # GRUB's UEFI platform
    grub_packages: tuple[tuple[str, str], ...]  # GRUB platform -> Debian package
    efi_boot_file: str  # the removable-media boot loader's name in \EFI\BOOT
    root_partition_type: uuid.UUID  # DPS: "Root Partition" for this architecture
    qemu_binary: str
    qemu_package: str
    qemu_machine: str
    efi_code: Path  # UEFI firmware code and its variable store template (Debian's paths)
    efi_vars: Path
    efi_package: str
    serial_console: str  # the kernel's name for the first serial port
    debian: str  # Debian's name for the architecture (dpkg --print-architecture)
    debian_kernel: str  # Debian's kernel metapackage


class Arch(StrEnum):
    """A CPU architecture, named as OCI platforms name it."""

    AMD64 = "amd64"
    ARM64 = "arm64"

    @property
    def facts(self) -> ArchFacts:
        return _FACTS[self]

    @classmethod
    def default(cls) -> Arch:
        return cls.AMD64

    @classmethod
    def from_name(cls, name: str) -> Arch:
        """An OCI platform architecture or a common alias (x86_64, aarch64)."""
        lowered = name.strip().lower()
        for arch in cls:
            if lowered == arch.value or lowered in arch.facts.aliases:
                return arch
        known = ", ".join(a.value for a in cls)
        raise Oci2vmError(f"unsupported architecture {name!r}: oci2vm builds disks for {known}")

    @property
    def grub_platforms(self) -> tuple[str, ...]:
        """GRUB platforms this architecture boots with: BIOS (if any) first, then UEFI."""
        f = self.facts
        return (f.grub_bios, f.grub_efi) if f.grub_bios else (f.grub_efi,)

    def grub_package(self, platform: str) -> str:
        return dict(self.facts.grub_packages)[platform]

    @property
    def efi_boot_path(self) -> str:
        """Where UEFI firmware looks for a boot loader on removable media, on the ESP."""
        return f"EFI/BOOT/{self.facts.efi_boot_file}"

    @property
    def has_bios(self) -> bool:
        return self.facts.grub_bios is not None


_FACTS: dict[Arch, ArchFacts] = {
    Arch.AMD64: ArchFacts(
        oci="amd64",
        aliases=("x86_64", "x86-64", "x64"),
        grub_bios="i386-pc",
        grub_efi="x86_64-efi",
        grub_packages=(("i386-pc", "grub-pc-bin"), ("x86_64-efi", "grub-efi-amd64-bin")),
        efi_boot_file="BOOTX64.EFI",
        root_partition_type=uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
        qemu_binary="qemu-system-x86_64",
        qemu_package="qemu-system-x86",
        qemu_machine="pc",
        efi_code=Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
        efi_vars=Path("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        efi_package="ovmf",
        serial_console="ttyS0",
        debian="amd64",
        debian_kernel="linux-image-amd64",
    ),
    Arch.ARM64: ArchFacts(
        oci="arm64",
        aliases=("aarch64", "arm64/v8"),
        grub_bios=None,
        grub_efi="arm64-efi",
        grub_packages=(("arm64-efi", "grub-efi-arm64-bin"),),
        efi_boot_file="BOOTAA64.EFI",
        root_partition_type=uuid.UUID("b921b045-1df0-41c3-af44-4c6f280d3fae"),
        qemu_binary="qemu-system-aarch64",
        qemu_package="qemu-system-arm",
        qemu_machine="virt",
        efi_code=Path("/usr/share/AAVMF/AAVMF_CODE.fd"),
        efi_vars=Path("/usr/share/AAVMF/AAVMF_VARS.fd"),
        efi_package="qemu-efi-aarch64",
        serial_console="ttyAMA0",
        debian="arm64",
        debian_kernel="linux-image-arm64",
    ),
}
