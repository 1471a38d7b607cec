"""Writes a classic MBR partition table (and the pieces the GPT writer shares with it: the
16-byte partition record, CHS encoding) straight into a disk image file, and reads the
records back.
No library writes one into a plain file without a block device; this follows the
IBM PC MBR layout as UEFI 2.10 section 5.2.1 restates it, with Linux fdisk's CHS conventions.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import BinaryIO

from oci2vm.util.units import SECTOR

BOOT_CODE_SIZE = 440  # bytes 0..439 belong to a bootloader (GRUB's boot.img), never to us
DISK_SIGNATURE_OFFSET = 0x1B8  # UniqueMBRDiskSignature, u32 LE
PARTITION_RECORD_OFFSET = 0x1BE  # PartitionRecord[4], 16 bytes each
BOOT_SIGNATURE = b"\x55\xaa"  # Signature at 0x1FE

# OSType bytes
TYPE_LINUX = 0x83
TYPE_ESP = 0xEF
TYPE_GPT_PROTECTIVE = 0xEE

BOOT_INDICATOR_ACTIVE = 0x80

# The geometry every LBA-era tool assumes when it must fill CHS fields.
HEADS = 255
SECTORS_PER_TRACK = 63
MAX_CYLINDER = 1023
# Out-of-range CHS: fdisk writes cylinder 1023, head 254, sector 63; UEFI asks for all ones
# in the protective record.
CHS_OVERFLOW_FDISK = b"\xfe\xff\xff"
CHS_OVERFLOW_UEFI = b"\xff\xff\xff"

MAX_LBA32 = 0xFFFFFFFF

# BootIndicator, StartingCHS[3], OSType, EndingCHS[3], StartingLBA u32, SizeInLBA u32
_RECORD = struct.Struct("<B3sB3sII")
assert _RECORD.size == 16  # UEFI 2.10 table 5-2: a partition record is 16 bytes


@dataclass(frozen=True)
class MbrPartition:
    """One primary partition: `type` is the OSType byte (TYPE_LINUX, TYPE_ESP, ...)."""

    type: int
    first_lba: int
    sector_count: int
    bootable: bool = False

    @property
    def last_lba(self) -> int:
        return self.first_lba + self.sector_count - 1


def chs(lba: int, overflow: bytes = CHS_OVERFLOW_FDISK) -> bytes:
    """The 3-byte CHS address of `lba` on a 255-head, 63-sector disk (head; sector in
    bits 0-5 with cylinder bits 8-9 in bits 6-7; cylinder bits 0-7), or `overflow`
    past cylinder 1023."""
    cylinder, rest = divmod(lba, HEADS * SECTORS_PER_TRACK)
    head, sector_index = divmod(rest, SECTORS_PER_TRACK)
    if cylinder > MAX_CYLINDER:
        return overflow
    sector = sector_index + 1
    return bytes([head, sector | ((cylinder >> 8) << 6), cylinder & 0xFF])


def partition_record(
    os_type: int,
    first_lba: int,
    sector_count: int,
    *,
    bootable: bool = False,
    chs_overflow: bytes = CHS_OVERFLOW_FDISK,
) -> bytes:
    """One 16-byte partition record; the CHS fields are derived from the LBA fields."""
    if not 0 < os_type <= 0xFF:
        raise ValueError(f"MBR partition type {os_type:#x} is not a byte")
    if first_lba < 1 or sector_count < 1 or first_lba + sector_count - 1 > MAX_LBA32:
        raise ValueError(f"MBR partition {first_lba}+{sector_count} is outside 32-bit LBA")
    last_lba = first_lba + sector_count - 1
    return _RECORD.pack(
        BOOT_INDICATOR_ACTIVE if bootable else 0,
        chs(first_lba, chs_overflow),
        os_type,
        chs(last_lba, chs_overflow),
        first_lba,
        sector_count,
    )


def write_sector0_tail(
    out: BinaryIO,
    records: Sequence[bytes],
    *,
    disk_signature: int,
    keep_boot_code: bool = True,
) -> None:
    """Write bytes 440..511 of sector 0: disk signature, up to four records, 0x55AA.
    Bytes 0..439 are left as found, or zeroed when keep_boot_code is False."""
    if len(records) > 4:
        raise ValueError(f"an MBR holds 4 partition records, not {len(records)}")
    if not 0 <= disk_signature <= 0xFFFFFFFF:
        raise ValueError(f"MBR disk signature {disk_signature:#x} is not 32 bits")
    tail = bytearray(SECTOR - BOOT_CODE_SIZE)
    struct.pack_into("<I", tail, DISK_SIGNATURE_OFFSET - BOOT_CODE_SIZE, disk_signature)
    for index, record in enumerate(records):
        start = PARTITION_RECORD_OFFSET - BOOT_CODE_SIZE + _RECORD.size * index
        tail[start : start + _RECORD.size] = record
    tail[-2:] = BOOT_SIGNATURE
    if keep_boot_code:
        out.seek(BOOT_CODE_SIZE)
        out.write(tail)
    else:
        out.seek(0)
        out.write(bytes(BOOT_CODE_SIZE) + tail)


def write_mbr(
    out: BinaryIO,
    partitions: Sequence[MbrPartition],
    *,
    disk_signature: int,
    keep_boot_code: bool = True,
) -> None:
    """Write an MBR partition table with up to four primary partitions into sector 0."""
    ordered = sorted(partitions, key=lambda p: p.first_lba)
    for before, after in pairwise(ordered):
        if after.first_lba <= before.last_lba:
            raise ValueError(f"MBR partitions overlap: {before} and {after}")
    records = [
        partition_record(p.type, p.first_lba, p.sector_count, bootable=p.bootable)
        for p in partitions
    ]
    write_sector0_tail(out, records, disk_signature=disk_signature, keep_boot_code=keep_boot_code)


def disk_signature_from_seed(seed: bytes) -> int:
    """A deterministic, non-zero 32-bit disk signature (Linux shows it as PTUUID)."""
    digest = hashlib.sha256(b"oci2vm mbr disk signature\0" + seed).digest()
    return int.from_bytes(digest[:4], "little") or 1


def read_partitions(sector0: bytes) -> list[tuple[int, int, int]]:
    """(OSType, first LBA, sector count) of each used record of an MBR, in record order."""
    if len(sector0) < SECTOR or sector0[SECTOR - 2 : SECTOR] != BOOT_SIGNATURE:
        raise ValueError("sector 0 holds no MBR (no 0x55AA signature)")
    partitions = []
    for index in range(4):
        offset = PARTITION_RECORD_OFFSET + index * _RECORD.size
        _status, _chs, os_type, _chs_end, first, count = _RECORD.unpack_from(sector0, offset)
        if os_type != 0:
            partitions.append((int(os_type), int(first), int(count)))
    return partitions
