"""ext4 inodes and extent trees.

Facts used (kernel Documentation/filesystems/ext4/inodes.rst and ifork.rst): a 256-byte inode
whose first 128 bytes are the classic ext2 fields and whose extra fields (i_extra_isize = 32)
hold the checksum's high half, the *_extra timestamps (2 epoch bits + nanoseconds << 2) and
crtime. i_block (60 bytes) holds a fast symlink's target, a device number, or the root of
an extent tree: a 12-byte header (magic 0xF30A) and up to four 12-byte entries; deeper levels
live in blocks of 340 entries followed by a crc32c tail.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from oci2vm.fs.ext4.layout import BLOCK_SIZE, EXTRA_ISIZE, INODE_SIZE, MASK32, crc32c
from oci2vm.util.units import ceil_div

EXTENT_MAGIC = 0xF30A
MAX_EXTENT_LEN = 32768  # longest initialized extent
ROOT_ENTRIES = 4
BLOCK_ENTRIES = (BLOCK_SIZE - 12) // 12  # 340
EXTENT_TAIL_OFFSET = 12 + 12 * BLOCK_ENTRIES

FL_INDEX = 0x1000  # hashed directory
FL_EXTENTS = 0x80000

MIN_TIME = -(1 << 31)
# The encoding reaches 2446, but e2fsck takes epoch 3 with a negative low word (2310 on) for
# a pre-1970 time written by old kernels and offers to "fix" it: clamp below that.
MAX_TIME = (3 << 32) - (1 << 31) - 1


def encode_time(ns: int) -> tuple[int, int]:
    """Return (seconds field, *_extra field) for a time in nanoseconds since the epoch.

    The seconds field is the low 32 bits read as signed; the extra field adds two epoch
    bits (multiples of 2**32 seconds) and the nanoseconds shifted left by two.
    """
    sec, nsec = divmod(ns, 1_000_000_000)
    if 0 <= sec < 1 << 31:
        return sec, nsec << 2
    if sec < MIN_TIME:
        sec, nsec = MIN_TIME, 0
    elif sec > MAX_TIME:
        sec, nsec = MAX_TIME, 999_999_999
    low = sec & MASK32
    signed_low = low - (1 << 32) if low >= 1 << 31 else low
    epoch = ((sec - signed_low) >> 32) & 3
    return low, epoch | (nsec << 2)


# Files of one layer tend to share a time, and every inode the filesystem's crtime.
encode_time_cached = functools.lru_cache(maxsize=4096)(encode_time)


def decode_time(low: int, extra: int) -> int:
    """Nanoseconds since the epoch from the fields encode_time() writes."""
    signed_low = low - (1 << 32) if low >= 1 << 31 else low
    return (signed_low + ((extra & 3) << 32)) * 1_000_000_000 + (extra >> 2)


def encode_rdev(major: int, minor: int) -> bytes:
    """i_block for a device: the old 16-bit form in word 0 when it fits, else the new
    32-bit form in word 1 (as the kernel's ext4 does)."""
    if major < 256 and minor < 256:
        return struct.pack("<I", (major << 8) | minor).ljust(60, b"\0")
    new = (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)
    return struct.pack("<II", 0, new & MASK32).ljust(60, b"\0")


@dataclass(frozen=True, slots=True)
class Extent:
    logical: int  # first file block
    physical: int  # first disk block
    length: int


def split_extents(runs: list[tuple[int, int, int]]) -> list[Extent]:
    """(logical, physical, length) runs -> extents no longer than MAX_EXTENT_LEN."""
    out: list[Extent] = []
    for logical, physical, length in runs:
        done = 0
        while done < length:
            n = min(MAX_EXTENT_LEN, length - done)
            out.append(Extent(logical + done, physical + done, n))
            done += n
    return out


# The extent tree's records (ifork.rst): struct ext4_extent_header, ext4_extent and
# ext4_extent_idx are 12 bytes each, ext4_extent_tail 4.
_EXTENT_HEADER = "<HHHHI"  # eh_magic, eh_entries, eh_max, eh_depth, eh_generation
assert struct.calcsize(_EXTENT_HEADER) == 12
_EXTENT = "<IHHI"  # ee_block, ee_len, ee_start_hi, ee_start_lo
assert struct.calcsize(_EXTENT) == 12
_EXTENT_IDX = "<IIHH"  # ei_block, ei_leaf_lo, ei_leaf_hi, ei_unused
assert struct.calcsize(_EXTENT_IDX) == 12
_EXTENT_TAIL = "<I"  # et_checksum
assert struct.calcsize(_EXTENT_TAIL) == 4


def _header(entries: int, max_entries: int, depth: int) -> bytes:
    return struct.pack(_EXTENT_HEADER, EXTENT_MAGIC, entries, max_entries, depth, 0)


def _leaf(e: Extent) -> bytes:
    return struct.pack(_EXTENT, e.logical, e.length, e.physical >> 32, e.physical & MASK32)


def _index(logical: int, block: int) -> bytes:
    return struct.pack(_EXTENT_IDX, logical, block & MASK32, block >> 32, 0)


# An extent leaf entry: ee_block, ee_len, ee_start_hi, ee_start_lo.
LEAF = struct.Struct(_EXTENT)
assert LEAF.size == 12  # struct ext4_extent


def pack_leaves(runs: Iterable[tuple[int, int, int]]) -> bytes:
    """(logical, physical, length) runs as on-disk extent leaf entries, split at
    MAX_EXTENT_LEN: the compact form a writer keeps per file until its inode is packed."""
    out = bytearray()
    for logical, physical, length in runs:
        done = 0
        while done < length:
            n = min(MAX_EXTENT_LEN, length - done)
            start = physical + done
            out += LEAF.pack(logical + done, n, start >> 32, start & MASK32)
            done += n
    return bytes(out)


def unpack_leaves(packed: bytes) -> list[Extent]:
    return [Extent(lg, (hi << 32) | lo, n) for lg, n, hi, lo in LEAF.iter_unpack(packed)]


def leaves_length(packed: bytes) -> int:
    """The blocks the packed leaf entries map."""
    return sum(n for _lg, n, _hi, _lo in LEAF.iter_unpack(packed))


@dataclass(slots=True)
class ExtentTree:
    i_block: bytes  # 60 bytes
    blocks: list[tuple[int, bytes]]  # (disk block, contents) of the index and leaf blocks


def extent_tree_blocks(extents: int) -> int:
    """How many index and leaf blocks build_extent_tree() allocates for `extents`."""
    blocks = 0
    level = extents
    while level > ROOT_ENTRIES:
        level = ceil_div(level, BLOCK_ENTRIES)
        blocks += level
    return blocks


INLINE_LEAVES_SIZE = ROOT_ENTRIES * LEAF.size  # packed leaves that fit in the inode


def inline_leaves(packed: bytes) -> bytes:
    """i_block holding at most four packed leaf entries (see INLINE_LEAVES_SIZE)."""
    return (_header(len(packed) // LEAF.size, ROOT_ENTRIES, 0) + packed).ljust(60, b"\0")


def leaves_tree(packed: bytes, alloc_block: Callable[[], int], ino_seed: int) -> ExtentTree:
    """build_extent_tree() for extents packed by pack_leaves(); those that fit the inode
    (nearly every file) go there as they are."""
    if len(packed) <= INLINE_LEAVES_SIZE:
        return ExtentTree(inline_leaves(packed), [])
    return build_extent_tree(unpack_leaves(packed), alloc_block, ino_seed)


def build_extent_tree(
    extents: list[Extent], alloc_block: Callable[[], int], ino_seed: int
) -> ExtentTree:
    """The extent tree for `extents` (sorted by logical block): in the inode when four
    entries suffice, else leaf blocks of 340 entries under as many index levels as needed."""
    if len(extents) <= ROOT_ENTRIES:
        body = b"".join(_leaf(e) for e in extents)
        return ExtentTree((_header(len(extents), ROOT_ENTRIES, 0) + body).ljust(60, b"\0"), [])
    level: list[tuple[int, bytes]] = [(e.logical, _leaf(e)) for e in extents]
    depth = 0
    blocks: list[tuple[int, bytes]] = []
    while len(level) > ROOT_ENTRIES:
        upper: list[tuple[int, bytes]] = []
        for i in range(0, len(level), BLOCK_ENTRIES):
            chunk = level[i : i + BLOCK_ENTRIES]
            node = bytearray(BLOCK_SIZE)
            node[0:12] = _header(len(chunk), BLOCK_ENTRIES, depth)
            body = b"".join(entry for _, entry in chunk)
            node[12 : 12 + len(body)] = body
            csum = crc32c(ino_seed, bytes(node[:EXTENT_TAIL_OFFSET]))
            struct.pack_into(_EXTENT_TAIL, node, EXTENT_TAIL_OFFSET, csum)
            block = alloc_block()
            blocks.append((block, bytes(node)))
            upper.append((chunk[0][0], _index(chunk[0][0], block)))
        level = upper
        depth += 1
    body = b"".join(entry for _, entry in level)
    return ExtentTree((_header(len(level), ROOT_ENTRIES, depth) + body).ljust(60, b"\0"), blocks)


@dataclass(slots=True)
class InodeFields:
    mode: int  # i_mode: type and permission bits
    uid: int
    gid: int
    size: int
    links: int
    blocks_512: int  # i_blocks in 512-byte units
    flags: int
    i_block: bytes
    atime_ns: int
    ctime_ns: int
    mtime_ns: int
    crtime_ns: int
    file_acl: int = 0  # xattr block
    ibody_xattrs: bytes = b""  # from offset 128 + EXTRA_ISIZE to the end


# The fixed part of an inode up to i_crtime_extra (0x00-0x98), one struct.
_INODE = struct.Struct("<HHIIIIIHHIII60sIIIIHHHHHHHHIIIII")
# inodes.rst: i_crtime_extra is the le32 at 0x94, i_version_hi follows at 0x98.
assert _INODE.size == 0x98 <= 128 + EXTRA_ISIZE <= INODE_SIZE
_CSUM_HALF = struct.Struct("<H")


def pack_inode(f: InodeFields, ino_seed: int) -> bytes:
    """The 256-byte on-disk inode with its crc32c (seeded with the inode number and
    generation, computed with both checksum halves zero)."""
    raw = bytearray(INODE_SIZE)
    pack_inode_into(raw, 0, f, ino_seed)
    return bytes(raw)


def pack_inode_into(table: bytearray, at: int, f: InodeFields, ino_seed: int) -> None:
    """pack_inode() into table[at : at + INODE_SIZE], which must be zeros: a writer packs
    a run of inodes into one buffer, written at once."""
    # Most inodes share one time for three fields, and every one the same crtime.
    mtime = encode_time(f.mtime_ns)
    atime = mtime if f.atime_ns == f.mtime_ns else encode_time(f.atime_ns)
    ctime = mtime if f.ctime_ns == f.mtime_ns else encode_time(f.ctime_ns)
    pack_encoded_into(
        table, at, ino_seed, f.mode, f.uid, f.gid, f.size, f.links, f.blocks_512, f.flags,
        f.i_block, atime, ctime, mtime, encode_time_cached(f.crtime_ns), f.file_acl,
        f.ibody_xattrs,
    )  # fmt: skip


def pack_encoded_into(
    table: bytearray,
    at: int,
    ino_seed: int,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    links: int,
    blocks_512: int,
    flags: int,
    i_block: bytes,
    atime: tuple[int, int],
    ctime: tuple[int, int],
    mtime: tuple[int, int],
    crtime: tuple[int, int],
    file_acl: int = 0,
    ibody_xattrs: bytes = b"",
) -> None:
    """pack_inode_into() from the fields as positional values, times already encoded
    (encode_time): what a writer packing thousands of inodes in one loop calls."""
    _INODE.pack_into(
        table,
        at,
        mode,  # i_mode
        uid & 0xFFFF,  # i_uid
        size & MASK32,  # i_size_lo
        atime[0],  # i_atime
        ctime[0],  # i_ctime
        mtime[0],  # i_mtime
        0,  # i_dtime
        gid & 0xFFFF,  # i_gid
        links,  # i_links_count
        blocks_512 & MASK32,  # i_blocks_lo
        flags,  # i_flags
        0,  # l_i_version
        i_block,  # i_block[15]
        0,  # i_generation
        file_acl & MASK32,  # i_file_acl_lo
        size >> 32,  # i_size_high
        0,  # i_obso_faddr
        (blocks_512 >> 32) & 0xFFFF,  # l_i_blocks_high
        file_acl >> 32,  # l_i_file_acl_high
        (uid >> 16) & 0xFFFF,  # l_i_uid_high
        (gid >> 16) & 0xFFFF,  # l_i_gid_high
        0,  # l_i_checksum_lo, below
        0,  # l_i_reserved
        EXTRA_ISIZE,  # i_extra_isize
        0,  # i_checksum_hi, below
        ctime[1],  # i_ctime_extra
        mtime[1],  # i_mtime_extra
        atime[1],  # i_atime_extra
        crtime[0],  # i_crtime
        crtime[1],  # i_crtime_extra
    )
    if ibody_xattrs:
        start = at + 128 + EXTRA_ISIZE
        table[start : start + len(ibody_xattrs)] = ibody_xattrs
    with memoryview(table) as view:
        csum = crc32c(ino_seed, view[at : at + INODE_SIZE])
    _CSUM_HALF.pack_into(table, at + 0x7C, csum & 0xFFFF)  # l_i_checksum_lo
    _CSUM_HALF.pack_into(table, at + 0x82, csum >> 16)  # i_checksum_hi
