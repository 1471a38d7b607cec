"""Install GRUB 2 into a disk image file: BIOS (boot.img + core.img) and UEFI (the EFI
application the firmware finds in \\EFI\\BOOT), for the platforms an Arch names.

grub-install cannot serve: it needs root, a block device and the target mounted (it runs
grub-probe on the live filesystem). The images themselves need none of that: grub-mkimage
builds core.img and the EFI application as an ordinary user, and the rest is a few byte patches that
grub-bios-setup (util/setup.c) makes. The facts below are GRUB 2.06's, from
grub-core/boot/i386/pc/boot.S, diskboot.S, include/grub/i386/pc/boot.h, include/grub/offsets.h
and util/setup.c:

- boot.img goes to disk sector 0; only its code, bytes 0..0x1B7, is ours. From 0x1B8
  (GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC) on, the disk signature and the partition table stay.
  setup.c also keeps a DOS BPB found at 0x03..0x59; a partitioned disk has none, so boot.img's
  zeros are right.
- boot.img reads core.img's first sector from the u64 LE `kernel_sector` at 0x5C; the byte at
  0x64 is `boot_drive` (0xFF: use the drive the BIOS passed in DL); the 2-byte jump at 0x66
  (`boot_drive_check`) is turned into two NOPs for hard disks, a workaround for BIOSes that
  pass a wrong drive number.
- core.img's first sector is diskboot.img; it loads the rest from blocklists that grow down
  from the end of that sector, 12 bytes each (u64 start, u16 sector count, u16 segment). The
  first is at 0x1F4: start = LBA of core's second sector, count = sectors - 1, segment 0x820
  (GRUB_BOOT_MACHINE_KERNEL_SEG 0x800 + 512 / 16); a zero entry before it (0x1E8) ends the list.
- core.img is loaded at GRUB_KERNEL_I386_PC_LINK_ADDR 0x9000 and must end below 0x78000:
  at most 888 sectors.
- Reed-Solomon redundancy is optional (grub-install --no-rs-codes); we leave the redundancy
  field (core offset 0x210) at 0, so the whole core is read as is.
"""

from __future__ import annotations

import re
import struct
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from oci2vm.arch import Arch
from oci2vm.disk import gpt, mbr
from oci2vm.errors import Oci2vmError
from oci2vm.tree.osinfo import version_key
from oci2vm.util import tools
from oci2vm.util.units import SECTOR as SECTOR_SIZE
from oci2vm.util.units import ceil_div

GRUB_LIB_DIR = Path("/usr/lib/grub")  # one directory of modules per GRUB platform

# boot.img (include/grub/i386/pc/boot.h)
BOOT_MACHINE_KERNEL_SECTOR = 0x5C  # u64 LE: LBA of core.img's first sector
BOOT_MACHINE_BOOT_DRIVE = 0x64  # u8: 0xFF = use the BIOS boot drive from DL
BOOT_MACHINE_DRIVE_CHECK = 0x66  # 2-byte jmp, NOPed for hard disks
BOOT_MACHINE_WINDOWS_NT_MAGIC = 0x1B8  # disk signature, then the partition table
BOOT_MACHINE_PART_START = 0x1BE
BOOT_MACHINE_PART_END = 0x1FE  # the 0x55AA boot signature
BOOT_SIGNATURE = b"\x55\xaa"
NOP_NOP = b"\x90\x90"

# diskboot.img, the first sector of core.img (diskboot.S)
BLOCKLIST = struct.Struct("<QHH")  # start LBA, sector count, load segment
assert BLOCKLIST.size == 12  # diskboot.S: blocklist entries are 12 bytes
BLOCKLIST_FIRST = SECTOR_SIZE - BLOCKLIST.size  # 0x1F4
BLOCKLIST_TERMINATOR = BLOCKLIST_FIRST - BLOCKLIST.size  # 0x1E8
CORE_LOAD_SEGMENT = 0x800 + SECTOR_SIZE // 16  # where core's second sector is loaded

# kernel.img, core.img's second sector on (include/grub/offsets.h)
KERNEL_I386_PC_LINK_ADDR = 0x9000
CORE_MEMORY_END = 0x78000  # setup.c: core must fit below this address
MAX_CORE_SECTORS = (CORE_MEMORY_END - KERNEL_I386_PC_LINK_ADDR) // SECTOR_SIZE  # 888
KERNEL_I386_PC_REED_SOLOMON_REDUNDANCY = 0x10
KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH = 0x14

# Every module core needs, embedded so no module directory has to exist on the disk.
COMMON_MODULES = (
    "ext2",
    "search",
    "search_fs_uuid",
    "normal",
    "linux",
    "echo",
    "serial",
    "terminal",
    "test",
    "configfile",
    "halt",
    "reboot",
    "sleep",
    "ls",
    "cat",
)
# linux16: see grub_cfg().
BIOS_MODULES = ("biosdisk", "linux16")
BIOS_TABLE_MODULES = {"gpt": "part_gpt", "mbr": "part_msdos"}
EFI_MODULES = ("part_gpt", "part_msdos", "fat", "efi_gop", "all_video")

DEFAULT_GRUB_DIR = "/boot/grub"


@dataclass(frozen=True, slots=True)
class BootEntry:
    """One kernel to boot; paths as GRUB sees them on the filesystem holding grub.cfg."""

    version: str
    kernel: str
    initrd: str | None = None
    title: str | None = None  # the menu's name for it; "Linux VERSION" when None

    @property
    def menu_title(self) -> str:
        return self.title if self.title is not None else f"Linux {self.version}"


# -- building images -----------------------------------------------------------------------


def module_dir(platform: str, arch: Arch = Arch.AMD64) -> Path:
    """The directory of GRUB's modules for `platform`, or an error naming the package."""
    directory = GRUB_LIB_DIR / platform
    if not (directory / "moddep.lst").is_file():
        package = arch.grub_package(platform)
        raise Oci2vmError(
            f"GRUB {platform} modules not found in {directory}: "
            f"install them with 'apt-get install {package}'"
        )
    return directory


def early_config(fs_uuid: str, grub_dir: str = DEFAULT_GRUB_DIR) -> str:
    """The config embedded in core: find the filesystem holding grub_dir by its UUID.

    GRUB then enters normal mode, which reads $prefix/grub.cfg. The embedded config runs
    under the rescue parser (kern/main.c, kern/parser.c), so it holds simple commands only.
    """
    fs_uuid = _canonical_uuid(fs_uuid)
    if not grub_dir.startswith("/") or not _SAFE_WORD.fullmatch(grub_dir):
        raise Oci2vmError(f"GRUB directory {grub_dir!r} must be an absolute plain path")
    return (
        f"search --no-floppy --fs-uuid --set=root {fs_uuid}\n"
        f"set prefix=($root){grub_dir.rstrip('/') or '/'}\n"
    )


def build_bios_core(
    fs_uuid: str,
    table: str,
    *,
    arch: Arch = Arch.AMD64,
    grub_dir: str = DEFAULT_GRUB_DIR,
) -> bytes:
    """Build core.img for BIOS boot from a disk with a `table` ("gpt" or "mbr") partition
    table."""
    if table not in BIOS_TABLE_MODULES:
        raise ValueError(f"table must be 'gpt' or 'mbr', not {table!r}")
    platform = arch.facts.grub_bios
    if platform is None:
        raise Oci2vmError(f"{arch} machines have no BIOS: build the disk with --boot uefi")
    modules = (*BIOS_MODULES, BIOS_TABLE_MODULES[table], *COMMON_MODULES)
    core = _mkimage(arch, platform, modules, early_config(fs_uuid, grub_dir), grub_dir)
    if len(core) < 2 * SECTOR_SIZE:
        raise Oci2vmError(f"grub-mkimage wrote a core.img of only {len(core)} bytes")
    return core


def build_efi(fs_uuid: str, *, arch: Arch = Arch.AMD64, grub_dir: str = DEFAULT_GRUB_DIR) -> bytes:
    """Build the GRUB EFI application, to be stored on the ESP at arch.efi_boot_path."""
    modules = (*EFI_MODULES, *COMMON_MODULES)
    platform = arch.facts.grub_efi
    image = _mkimage(arch, platform, modules, early_config(fs_uuid, grub_dir), grub_dir)
    if image[:2] != b"MZ":
        raise Oci2vmError(f"grub-mkimage did not write a PE image for {platform}")
    return image


def _mkimage(
    arch: Arch,
    platform: str,
    modules: Sequence[str],
    config: str,
    grub_dir: str,
) -> bytes:
    directory = module_dir(platform, arch)
    tools.find_program("grub-mkimage", "grub-common")
    with tempfile.TemporaryDirectory(prefix="oci2vm-grub-") as tmp:
        config_path = Path(tmp, "early.cfg")
        config_path.write_text(config)
        output = Path(tmp, "grub.img")
        tools.run(
            [
                "grub-mkimage",
                "--format",
                platform,
                "--directory",
                directory,
                "--prefix",
                grub_dir,
                "--config",
                config_path,
                "--output",
                output,
                *modules,
            ],
            package="grub-common",
        )
        return output.read_bytes()


# -- BIOS installation ---------------------------------------------------------------------


def boot_image() -> bytes:
    """GRUB's boot.img, the 512-byte first stage."""
    platform = Arch.AMD64.facts.grub_bios
    assert platform is not None
    path = module_dir(platform) / "boot.img"
    boot_img = path.read_bytes()
    if len(boot_img) != SECTOR_SIZE or boot_img[BOOT_MACHINE_PART_END:] != BOOT_SIGNATURE:
        raise Oci2vmError(f"{path} is not a GRUB boot sector")
    return boot_img


def patch_boot_sector(sector0: bytes, boot_img: bytes, core_lba: int) -> bytes:
    """Return sector 0 with boot.img's code in front of the existing partition table."""
    if len(sector0) != SECTOR_SIZE or len(boot_img) != SECTOR_SIZE:
        raise ValueError("sector 0 and boot.img must be 512 bytes")
    sector = bytearray(boot_img[:BOOT_MACHINE_WINDOWS_NT_MAGIC])
    sector += sector0[BOOT_MACHINE_WINDOWS_NT_MAGIC:BOOT_MACHINE_PART_END]
    sector += BOOT_SIGNATURE
    struct.pack_into("<Q", sector, BOOT_MACHINE_KERNEL_SECTOR, core_lba)
    sector[BOOT_MACHINE_BOOT_DRIVE] = 0xFF
    sector[BOOT_MACHINE_DRIVE_CHECK : BOOT_MACHINE_DRIVE_CHECK + 2] = NOP_NOP
    return bytes(sector)


def patch_core(core: bytes, core_lba: int) -> bytes:
    """Return core.img padded to whole sectors, its blocklist pointing at core_lba + 1."""
    sectors = ceil_div(len(core), SECTOR_SIZE)
    if sectors < 2:
        raise ValueError("core.img must span at least two sectors")
    if sectors > MAX_CORE_SECTORS:
        raise Oci2vmError(
            f"GRUB core.img is {sectors} sectors; BIOS GRUB can load at most "
            f"{MAX_CORE_SECTORS}: embed fewer modules"
        )
    no_rs_length = SECTOR_SIZE + KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH
    if core[no_rs_length : no_rs_length + 2] == b"\xff\xff":
        raise Oci2vmError("core.img does not match this GRUB version (no_rs_length 0xFFFF)")
    patched = bytearray(core.ljust(sectors * SECTOR_SIZE, b"\0"))
    BLOCKLIST.pack_into(patched, BLOCKLIST_TERMINATOR, 0, 0, 0)
    BLOCKLIST.pack_into(patched, BLOCKLIST_FIRST, core_lba + 1, sectors - 1, CORE_LOAD_SEGMENT)
    return bytes(patched)


def embedding_space(disk: BinaryIO, core_lba: int) -> int:
    """How many sectors from core_lba on are free for core.img, per the disk's own table.

    GPT: core_lba must be the first sector of a BIOS boot partition; its size is the space.
    MBR: core_lba must lie in the gap before the first partition; the rest of the gap is.
    """
    sector0 = _read_sector(disk, 0)
    if sector0[BOOT_MACHINE_PART_END:] != BOOT_SIGNATURE:
        raise Oci2vmError("sector 0 holds no partition table: write the GPT or MBR first")
    partitions = mbr.read_partitions(sector0)
    if any(ptype == mbr.TYPE_GPT_PROTECTIVE for ptype, _first, _count in partitions):
        return _gpt_bios_boot_space(disk, core_lba)
    if core_lba < 1:
        raise Oci2vmError("core.img cannot go to sector 0")
    following = [first for _type, first, _count in partitions if first >= core_lba]
    inside = [first for _type, first, count in partitions if first < core_lba < first + count]
    if inside:
        raise Oci2vmError(f"sector {core_lba} lies inside the partition at {inside[0]}")
    if not following:
        raise Oci2vmError("the MBR has no partition to bound the gap for core.img")
    return min(following) - core_lba


def _gpt_bios_boot_space(disk: BinaryIO, core_lba: int) -> int:
    try:
        entries = gpt.read_entries(disk)
    except ValueError:
        raise Oci2vmError("the protective MBR is not followed by a GPT header") from None
    for type_guid, first, last in entries:
        if first == core_lba and last >= first:
            if type_guid != gpt.BIOS_BOOT:
                raise Oci2vmError(
                    f"the GPT partition at sector {core_lba} is not a BIOS boot partition "
                    f"(type {gpt.BIOS_BOOT})"
                )
            return last - first + 1
    raise Oci2vmError(
        f"no GPT partition starts at sector {core_lba}: BIOS GRUB on GPT needs a "
        f"BIOS boot partition (type {gpt.BIOS_BOOT}) there"
    )


def install_bios(
    disk: BinaryIO, core: bytes, core_lba: int, *, boot_img: bytes | None = None
) -> None:
    """Write GRUB's boot.img to sector 0 and core.img at core_lba of a partitioned disk.

    `disk` is the whole disk image opened for reading and writing, its partition table
    already written: core_lba is the first sector of a GPT BIOS boot partition, or a sector
    of the MBR gap (normally 1). `boot_img` defaults to the installed GRUB's.
    """
    patched = patch_core(core, core_lba)
    sectors = len(patched) // SECTOR_SIZE
    space = embedding_space(disk, core_lba)
    if sectors > space:
        raise Oci2vmError(
            f"GRUB core.img needs {sectors} sectors but only {space} are free at sector "
            f"{core_lba}: make the BIOS boot partition or the gap before the first "
            f"partition at least {sectors * SECTOR_SIZE // 1024 + 1} KiB"
        )
    sector0 = _read_sector(disk, 0)
    boot = patch_boot_sector(sector0, boot_img or boot_image(), core_lba)
    # Core first, then the sector that points to it, as grub-bios-setup orders the writes.
    disk.seek(core_lba * SECTOR_SIZE)
    disk.write(patched)
    disk.seek(0)
    disk.write(boot)
    disk.flush()


def _read_sector(disk: BinaryIO, lba: int) -> bytes:
    disk.seek(lba * SECTOR_SIZE)
    data = disk.read(SECTOR_SIZE)
    if len(data) != SECTOR_SIZE:
        raise Oci2vmError(f"the disk image ends before sector {lba}")
    return data


# -- grub.cfg ------------------------------------------------------------------------------

_SAFE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def grub_quote(word: str) -> str:
    """Quote one word for GRUB's shell-like script language (single quotes, as in sh)."""
    if _SAFE_WORD.fullmatch(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def grub_cfg(
    kernels: Sequence[BootEntry],
    root_uuid: str,
    *,
    serial_console: str = Arch.AMD64.facts.serial_console,
    cmdline_extra: str = "",
    timeout: int = 1,
    read_only: bool = True,
    show_menu: bool = False,
    first: BootEntry | None = None,
) -> str:
    """One grub.cfg for BIOS and UEFI GRUB: serial and screen consoles, newest kernel first.

    The kernel finds its root filesystem by UUID, which holds whatever the disk's bus
    (sda, vda, nvme0n1). Console output goes to both the screen and the first serial port
    (`serial_console`, the kernel's name for it).

    BIOS GRUB boots with linux16/initrd16, the kernel's 16-bit entry (as syslinux does),
    not its 32-bit `linux`: that loader reserves the kernel's whole init_size (66 MiB for
    Debian 12's) at the preferred address, and when GRUB's heap is in the way, its
    relocator moves all of it byte by byte (`rep movsb`) at boot, seconds under emulation.
    linux16 loads the kernel at 1 MiB where it is, and its setup code asks the BIOS for
    the memory map itself. UEFI GRUB keeps `linux` (the EFI handover).

    `first`, when given, is the default entry, ahead of the kernels (kept in their order):
    paths that change after the build (Debian's /vmlinuz and /initrd.img links, moved by
    the kernel packages installed in the guest). Should it fail to load (a dangling link),
    GRUB's `fallback` list (normal/menu.c takes its numbers in turn) boots the others.
    """
    if not kernels:
        raise Oci2vmError("no kernel to boot: install a kernel package in the image")
    root_uuid = _canonical_uuid(root_uuid)
    ordered = sorted(kernels, key=lambda k: version_key(k.version), reverse=True)
    if first is not None:
        ordered.insert(0, first)
    args = [
        f"root=UUID={root_uuid}",
        "ro" if read_only else "rw",
        "console=tty0",
        f"console={serial_console},115200",
        *cmdline_extra.split(),
    ]
    cmdline = " ".join(grub_quote(arg) for arg in args)
    lines = [
        "# Written by oci2vm; read by BIOS and UEFI GRUB alike.",
        "serial --unit=0 --speed=115200",
        "terminal_input serial console",
        "terminal_output serial console",
        f"set timeout={max(0, int(timeout))}",
        # Hidden by default, Esc during the timeout shows it: drawing it unasked costs
        # seconds under emulation (each character a trapped port write), and OVMF echoes
        # it garbled on the serial port.
        f"set timeout_style={'menu' if show_menu else 'hidden'}",
        "set default=0",
    ]
    if first is not None:
        lines.append(f"set fallback={grub_quote(' '.join(str(n) for n in range(1, len(ordered))))}")
    lines.append("")
    for entry in ordered:
        for path in (entry.kernel, entry.initrd):
            if path is not None:
                check_config_text(path)
        lines.append(f"menuentry {grub_quote(entry.menu_title)} {{")
        for branch, suffix in (('if [ "$grub_platform" = pc ]; then', "16"), ("else", "")):
            lines.append(f"\t{branch}")
            lines.append(f"\t\tlinux{suffix} {grub_quote(entry.kernel)} {cmdline}")
            if entry.initrd is not None:
                lines.append(f"\t\tinitrd{suffix} {grub_quote(entry.initrd)}")
        lines.append("\tfi")
        lines.append("}")
    return "\n".join(lines) + "\n"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_config_text(path: str) -> None:
    """A path grub.cfg can name: UTF-8 text (tree names keep undecodable bytes as
    surrogates) without control characters, which GRUB's script would split or mangle."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise Oci2vmError(
            f"{shown}: its name is not UTF-8, which grub.cfg cannot name: rename it in the image"
        ) from None
    if _CONTROL.search(path):
        raise Oci2vmError(
            f"{path!r}: its name holds control characters, which grub.cfg cannot name: "
            "rename it in the image"
        )


def _canonical_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Oci2vmError(f"{value!r} is not a filesystem UUID") from None
