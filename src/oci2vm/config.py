"""Every option of every command, in one frozen dataclass; defaults live here, once."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.image.model import Platform


class OutputFormat(StrEnum):
    EXT4 = "ext4"
    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VDI = "vdi"
    VHDX = "vhdx"


# File name extensions that name a format.
EXTENSIONS: dict[str, OutputFormat] = {
    ".ext4": OutputFormat.EXT4,
    ".img": OutputFormat.RAW,
    ".raw": OutputFormat.RAW,
    ".qcow2": OutputFormat.QCOW2,
    ".vmdk": OutputFormat.VMDK,
    ".vdi": OutputFormat.VDI,
    ".vhdx": OutputFormat.VHDX,
}


class BootMode(StrEnum):
    HYBRID = "hybrid"  # BIOS and UEFI from one disk
    BIOS = "bios"
    UEFI = "uefi"


class PartitionTable(StrEnum):
    GPT = "gpt"
    MBR = "mbr"


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class Bus(StrEnum):
    VIRTIO = "virtio"
    SATA = "sata"
    IDE = "ide"
    NVME = "nvme"


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True, slots=True)
class Config:
    source: str = ""
    output: Path | None = None
    format: OutputFormat | None = None  # None: from the output's extension
    platform: Platform = field(default_factory=Platform)
    cache_dir: Path | None = None
    creds: str | None = None
    auth_file: Path | None = None
    tls_verify: bool = True  # False covers the source's registry host only
    insecure_hosts: tuple[str, ...] = ()  # more hosts: TLS not verified, plain HTTP allowed
    network_timeout: float = 60.0  # seconds a registry response may go without progress
    # the filesystem and disk
    size: int | None = None  # bytes; None = content + headroom
    fs_uuid: str | None = None  # None = derived from the image digest
    boot: BootMode = BootMode.HYBRID
    table: PartitionTable = PartitionTable.GPT
    compress: bool = False
    # the system inside
    hostname: str | None = None  # None = from the image name
    root_password: str | None = None
    ssh_keys: tuple[Path, ...] = ()
    # running
    firmware: Firmware = Firmware.BIOS
    memory_mib: int = 1024
    cpus: int = 2
    accel: Accel = Accel.AUTO
    bus: Bus = Bus.VIRTIO
    expect: str = r"login:"
    timeout: float = 300.0
    # reporting
    quiet: bool = False
    json: bool = False

    def output_format(self) -> OutputFormat:
        if self.format is not None:
            return self.format
        if self.output is None:
            return OutputFormat.RAW
        fmt = EXTENSIONS.get(self.output.suffix.lower())
        if fmt is None:
            raise Oci2vmError(
                f"cannot tell the format of {self.output.name!r} from its extension: "
                "use --format " + "|".join(f.value for f in OutputFormat)
            )
        return fmt
