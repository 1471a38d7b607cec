"""Writes a GUID Partition Table (protective MBR, primary and backup headers and entry
arrays) straight into a disk image file, with deterministic GUIDs so that the same inputs
give the same bytes, and reads the entries back. sgdisk and sfdisk want a device and invent
random GUIDs; this follows UEFI 2.10 chapter 5.3. The root partition's type GUID, which
depends on the architecture, is the Arch's.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import BinaryIO

from oci2vm.disk.mbr import (
    CHS_OVERFLOW_UEFI,
    MAX_LBA32,
    TYPE_GPT_PROTECTIVE,
    partition_record,
    write_sector0_tail,
)
from oci2vm.disk.placement import place_partitions
from oci2vm.errors import Oci2vmError
from oci2vm.util.units import SECTOR

BIOS_BOOT = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
ESP = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
LINUX_DATA = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")

# Attribute bits (UEFI table 5-9 and the Discoverable Partitions Specification).
ATTR_REQUIRED = 1 << 0
ATTR_NO_BLOCK_IO = 1 << 1
ATTR_LEGACY_BIOS_BOOTABLE = 1 << 2
ATTR_READ_ONLY = 1 << 60
ATTR_NO_AUTO = 1 << 63

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
ENTRY_COUNT = 128
ENTRY_SIZE = 128
ENTRY_ARRAY_SECTORS = ENTRY_COUNT * ENTRY_SIZE // SECTOR  # 32
NAME_UNITS = 36  # PartitionName: 36 UTF-16LE code units
# Sectors a GPT needs at the disk end: backup entry array + backup header.
TAIL_SECTORS = ENTRY_ARRAY_SECTORS + 1

# Signature, Revision, HeaderSize, HeaderCRC32, Reserved, MyLBA, AlternateLBA,
# FirstUsableLBA, LastUsableLBA, DiskGUID, PartitionEntryLBA, NumberOfPartitionEntries,
# SizeOfPartitionEntry, PartitionEntryArrayCRC32
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
assert _HEADER.size == HEADER_SIZE  # UEFI 2.10 table 5-5: the header's fields end at 92
# PartitionTypeGUID, UniquePartitionGUID, StartingLBA, EndingLBA, Attributes, PartitionName
_ENTRY = struct.Struct("<16s16sQQQ72s")
assert _ENTRY.size == ENTRY_SIZE  # UEFI 2.10 table 5-6: an entry is 128 bytes

# Namespace of the GUIDs derive_guid() makes; fixed forever so images stay reproducible.
GUID_NAMESPACE = uuid.UUID("e9ef1af8-35ec-484c-a059-aa111dd094fd")


@dataclass(frozen=True)
class Partition:
    """One GPT entry; first_lba and last_lba are inclusive, as the table stores them."""

    type_guid: uuid.UUID
    guid: uuid.UUID
    first_lba: int
    last_lba: int
    name: str
    attributes: int = 0


@dataclass(frozen=True)
class PartitionSpec:
    """A partition to place: `size` in bytes (rounded up to MiB), or None for the rest."""

    type_guid: uuid.UUID
    name: str
    size: int | None
    attributes: int = 0


@dataclass(frozen=True)
class DiskLayout:
    disk_size: int
    disk_guid: uuid.UUID
    partitions: tuple[Partition, ...]


def derive_guid(seed: bytes, label: str) -> uuid.UUID:
    """A name-based (version 5) GUID from `seed` and `label`: same inputs, same GUID."""
    return uuid.uuid5(GUID_NAMESPACE, seed.hex() + "/" + label)


def layout(
    specs: Sequence[PartitionSpec], *, seed: bytes, disk_size: int | None = None
) -> DiskLayout:
    """Place `specs` 1 MiB aligned (the first at 1 MiB) and give the disk and each
    partition a GUID derived from `seed` (the partition's from its number)."""
    disk_size, extents = place_partitions(
        [spec.size for spec in specs], disk_size=disk_size, reserved_tail_sectors=TAIL_SECTORS
    )
    partitions = tuple(
        Partition(
            type_guid=spec.type_guid,
            guid=derive_guid(seed, f"partition {number}"),
            first_lba=first,
            last_lba=last,
            name=spec.name,
            attributes=spec.attributes,
        )
        for number, (spec, (first, last)) in enumerate(zip(specs, extents, strict=True), 1)
    )
    return DiskLayout(disk_size, derive_guid(seed, "disk"), partitions)


def _entry(partition: Partition) -> bytes:
    name = partition.name.encode("utf-16-le")
    if len(name) > 2 * NAME_UNITS:
        raise Oci2vmError(
            f"GPT partition name {partition.name!r} is longer than {NAME_UNITS} UTF-16 units:"
            " shorten it"
        )
    return _ENTRY.pack(
        partition.type_guid.bytes_le,
        partition.guid.bytes_le,
        partition.first_lba,
        partition.last_lba,
        partition.attributes,
        name,
    )


def _header(
    *,
    my_lba: int,
    alternate_lba: int,
    first_usable: int,
    last_usable: int,
    disk_guid: uuid.UUID,
    entries_lba: int,
    entries_crc: int,
) -> bytes:
    fields = [
        SIGNATURE,
        REVISION,
        HEADER_SIZE,
        0,  # HeaderCRC32 is computed with this field zero
        0,
        my_lba,
        alternate_lba,
        first_usable,
        last_usable,
        disk_guid.bytes_le,
        entries_lba,
        ENTRY_COUNT,
        ENTRY_SIZE,
        entries_crc,
    ]
    fields[3] = zlib.crc32(_HEADER.pack(*fields))
    return _HEADER.pack(*fields).ljust(SECTOR, b"\0")


def _check(partitions: Sequence[Partition], first_usable: int, last_usable: int) -> None:
    if len(partitions) > ENTRY_COUNT:
        raise ValueError(f"a GPT holds {ENTRY_COUNT} partitions, not {len(partitions)}")
    for p in partitions:
        if p.type_guid.int == 0:
            raise ValueError(f"partition {p.name!r} has the unused-entry type GUID")
        if not first_usable <= p.first_lba <= p.last_lba <= last_usable:
            raise ValueError(
                f"partition {p.name!r} ({p.first_lba}..{p.last_lba}) is outside the usable"
                f" sectors {first_usable}..{last_usable}"
            )
        if not 0 <= p.attributes < 1 << 64:
            raise ValueError(f"partition {p.name!r} attributes {p.attributes:#x} exceed 64 bits")
    ordered = sorted(partitions, key=lambda p: p.first_lba)
    for before, after in pairwise(ordered):
        if after.first_lba <= before.last_lba:
            raise ValueError(f"partitions {before.name!r} and {after.name!r} overlap")
    guids = [p.guid for p in partitions]
    if len(set(guids)) != len(guids):
        raise ValueError("two partitions share a unique GUID")


def write_gpt(
    out: BinaryIO,
    disk_size: int,
    partitions: Sequence[Partition],
    *,
    disk_guid: uuid.UUID,
    keep_boot_code: bool = True,
) -> None:
    """Write the protective MBR, both GPT headers and both entry arrays of a disk of
    `disk_size` bytes. Partitions keep their order as entries 1, 2, ...; the rest of the
    disk is not touched. Bytes 0..439 of sector 0 (boot code) are left as found, or
    zeroed when keep_boot_code is False."""
    if disk_size % SECTOR:
        raise ValueError(f"disk size {disk_size} is not a multiple of {SECTOR}")
    last_lba = disk_size // SECTOR - 1
    first_usable = 2 + ENTRY_ARRAY_SECTORS
    last_usable = last_lba - TAIL_SECTORS
    if last_usable < first_usable:
        raise Oci2vmError(f"a {disk_size}-byte disk is too small for a GPT")
    _check(partitions, first_usable, last_usable)

    entries = b"".join(_entry(p) for p in partitions).ljust(ENTRY_COUNT * ENTRY_SIZE, b"\0")
    entries_crc = zlib.crc32(entries)
    backup_entries_lba = last_lba - ENTRY_ARRAY_SECTORS

    def header(my_lba: int, alternate_lba: int, entries_lba: int) -> bytes:
        return _header(
            my_lba=my_lba,
            alternate_lba=alternate_lba,
            first_usable=first_usable,
            last_usable=last_usable,
            disk_guid=disk_guid,
            entries_lba=entries_lba,
            entries_crc=entries_crc,
        )

    primary = header(1, last_lba, 2)
    backup = header(last_lba, 1, backup_entries_lba)

    protective = partition_record(
        TYPE_GPT_PROTECTIVE, 1, min(last_lba, MAX_LBA32), chs_overflow=CHS_OVERFLOW_UEFI
    )
    write_sector0_tail(out, [protective], disk_signature=0, keep_boot_code=keep_boot_code)
    out.seek(SECTOR)
    out.write(primary + entries)
    out.seek(backup_entries_lba * SECTOR)
    out.write(entries + backup)


def read_entries(disk: BinaryIO) -> list[tuple[uuid.UUID, int, int]]:
    """(type GUID, first LBA, last LBA) of each used entry of the primary GPT of `disk`."""
    disk.seek(SECTOR)
    header = disk.read(SECTOR)
    if len(header) < _HEADER.size:
        raise ValueError("the disk ends before the GPT header")
    fields = _HEADER.unpack_from(header)
    signature, entries_lba, entry_count, entry_size = fields[0], fields[10], fields[11], fields[12]
    if signature != SIGNATURE or entry_size < _ENTRY.size:
        raise ValueError("sector 1 holds no GPT header")
    disk.seek(entries_lba * SECTOR)
    table = disk.read(entry_count * entry_size)
    found = []
    for index in range(len(table) // entry_size):
        type_guid, _unique, first, last, _attributes, _name = _ENTRY.unpack_from(
            table, index * entry_size
        )
        if type_guid != bytes(16):
            found.append((uuid.UUID(bytes_le=type_guid), int(first), int(last)))
    return found
