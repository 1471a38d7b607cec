"""The uncompressed kernel inside a bzImage, for QEMU's PVH direct boot.

QEMU boots an ELF kernel that carries a PVH entry point (the Xen ELF note
XEN_ELFNOTE_PHYS32_ENTRY, type 18; kernels built with CONFIG_PVH, as Debian's are)
straight into 32-bit protected mode: no firmware, no real-mode setup and, above all, no
decompressor, which under emulation (TCG) takes seconds for an xz-compressed kernel.
The payload's place comes from the boot protocol's header (the kernel's
Documentation/arch/x86/boot.rst: setup_sects at 0x1F1, "HdrS" at 0x202, payload_offset and
payload_length at 0x248 and 0x24C, the payload starting after the setup sectors).
"""

from __future__ import annotations

import gzip
import lzma
import struct

import zstandard

from oci2vm.errors import Oci2vmError

MAX_VMLINUX = 256 << 20  # decompressed; Debian's is ~65 MB
ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


def _decompress(payload: bytes) -> bytes:
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload, MAX_VMLINUX)
        if payload.startswith(b"\x1f\x8b"):
            return gzip.decompress(payload)[:MAX_VMLINUX]
        if payload.startswith(b"\x28\xb5\x2f\xfd"):
            reader = zstandard.ZstdDecompressor().stream_reader(payload)
            return reader.read(MAX_VMLINUX)
    except (lzma.LZMAError, OSError, EOFError, zstandard.ZstdError) as e:
        raise Oci2vmError(f"the kernel's payload does not decompress: {e}") from e
    raise Oci2vmError("the kernel's payload is compressed in a way not read (xz, gzip, zstd are)")


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF file has the PVH entry note."""
    if not elf.startswith(ELF_MAGIC) or len(elf) < 64 or elf[4] != 2 or elf[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        header = phoff + index * phentsize
        if header + 56 > len(elf):
            return False
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", elf, header)
        if kind == PT_NOTE and _notes_have_pvh(elf[offset : offset + size]):
            return True
    return False


def _notes_have_pvh(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        name_size, desc_size, kind = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + name_size].rstrip(b"\0")
        if name == b"Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        pos += 12 + (name_size + 3) // 4 * 4 + (desc_size + 3) // 4 * 4
    return False


def pvh_kernel(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside `bzimage` if QEMU can boot it by PVH, else None (then boot
    the bzImage itself)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    setup_sectors = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    if not length or start + length > len(bzimage):
        return None
    elf = _decompress(bzimage[start : start + length])
    return elf if has_pvh_entry(elf) else None
