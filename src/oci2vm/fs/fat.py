"""Writes a FAT12/16/32 filesystem (an EFI System Partition) into an image file at an
offset, byte for byte, without mounting or mkfs: mkfs.fat + mtools would need two tools and
leave timestamps and order to chance. Follows Microsoft's FAT specification (fatgen103).
"""

from __future__ import annotations

import string
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from oci2vm.errors import Oci2vmError
from oci2vm.util.units import MIB, SECTOR, align_up, ceil_div

DIR_ENTRY_SIZE = 32
NUM_FATS = 2
MEDIA_FIXED_DISK = 0xF8
MAX_FILE_SIZE = 0xFFFFFFFF
MAX_DIR_ENTRIES = 65536  # a directory is at most 2 MiB

# The FAT type follows from the cluster count alone.
FAT12_MAX_CLUSTERS = 4084
FAT16_MAX_CLUSTERS = 65524

# fatgen103's tables of sectors per cluster by volume size in sectors (512-byte sectors);
# the first row is "too small for this type".
FAT16_CLUSTER_TABLE = ((8400, 0), (32680, 2), (262144, 4), (524288, 8), (1048576, 16),
                       (2097152, 32), (4194304, 64))  # fmt: skip
FAT32_CLUSTER_TABLE = ((66600, 0), (532480, 1), (16777216, 8), (33554432, 16),
                       (67108864, 32), (0xFFFFFFFF, 64))  # fmt: skip
FAT1216_RESERVED_SECTORS = 1
FAT1216_ROOT_ENTRIES = 512
FAT32_RESERVED_SECTORS = 32
FAT32_ROOT_CLUSTER = 2
FAT32_FSINFO_SECTOR = 1
FAT32_BACKUP_BOOT_SECTOR = 6

# The smallest whole-MiB size FAT32 accepts with 512-byte clusters is 33 MiB; twice that
# leaves room for a kernel and initrd next to the bootloader, and unused space is sparse.
MIN_ESP_SIZE = 64 * MIB

ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LONG_NAME = 0x0F
LAST_LONG_ENTRY = 0x40
LFN_UNITS_PER_ENTRY = 13
MAX_LONG_NAME_UNITS = 255

FAT_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest date FAT stores
FAT_LAST = 4354819198  # 2107-12-31T23:59:58Z, the latest

SHORT_NAME_CHARS = frozenset(string.ascii_uppercase + string.digits + "$%'-_@~`!(){}^#&")
LONG_NAME_FORBIDDEN = frozenset('"*/:<>?\\|' + "".join(map(chr, range(0x20))))

# A volume that is not bootable: INT 18h asks the BIOS to try the next device; hlt; loop.
NOT_BOOTABLE_CODE = b"\xcd\x18\xf4\xeb\xfd"

# BS_jmpBoot, BS_OEMName, BPB_BytsPerSec, BPB_SecPerClus, BPB_RsvdSecCnt, BPB_NumFATs,
# BPB_RootEntCnt, BPB_TotSec16, BPB_Media, BPB_FATSz16, BPB_SecPerTrk, BPB_NumHeads,
# BPB_HiddSec, BPB_TotSec32
_BPB = struct.Struct("<3s8sHBHBHHBHHHII")
assert _BPB.size == 36  # fatgen103: BPB_TotSec32 ends at offset 36
# BS_DrvNum, BS_Reserved1, BS_BootSig, BS_VolID, BS_VolLab, BS_FilSysType
_EBPB = struct.Struct("<BBBI11s8s")
assert _EBPB.size == 26  # fatgen103: from BS_DrvNum (36, or 64 on FAT32) to BS_FilSysType's end
# BPB_FATSz32, BPB_ExtFlags, BPB_FSVer, BPB_RootClus, BPB_FSInfo, BPB_BkBootSec, BPB_Reserved
_FAT32_BPB = struct.Struct("<IHHIHH12s")
assert _FAT32_BPB.size == 28  # fatgen103: offsets 36 to 64
# DIR_Name, DIR_Attr, DIR_NTRes, DIR_CrtTimeTenth, DIR_CrtTime, DIR_CrtDate, DIR_LstAccDate,
# DIR_FstClusHI, DIR_WrtTime, DIR_WrtDate, DIR_FstClusLO, DIR_FileSize
_DIRENT = struct.Struct("<11sBBBHHHHHHHI")
assert _DIRENT.size == DIR_ENTRY_SIZE
# LDIR_Ord, LDIR_Name1, LDIR_Attr, LDIR_Type, LDIR_Chksum, LDIR_Name2, LDIR_FstClusLO,
# LDIR_Name3
_LFN = struct.Struct("<B10sBBB12sH4s")
assert _LFN.size == DIR_ENTRY_SIZE  # a long-name entry takes a directory entry's place
OEM_NAME = b"MSWIN4.1"  # what fatgen103 recommends for the widest driver compatibility
DRIVE_NUMBER = 0x80
EXTENDED_BOOT_SIGNATURE = 0x29
FSI_LEAD_SIG = 0x41615252
FSI_STRUC_SIG = 0x61417272
FSI_TRAIL_SIG = 0xAA550000
# Conventional geometry for LBA disks; nothing reads it.
SECTORS_PER_TRACK = 63
HEADS = 255


@dataclass(frozen=True)
class _Geometry:
    fat_bits: int
    total_sectors: int
    sectors_per_cluster: int
    reserved_sectors: int
    fat_sectors: int
    root_entries: int  # the fixed FAT12/16 root directory; 0 on FAT32
    clusters: int

    @property
    def root_dir_sectors(self) -> int:
        return ceil_div(self.root_entries * DIR_ENTRY_SIZE, SECTOR)

    @property
    def data_sector(self) -> int:
        return self.reserved_sectors + NUM_FATS * self.fat_sectors + self.root_dir_sectors

    @property
    def cluster_bytes(self) -> int:
        return self.sectors_per_cluster * SECTOR


@dataclass
class _Node:
    name: str
    data: bytes | None  # None: a directory
    children: dict[str, _Node] = field(default_factory=dict)  # keyed by upper-case name
    short_name: bytes = b""
    needs_long_name: bool = False
    first_cluster: int = 0
    cluster_count: int = 0


def _fit(fat_bits: int, total: int, per_cluster: int, reserved: int, root: int) -> _Geometry:
    """Grow the FAT until it has an entry for every cluster the rest of the volume holds."""
    root_sectors = ceil_div(root * DIR_ENTRY_SIZE, SECTOR)
    fat_sectors = 1
    while True:
        data_sectors = total - reserved - root_sectors - NUM_FATS * fat_sectors
        clusters = max(data_sectors, 0) // per_cluster
        needed = ceil_div((clusters + 2) * fat_bits, 8 * SECTOR)
        if needed <= fat_sectors:
            return _Geometry(fat_bits, total, per_cluster, reserved, fat_sectors, root, clusters)
        fat_sectors = needed


def _lookup(table: tuple[tuple[int, int], ...], total: int) -> int:
    return next((per_cluster for limit, per_cluster in table if total <= limit), 0)


def _geometry(size: int) -> _Geometry:
    """FAT32 when the volume has room for its 65525 clusters, else FAT16, else FAT12."""
    total = size // SECTOR
    if total > 0xFFFFFFFF:
        raise Oci2vmError(f"a FAT volume holds at most 2 TiB, not {size / MIB:g} MiB")
    per_cluster = _lookup(FAT32_CLUSTER_TABLE, total)
    if per_cluster:
        geometry = _fit(32, total, per_cluster, FAT32_RESERVED_SECTORS, 0)
        if geometry.clusters > FAT16_MAX_CLUSTERS:
            return geometry
    per_cluster = _lookup(FAT16_CLUSTER_TABLE, total)
    if per_cluster:
        geometry = _fit(16, total, per_cluster, FAT1216_RESERVED_SECTORS, FAT1216_ROOT_ENTRIES)
        if FAT12_MAX_CLUSTERS < geometry.clusters <= FAT16_MAX_CLUSTERS:
            return geometry
    for per_cluster in (1, 2, 4, 8, 16, 32, 64):
        geometry = _fit(12, total, per_cluster, FAT1216_RESERVED_SECTORS, FAT1216_ROOT_ENTRIES)
        if geometry.clusters <= FAT12_MAX_CLUSTERS:
            if geometry.clusters < 1:
                raise Oci2vmError(f"{size} bytes is too small for a FAT volume: give it 1 MiB")
            return geometry
    raise AssertionError(f"no FAT geometry for {total} sectors")  # FAT16 covers the gap


def _check_long_name(name: str, path: str) -> None:
    if name in ("", ".", ".."):
        raise Oci2vmError(f"ESP path {path!r} has an empty or dot component: remove it")
    bad = sorted(set(name) & LONG_NAME_FORBIDDEN)
    if bad or name.endswith((".", " ")):
        raise Oci2vmError(
            f"ESP file name {name!r} in {path!r} cannot be stored on FAT"
            f" ({'characters ' + repr(''.join(bad)) if bad else 'trailing dot or space'}):"
            " rename it"
        )
    if len(name.encode("utf-16-le")) // 2 > MAX_LONG_NAME_UNITS:
        raise Oci2vmError(f"ESP file name in {path!r} is longer than 255 characters")


def _tree(files: Mapping[str, bytes]) -> _Node:
    root = _Node("", None)
    for path in sorted(files):
        parts = path.strip("/").split("/")
        node = root
        for depth, part in enumerate(parts):
            _check_long_name(part, path)
            is_file = depth == len(parts) - 1
            child = node.children.get(part.upper())
            if child is None:
                child = _Node(part, files[path] if is_file else None)
                node.children[part.upper()] = child
            elif is_file or child.data is not None or child.name != part:
                raise Oci2vmError(
                    f"ESP path {path!r} clashes with another file or directory"
                    " (FAT names ignore case): rename one"
                )
            node = child
        if node.data is not None and len(node.data) > MAX_FILE_SIZE:
            raise Oci2vmError(f"ESP file {path!r} is larger than FAT's 4 GiB limit")
    return root


def _is_short_name(name: str) -> bool:
    base, dot, ext = name.partition(".")
    return (
        1 <= len(base) <= 8
        and len(ext) <= 3
        and (not dot or bool(ext))
        and set(base + ext) <= SHORT_NAME_CHARS
    )


def _pack_short(name: str) -> bytes:
    base, _, ext = name.partition(".")
    return (base.ljust(8) + ext.ljust(3)).encode("ascii")


def _basis_name(name: str) -> tuple[str, str]:
    """The spec's basis-name: upper case, spaces and leading dots dropped, other
    unrepresentable characters as '_', the last dot separating an up-to-3-character
    extension from an up-to-8-character base."""
    upper = name.upper().replace(" ", "").lstrip(".")
    base, dot, ext = upper.rpartition(".")
    if not dot:
        base, ext = ext, ""

    def clean(text: str) -> str:
        return "".join(c if c in SHORT_NAME_CHARS else "_" for c in text.replace(".", ""))

    return clean(base)[:8] or "_", clean(ext)[:3]


def _assign_short_names(directory: _Node) -> None:
    """Exact 8.3 names first, so a generated 'NAME~1' never takes a name a file has."""
    taken: set[bytes] = set()
    children = _ordered(directory)
    for child in children:
        if _is_short_name(child.name):
            child.short_name = _pack_short(child.name)
            taken.add(child.short_name)
    for child in children:
        if child.short_name:
            continue
        child.needs_long_name = True
        if _is_short_name(child.name.upper()) and _pack_short(child.name.upper()) not in taken:
            child.short_name = _pack_short(child.name.upper())
        else:
            base, ext = _basis_name(child.name)
            number = 1
            while True:
                tail = f"~{number}"
                candidate = (base[: 8 - len(tail)] + tail).ljust(8) + ext.ljust(3)
                if candidate.encode("ascii") not in taken:
                    child.short_name = candidate.encode("ascii")
                    break
                number += 1
        taken.add(child.short_name)


def _long_entry_count(node: _Node) -> int:
    if not node.needs_long_name:
        return 0
    return ceil_div(len(node.name.encode("utf-16-le")) // 2, LFN_UNITS_PER_ENTRY)


def _directory_entries(directory: _Node, *, is_root: bool, has_label: bool) -> int:
    own = (1 if has_label else 0) if is_root else 2  # volume label, or "." and ".."
    count = own + sum(1 + _long_entry_count(child) for child in directory.children.values())
    if count > MAX_DIR_ENTRIES:
        raise Oci2vmError(f"ESP directory {directory.name!r} has too many entries")
    return count


def _walk_dirs(directory: _Node) -> Iterator[_Node]:
    """Directories in allocation order: each directory, then its subdirectories."""
    yield directory
    for child in _ordered(directory):
        if child.data is None:
            yield from _walk_dirs(child)


def _ordered(directory: _Node) -> list[_Node]:
    return sorted(directory.children.values(), key=lambda n: n.name)


def _allocate(root: _Node, geometry: _Geometry, has_label: bool) -> int:
    """Give each directory and then its files consecutive clusters; return the first
    free cluster. The FAT12/16 root lives outside the data area."""
    cluster_bytes = geometry.cluster_bytes
    next_cluster = 2
    for directory in _walk_dirs(root):
        _assign_short_names(directory)
        is_root = directory is root
        entries = _directory_entries(directory, is_root=is_root, has_label=has_label)
        if is_root and geometry.fat_bits != 32:
            if entries > geometry.root_entries:
                raise Oci2vmError(
                    f"the ESP root directory holds {geometry.root_entries} entries on"
                    f" FAT{geometry.fat_bits}: put files in subdirectories or enlarge it"
                )
        else:
            directory.first_cluster = next_cluster
            directory.cluster_count = max(1, ceil_div(entries * DIR_ENTRY_SIZE, cluster_bytes))
            next_cluster += directory.cluster_count
        for child in _ordered(directory):
            if child.data:  # a file with contents; empty files own no cluster
                child.first_cluster = next_cluster
                child.cluster_count = ceil_div(len(child.data), cluster_bytes)
                next_cluster += child.cluster_count
    return next_cluster


def _fat_datetime(mtime: int) -> tuple[int, int, int]:
    """(date, time, tenths) for a UTC epoch time, clamped to FAT's 1980..2107."""
    clamped = min(max(mtime, FAT_EPOCH), FAT_LAST)
    tm = time.gmtime(clamped)
    date = ((tm.tm_year - 1980) << 9) | (tm.tm_mon << 5) | tm.tm_mday
    clock = (tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec // 2)
    return date, clock, (tm.tm_sec % 2) * 100


def lfn_checksum(short_name: bytes) -> int:
    """The checksum of an 11-byte short name that every long-name entry carries."""
    total = 0
    for byte in short_name:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _long_entries(node: _Node) -> bytes:
    units = node.name.encode("utf-16-le")
    count = _long_entry_count(node)
    if len(units) // 2 < count * LFN_UNITS_PER_ENTRY:
        units += b"\0\0"  # a name that does not fill its last entry ends with NUL...
    units = units.ljust(count * LFN_UNITS_PER_ENTRY * 2, b"\xff")  # ...then 0xFFFF padding
    checksum = lfn_checksum(node.short_name)
    entries = []
    for ordinal in range(count, 0, -1):  # stored last part first
        part = units[(ordinal - 1) * 26 : ordinal * 26]
        flag = LAST_LONG_ENTRY if ordinal == count else 0
        entries.append(
            _LFN.pack(
                ordinal | flag, part[:10], ATTR_LONG_NAME, 0, checksum, part[10:22], 0, part[22:]
            )
        )
    return b"".join(entries)


def _short_entry(name: bytes, attr: int, cluster: int, size: int, stamp: tuple[int, ...]) -> bytes:
    date, clock, tenths = stamp
    return _DIRENT.pack(
        name, attr, 0, tenths, clock, date, date, cluster >> 16, clock, date, cluster & 0xFFFF, size
    )


def _directory_bytes(
    directory: _Node, parent_cluster: int | None, label: bytes, stamp: tuple[int, ...]
) -> bytes:
    """A directory's entries; parent_cluster None marks the root (0 means the root on
    the '..' of its children, as the spec asks even on FAT32)."""
    entries = []
    if parent_cluster is None:
        if label:
            entries.append(_short_entry(label, ATTR_VOLUME_ID, 0, 0, stamp))
    else:
        own = directory.first_cluster
        entries.append(_short_entry(b".".ljust(11), ATTR_DIRECTORY, own, 0, stamp))
        entries.append(_short_entry(b"..".ljust(11), ATTR_DIRECTORY, parent_cluster, 0, stamp))
    for child in _ordered(directory):
        if child.needs_long_name:
            entries.append(_long_entries(child))
        attr, size = (ATTR_DIRECTORY, 0) if child.data is None else (ATTR_ARCHIVE, len(child.data))
        entries.append(_short_entry(child.short_name, attr, child.first_cluster, size, stamp))
    return b"".join(entries)


def _fat_bytes(geometry: _Geometry, chains: list[tuple[int, int]], end: int) -> bytes:
    """The used part of one FAT, padded to whole sectors: entries 0 and 1 (media byte,
    clean-shutdown end-of-chain), then each (first, count) run as one contiguous chain."""
    bits = geometry.fat_bits
    mask = (1 << min(bits, 28)) - 1
    entries = [0] * end
    entries[0] = (mask & ~0xFF) | MEDIA_FIXED_DISK
    entries[1] = mask
    for first, count in chains:
        for cluster in range(first, first + count - 1):
            entries[cluster] = cluster + 1
        entries[first + count - 1] = mask  # end of chain
    if bits == 32:
        packed = bytearray(struct.pack(f"<{end}I", *entries))
    elif bits == 16:
        packed = bytearray(struct.pack(f"<{end}H", *entries))
    else:
        packed = bytearray(ceil_div(end * 3, 2))
        for cluster, value in enumerate(entries):
            offset = cluster * 3 // 2
            if cluster % 2 == 0:  # low 12 bits of the little-endian pair
                packed[offset] = value & 0xFF
                packed[offset + 1] = (packed[offset + 1] & 0xF0) | (value >> 8)
            else:  # high 12 bits
                packed[offset] = (packed[offset] & 0x0F) | ((value & 0x0F) << 4)
                packed[offset + 1] = value >> 4
    return bytes(packed.ljust(align_up(len(packed), SECTOR), b"\0"))


def _boot_sector(geometry: _Geometry, hidden: int, volume_id: int, label: bytes) -> bytes:
    total = geometry.total_sectors
    fat32 = geometry.fat_bits == 32
    small_total = total if total < 0x10000 and not fat32 else 0
    bpb = _BPB.pack(
        b"\xeb\x58\x90" if fat32 else b"\xeb\x3c\x90",  # jmp short over the BPB; nop
        OEM_NAME,
        SECTOR,
        geometry.sectors_per_cluster,
        geometry.reserved_sectors,
        NUM_FATS,
        geometry.root_entries,
        small_total,
        MEDIA_FIXED_DISK,
        0 if fat32 else geometry.fat_sectors,
        SECTORS_PER_TRACK,
        HEADS,
        hidden,
        0 if small_total else total,
    )
    ebpb = _EBPB.pack(
        DRIVE_NUMBER,
        0,  # BS_Reserved1: Windows keeps its dirty flag here; clean
        EXTENDED_BOOT_SIGNATURE,
        volume_id,
        label or b"NO NAME    ",
        f"FAT{geometry.fat_bits}".ljust(8).encode("ascii"),
    )
    if fat32:
        bpb += _FAT32_BPB.pack(
            geometry.fat_sectors,
            0,  # BPB_ExtFlags: all FATs mirrored
            0,  # BPB_FSVer 0.0
            FAT32_ROOT_CLUSTER,
            FAT32_FSINFO_SECTOR,
            FAT32_BACKUP_BOOT_SECTOR,
            bytes(12),
        )
    sector = bytearray(SECTOR)
    header = bpb + ebpb
    sector[: len(header)] = header
    sector[len(header) : len(header) + len(NOT_BOOTABLE_CODE)] = NOT_BOOTABLE_CODE
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _fsinfo_sector(free_clusters: int, next_free: int) -> bytes:
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, 0, FSI_LEAD_SIG)
    struct.pack_into("<IIII", sector, 484, FSI_STRUC_SIG, free_clusters, next_free, 0)
    struct.pack_into("<I", sector, 508, FSI_TRAIL_SIG)
    return bytes(sector)


def _label_bytes(label: str) -> bytes:
    upper = label.upper()
    if len(upper) > 11 or not set(upper) <= SHORT_NAME_CHARS | {" "} or upper.startswith(" "):
        raise Oci2vmError(
            f"FAT volume label {label!r} must be at most 11 letters, digits or _-: rename it"
        )
    return upper.ljust(11).encode("ascii") if upper else b""


def _plan(files: Mapping[str, bytes], size: int, has_label: bool) -> tuple[_Node, _Geometry, int]:
    if size <= 0 or size % SECTOR:
        raise ValueError(f"FAT volume size {size} is not a positive multiple of {SECTOR}")
    root = _tree(files)
    geometry = _geometry(size)
    end = _allocate(root, geometry, has_label)
    return root, geometry, end


def write_fat(
    out: BinaryIO,
    offset: int,
    size: int,
    files: Mapping[str, bytes],
    *,
    volume_id: int,
    label: str = "ESP",
    mtime: int = 0,
) -> None:
    """Write a FAT volume of `size` bytes holding `files` ("EFI/BOOT/NAME.EFI" ->
    contents; directories are implied) at byte `offset` of `out`.

    The type follows from the size: FAT32 from about 33 MiB, FAT16 from about 4 MiB,
    else FAT12. Every entry gets the `mtime` timestamp (UTC epoch seconds) and the same
    inputs give the same bytes. The area must read as zeros beforehand (a new or
    truncated image file): unused clusters and the unused tail of each FAT are skipped,
    not written, so a sparse file stays sparse. BPB_HiddSec is offset / 512, right when
    `out` is the whole disk."""
    if offset % SECTOR:
        raise ValueError(f"FAT volume offset {offset} is not a multiple of {SECTOR}")
    if not 0 <= volume_id <= 0xFFFFFFFF:
        raise ValueError(f"FAT volume id {volume_id:#x} is not 32 bits")
    label_bytes = _label_bytes(label)
    root, geometry, end = _plan(files, size, bool(label_bytes))
    if end - 2 > geometry.clusters:
        raise Oci2vmError(
            f"a {size / MIB:g} MiB ESP cannot hold these files: make it at least"
            f" {fat_size_for(files) // MIB} MiB"
        )
    stamp = _fat_datetime(mtime)
    fat32 = geometry.fat_bits == 32
    hidden = min(offset // SECTOR, 0xFFFFFFFF)

    reserved = bytearray(geometry.reserved_sectors * SECTOR)
    boot = _boot_sector(geometry, hidden, volume_id, label_bytes)
    reserved[:SECTOR] = boot
    if fat32:
        fsinfo = _fsinfo_sector(
            geometry.clusters - (end - 2), end if end < geometry.clusters + 2 else 0xFFFFFFFF
        )
        for first in (0, FAT32_BACKUP_BOOT_SECTOR):
            reserved[first * SECTOR : (first + 1) * SECTOR] = boot
            start = (first + FAT32_FSINFO_SECTOR) * SECTOR
            reserved[start : start + SECTOR] = fsinfo
    out.seek(offset)
    out.write(reserved)

    directories = list(_walk_dirs(root))
    chains = [(node.first_cluster, node.cluster_count) for node in _clustered(directories)]
    fat = _fat_bytes(geometry, chains, end)
    for copy in range(NUM_FATS):
        out.seek(offset + (geometry.reserved_sectors + copy * geometry.fat_sectors) * SECTOR)
        out.write(fat)

    data_start = offset + geometry.data_sector * SECTOR
    cluster_bytes = geometry.cluster_bytes
    parents = {id(child): d for d in directories for child in d.children.values()}
    for node in _clustered(directories):
        if node.data is None:
            parent = parents.get(id(node))
            parent_cluster = (
                None if parent is None else (0 if parent is root else parent.first_cluster)
            )
            content = _directory_bytes(node, parent_cluster, label_bytes, stamp)
        else:
            content = node.data
        out.seek(data_start + (node.first_cluster - 2) * cluster_bytes)
        out.write(content.ljust(node.cluster_count * cluster_bytes, b"\0"))
    if not fat32:
        out.seek(offset + (geometry.reserved_sectors + NUM_FATS * geometry.fat_sectors) * SECTOR)
        out.write(
            _directory_bytes(root, None, label_bytes, stamp).ljust(
                geometry.root_dir_sectors * SECTOR, b"\0"
            )
        )


def _clustered(directories: list[_Node]) -> Iterator[_Node]:
    """Every directory and file that owns clusters, in cluster order."""
    for directory in directories:
        if directory.cluster_count:
            yield directory
        for child in _ordered(directory):
            if child.data is not None and child.cluster_count:
                yield child


def fat_size_for(files: Mapping[str, bytes]) -> int:
    """A sensible ESP size in bytes for `files`: whole MiB, at least MIN_ESP_SIZE (so
    FAT32), and half as much free space again as the files and directories take."""
    root = _tree(files)
    payload = sum(
        align_up(len(node.data), 4096) for node in _all_nodes(root) if node.data is not None
    )
    payload += sum(4096 for node in _all_nodes(root) if node.data is None)
    size = max(MIN_ESP_SIZE, align_up(payload * 3 // 2 + MIB, MIB))
    while True:
        _, geometry, end = _plan(files, size, has_label=True)
        if end - 2 <= geometry.clusters:
            return size
        size += MIB


def _all_nodes(node: _Node) -> Iterator[_Node]:
    yield node
    for child in node.children.values():
        yield from _all_nodes(child)
