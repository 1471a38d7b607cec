"""Output formats other than raw: the raw disk converted by qemu-img, which skips zero
ranges, so every format stays sparse.

qemu-img stamps VMDK, VDI and VHDX files with identifiers of its own making (random),
which made two builds of the same image differ: settle_identifiers() writes ours in their
place, derived like every other identifier of the disk. Facts from the formats' specs
(VMware's "Virtual Disk Format 5.0", VirtualBox's VDI header as qemu's block/vdi.c reads
it, Microsoft's [MS-VHDX] 2.2), checked against qemu-img 7.2's output."""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import crc32c as _crc

from oci2vm.config import OutputFormat
from oci2vm.image.blobs import ProgressFn
from oci2vm.util import tools

QEMU_IMG_FORMATS = {
    OutputFormat.QCOW2: "qcow2",
    OutputFormat.VMDK: "vmdk",
    OutputFormat.VDI: "vdi",
    OutputFormat.VHDX: "vhdx",
}

Derive = Callable[[str], uuid.UUID]  # Identity.derive: a UUID for a label


def convert(
    raw: Path,
    out: Path,
    fmt: OutputFormat,
    *,
    compress: bool = False,
    advance: ProgressFn | None = None,
) -> None:
    """Convert a raw disk image to `fmt` (qcow2 may be compressed; vmdk then streams);
    `advance` is told the bytes of the disk done, from qemu-img's own meter."""
    argv: list[str | Path] = ["qemu-img", "convert", "-f", "raw", "-O", QEMU_IMG_FORMATS[fmt]]
    if compress:
        argv.append("-c")
    if fmt is OutputFormat.VMDK:
        argv += ["-o", "subformat=streamOptimized" if compress else "subformat=monolithicSparse"]
    if advance is None:
        tools.run([*argv, "-q", raw, out])
    else:
        tools.run_reading([*argv, "-p", raw, out], _Meter(raw.stat().st_size, advance).feed)


class _Meter:
    """qemu-img's -p output ("    (12.34/100%)\r" as it goes) as bytes of the disk done."""

    def __init__(self, size: int, advance: ProgressFn) -> None:
        self.size = size
        self.advance = advance
        self.done = 0
        self.pending = b""

    def feed(self, chunk: bytes) -> None:
        *shown, self.pending = (self.pending + chunk).split(b"\r")
        for match in _PERCENT.finditer(b"".join(shown)):
            done = min(self.size, int(float(match[1]) * self.size / 100))
            if done > self.done:
                self.advance(done - self.done)
                self.done = done


_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def settle_identifiers(path: Path, fmt: OutputFormat, derive: Derive, name: str) -> None:
    """Replace qemu-img's random identifiers in the converted disk at `path` by derived
    ones (`name`: the file's final name, which a VMDK's descriptor names)."""
    with open(path, "r+b") as f:
        if fmt is OutputFormat.VMDK:
            _vmdk(f, derive, name)
        elif fmt is OutputFormat.VDI:
            _vdi(f, derive)
        elif fmt is OutputFormat.VHDX:
            _vhdx(f, derive)


def _unexpected(what: str) -> RuntimeError:
    return RuntimeError(f"qemu-img wrote a {what} oci2vm does not know: cannot settle its ids")


# -- VMDK: the embedded descriptor's CID and its extent's file name ----------------------

_VMDK_HEADER = struct.Struct("<4sII8xQQQ")  # magic, version, flags, (capacity), grain,
# descriptor offset and size in sectors


def _vmdk(f: BinaryIO, derive: Derive, name: str) -> None:
    magic, _version, _flags, _grain, desc_offset, desc_size = _VMDK_HEADER.unpack(f.read(44))
    if magic != b"KDMV" or not desc_offset or not desc_size:
        raise _unexpected("VMDK")
    f.seek(desc_offset * 512)
    area = f.read(desc_size * 512)
    text = area.split(b"\0", 1)[0].decode("ascii", "replace")
    lines = []
    for line in text.split("\n"):
        if line.startswith("CID="):
            line = f"CID={derive('vmdk-cid').int & 0xFFFFFFFF:08x}"
        elif line.startswith(("RW ", "RDONLY ")) and line.endswith('"') and '"' in line[:-1]:
            line = line[: line.index('"')] + '"' + name.replace('"', "_") + '"'
        lines.append(line)
    new = "\n".join(lines).encode("ascii", "replace")
    if len(new) >= len(area):
        raise _unexpected("VMDK descriptor")
    f.seek(desc_offset * 512)
    f.write(new + bytes(len(area) - len(new)))


# -- VDI: the image's UUID and its last snapshot's -------------------------------------

_VDI_SIGNATURE = 0xBEDA107F
_VDI_UUIDS = 392  # uuid_image, then uuid_last_snap (uuid_link and uuid_parent stay zero)


def _vdi(f: BinaryIO, derive: Derive) -> None:
    head = f.read(_VDI_UUIDS + 32)
    if len(head) < _VDI_UUIDS + 32 or struct.unpack_from("<I", head, 64)[0] != _VDI_SIGNATURE:
        raise _unexpected("VDI")
    f.seek(_VDI_UUIDS)
    f.write(derive("vdi-image").bytes + derive("vdi-last-snapshot").bytes)


# -- VHDX: the headers' GUIDs and sequence numbers, the log, the virtual disk id ----------

_VHDX_HEADERS = (64 << 10, 128 << 10)  # two 4 KiB copies, the one of higher sequence current
_VHDX_REGIONS = 192 << 10  # the region table (its copy at 256 KiB names the same regions)
_METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
_VIRTUAL_DISK_ID = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")


def _checksummed(block: bytearray) -> bytes:
    """A VHDX structure with its CRC-32C (bytes 4-8, zero while it is computed)."""
    block[4:8] = bytes(4)
    block[4:8] = struct.pack("<I", _crc.crc32c(bytes(block)))
    return bytes(block)


def _vhdx(f: BinaryIO, derive: Derive) -> None:
    headers = []
    for at in _VHDX_HEADERS:
        f.seek(at)
        header = bytearray(f.read(4096))
        if header[:4] != b"head":
            raise _unexpected("VHDX")
        headers.append(header)
    first = min(struct.unpack_from("<Q", h, 8)[0] for h in headers)
    for number, (at, header) in enumerate(zip(_VHDX_HEADERS, headers, strict=True)):
        if any(header[48:64]):  # a log to replay: not what a finished conversion leaves
            raise _unexpected("VHDX log")
        sequence = struct.unpack_from("<Q", header, 8)[0] - first + 1  # (order kept)
        struct.pack_into("<Q", header, 8, sequence)
        header[16:32] = derive("vhdx-file-write").bytes_le
        header[32:48] = derive(f"vhdx-data-write-{number}").bytes_le
        log_length, log_offset = struct.unpack_from("<IQ", header, 68)
        f.seek(at)
        f.write(_checksummed(header))
    # The log is empty (LogGuid zero): the entries qemu left in it are of no use; zeros
    # instead (only over them: the rest of the log is a hole).
    at, end = log_offset, log_offset + log_length
    while at < end:
        f.seek(at)
        head = f.read(16)
        length = struct.unpack_from("<I", head, 8)[0] if len(head) == 16 else 0
        if head[:4] != b"loge" or not 0 < length <= end - at or length % 4096:
            break
        f.seek(at)
        f.write(bytes(length))
        at += length
    f.seek(_VHDX_REGIONS)
    table = f.read(64 << 10)
    count = struct.unpack_from("<I", table, 8)[0] if table[:4] == b"regi" else 0
    for entry in range(min(count, 2047)):
        guid, offset = struct.unpack_from("<16sQ", table, 16 + 32 * entry)
        if uuid.UUID(bytes_le=guid) == _METADATA_REGION:
            _vhdx_disk_id(f, offset, derive)
            return
    raise _unexpected("VHDX region table")


def _vhdx_disk_id(f: BinaryIO, region: int, derive: Derive) -> None:
    f.seek(region)
    table = f.read(64 << 10)
    if table[:8] != b"metadata":
        raise _unexpected("VHDX metadata table")
    count = struct.unpack_from("<H", table, 10)[0]
    for entry in range(min(count, 2047)):
        guid, offset, length = struct.unpack_from("<16sII", table, 32 + 32 * entry)
        if uuid.UUID(bytes_le=guid) == _VIRTUAL_DISK_ID and length == 16:
            f.seek(region + offset)
            f.write(derive("vhdx-virtual-disk").bytes_le)
            return
    raise _unexpected("VHDX metadata table")
