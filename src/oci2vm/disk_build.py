"""A bootable disk: partition table, BIOS boot partition, ESP, root ext4, GRUB for BIOS
and UEFI, then the output format.

Layout (GPT, --boot hybrid): 1 MiB BIOS boot partition for GRUB's core.img, an ESP (FAT)
with \\EFI\\BOOT\\BOOTX64.EFI, and the root partition typed per the Discoverable Partitions
Specification. With --table mbr, core.img lives in the gap before the first partition.
Every offset is fixed before the root filesystem streams into place; the tables, the ESP
and the boot code are written once it is complete.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from oci2vm.boot import grub
from oci2vm.build import Identity, RootFs, atomic_output, data_size_hint, write_rootfs
from oci2vm.config import BootMode, Config, OutputFormat, PartitionTable
from oci2vm.disk import gpt, mbr
from oci2vm.errors import Oci2vmError
from oci2vm.fs import fat
from oci2vm.fs.ext4 import required_size
from oci2vm.image.model import Image
from oci2vm.inspect import blob_store
from oci2vm.prepare.system import (
    SystemOptions,
    check_hostname,
    hostname_from,
    prepare_system,
    read_ssh_keys,
)
from oci2vm.report import Reporter
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Tree
from oci2vm.tree.osinfo import describe
from oci2vm.util import tools

MIB = 1 << 20
SECTOR = 512
BIOS_BOOT_SIZE = MIB
GPT_TAIL = gpt.TAIL_SECTORS * SECTOR
ESP_LABEL = "ESP"


@dataclass(frozen=True, slots=True)
class Plan:
    """Where everything goes, decided before any byte is written."""

    table: PartitionTable
    bios: bool
    uefi: bool
    esp_size: int  # 0 without UEFI
    root_offset: int
    root_size: int | None  # None: as the ext4 writer decides

    def specs(self, root_size: int) -> list[gpt.PartitionSpec]:
        specs = []
        if self.bios:
            specs.append(gpt.PartitionSpec(gpt.BIOS_BOOT, "BIOS boot", BIOS_BOOT_SIZE))
        if self.uefi:
            specs.append(gpt.PartitionSpec(gpt.ESP, "EFI System Partition", self.esp_size))
        specs.append(gpt.PartitionSpec(gpt.ROOT_X86_64, "root", root_size))
        return specs


def plan(config: Config, esp_size: int, root_need: int = MIB) -> Plan:
    """Place the partitions; `root_need` is the least the root filesystem can live in."""
    bios = config.boot in (BootMode.HYBRID, BootMode.BIOS)
    uefi = config.boot in (BootMode.HYBRID, BootMode.UEFI)
    if config.table is PartitionTable.MBR:
        # core.img in the gap before the first partition (LBA 1 to 1 MiB).
        offset = MIB + (esp_size if uefi else 0)
        tail = 0
    else:
        offset = MIB + (BIOS_BOOT_SIZE if bios else 0) + (esp_size if uefi else 0)
        tail = GPT_TAIL
    root_size = None
    if config.size is not None:
        # --size is the disk's size, in whole MiB (never more than asked): the root
        # partition takes what the rest leaves, in whole MiB, with room for the backup GPT.
        root_size = (config.size // MIB * MIB - offset - tail) // MIB * MIB
        if root_size < root_need:
            need = -(-(offset + -(-root_need // MIB) * MIB + tail) // MIB)
            raise Oci2vmError(
                f"--size {config.size} bytes is too small for this disk: it needs at least "
                f"{need} MiB; pass a larger --size or leave it out"
            )
    return Plan(config.table, bios, uefi, esp_size if uefi else 0, offset, root_size)


def build_disk(
    config: Config, fmt: OutputFormat, image: Image, identity: Identity, reporter: Reporter
) -> dict[str, Any]:
    assert config.output is not None
    fs_uuid = str(identity.fs_uuid)
    uefi = config.boot in (BootMode.HYBRID, BootMode.UEFI)
    bios = config.boot in (BootMode.HYBRID, BootMode.BIOS)
    if config.compress and fmt is not OutputFormat.QCOW2:
        raise Oci2vmError("--compress is only for qcow2 output")
    table: Literal["gpt", "mbr"] = "mbr" if config.table is PartitionTable.MBR else "gpt"
    core = grub.build_bios_core(fs_uuid, table) if bios else b""
    efi = grub.build_efi(fs_uuid) if uefi else b""
    esp_files = {"EFI/BOOT/BOOTX64.EFI": efi} if uefi else {}
    # The root filesystem's own minimum, so that a small --size names the disk's minimum
    # rather than the root partition's.
    root_need = required_size(data_size_hint(image), 0)
    layout_plan = plan(config, fat.fat_size_for(esp_files) if uefi else 0, root_need)
    hostname = check_hostname(config.hostname) if config.hostname else hostname_from(image.name)
    ssh_keys = read_ssh_keys(config.ssh_keys)
    notes: list[str] = []

    def prepare(image: Image, tree: Tree, ident: Identity) -> None:
        info = describe(tree)
        if not info.kernels:
            raise Oci2vmError(
                f"{image.source}: the image has no kernel (looked for /boot/vmlinuz-*, "
                "/lib/modules/*/vmlinuz, /vmlinuz): install one in the image, e.g. "
                "linux-image-amd64 on Debian"
            )
        if info.init == "none":
            notes.append("no init system found (/sbin/init): the kernel will have nothing to run")
        edit = TreeEditor(tree, ident.fs_time)
        options = SystemOptions(fs_uuid, hostname, config.root_password, ssh_keys, ident.digest)
        notes.extend(prepare_system(edit, info, options))
        edit.mkdir("/boot")
        edit.mkdir("/boot/grub")
        entries = [grub.BootEntry(k.version, k.path, k.initrd) for k in info.kernels]
        cfg = grub.grub_cfg(entries, fs_uuid, read_only=False)
        edit.write("/boot/grub/grub.cfg", cfg.encode(), mode=0o644, uid=0, gid=0)

    with atomic_output(config.output) as final:
        raw_path = final if fmt is OutputFormat.RAW else _scratch(final)
        try:
            with open(raw_path, "r+b") as disk:
                rootfs = write_rootfs(
                    image,
                    disk,
                    offset=layout_plan.root_offset,
                    size=layout_plan.root_size,
                    identity=identity,
                    reporter=reporter,
                    prepare=prepare,
                    store=blob_store(config),
                )
                disk_size = _finish_disk(disk, layout_plan, rootfs, identity, core, esp_files)
            if fmt is not OutputFormat.RAW:
                convert(raw_path, final, fmt, compress=config.compress)
        finally:
            if raw_path != final:
                raw_path.unlink(missing_ok=True)
    for note in notes:
        reporter.warn(note)
    return {
        "output": str(config.output),
        "format": fmt.value,
        "image_id": image.config_digest,
        "manifest_digest": image.manifest_digest,
        "source_digest": identity.digest,
        "disk_size": disk_size,
        "table": layout_plan.table.value,
        "boot": config.boot.value,
        "root": {
            "type": "ext4",
            "uuid": fs_uuid,
            "offset": layout_plan.root_offset,
            "size": rootfs.ext4.size,
            "free_blocks": rootfs.ext4.free_blocks,
            "inodes": rootfs.ext4.inodes_count,
        },
        "kernels": [k.version for k in describe(rootfs.tree).kernels],
        "hostname": hostname,
        "entries": rootfs.tree.entries,
        "notes": notes,
    }


def _scratch(final: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".raw", dir=final.parent)
    os.close(fd)
    return Path(name)


def _finish_disk(
    disk: Any,
    layout_plan: Plan,
    rootfs: RootFs,
    identity: Identity,
    core: bytes,
    esp_files: dict[str, bytes],
) -> int:
    seed = identity.digest.encode()
    root_size = layout_plan.root_size or rootfs.ext4.size
    if layout_plan.table is PartitionTable.GPT:
        layout = gpt.layout(layout_plan.specs(root_size), seed=seed)
        root = layout.partitions[-1]
        if root.first_lba * SECTOR != layout_plan.root_offset:
            raise AssertionError("GPT layout disagrees with the planned root offset")
        disk_size = layout.disk_size
        disk.truncate(disk_size)
        gpt.write_gpt(disk, disk_size, layout.partitions, disk_guid=layout.disk_guid)
        if layout_plan.uefi:
            esp = layout.partitions[1 if layout_plan.bios else 0]
            _write_esp(disk, esp.first_lba, esp.last_lba, esp_files, identity)
        if layout_plan.bios:
            grub.install_bios(disk, core, layout.partitions[0].first_lba)
        return disk_size
    sizes: list[int | None] = []
    if layout_plan.uefi:
        sizes.append(layout_plan.esp_size)
    sizes.append(root_size)
    disk_size, extents = mbr.place_partitions(sizes)
    disk.truncate(disk_size)
    partitions = []
    if layout_plan.uefi:
        first, last = extents[0]
        partitions.append(mbr.MbrPartition(mbr.TYPE_ESP, first, last - first + 1))
        _write_esp(disk, first, last, esp_files, identity)
    first, last = extents[-1]
    if first * SECTOR != layout_plan.root_offset:
        raise AssertionError("MBR layout disagrees with the planned root offset")
    partitions.append(mbr.MbrPartition(mbr.TYPE_LINUX, first, last - first + 1, bootable=True))
    mbr.write_mbr(disk, partitions, disk_signature=mbr.disk_signature_from_seed(seed))
    if layout_plan.bios:
        grub.install_bios(disk, core, 1)
    return disk_size


def _write_esp(
    disk: Any, first: int, last: int, files: dict[str, bytes], identity: Identity
) -> None:
    fat.write_fat(
        disk,
        first * SECTOR,
        (last - first + 1) * SECTOR,
        files,
        volume_id=identity.derive("esp").int & 0xFFFFFFFF,
        label=ESP_LABEL,
        mtime=identity.fs_time,
    )


QEMU_IMG_FORMATS = {
    OutputFormat.QCOW2: "qcow2",
    OutputFormat.VMDK: "vmdk",
    OutputFormat.VDI: "vdi",
    OutputFormat.VHDX: "vhdx",
}


def convert(raw: Path, out: Path, fmt: OutputFormat, *, compress: bool = False) -> None:
    """Convert a raw disk with qemu-img (which skips zero ranges, keeping it sparse)."""
    argv: list[str | Path] = ["qemu-img", "convert", "-q", "-f", "raw", "-O", QEMU_IMG_FORMATS[fmt]]
    if compress:
        argv.append("-c")
    if fmt is OutputFormat.VMDK:
        argv += ["-o", "subformat=streamOptimized" if compress else "subformat=monolithicSparse"]
    tools.run([*argv, raw, out])
