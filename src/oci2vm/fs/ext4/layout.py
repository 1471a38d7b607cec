"""ext4 geometry: constants, checksums, sparse_super groups, the block allocator, the size
rule, and the superblock / group descriptor records.

Layout facts (kernel Documentation/filesystems/ext4/, e2fsprogs lib/ext2fs/ext2_fs.h):
4 KiB blocks, first data block 0, the primary superblock at byte 1024 of block 0 and its
group descriptor table (64-byte descriptors with 64bit) from block 1; backups of both at the
start of groups 1 and powers of 3, 5 and 7 (sparse_super). With flex_bg a group's bitmaps and
inode table may live anywhere in the filesystem. metadata_csum checksums are crc32c (Castagnoli)
without the final inversion, seeded with crc32c(~0, s_uuid) except for the superblock's own.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass

from oci2vm.errors import Oci2vmError
from oci2vm.fs import EXT4_MAGIC
from oci2vm.util import crc as _crc
from oci2vm.util.units import MIB, align_up, ceil_div

BLOCK_SIZE = 4096
BLOCKS_PER_GROUP = 8 * BLOCK_SIZE  # one bitmap block covers a group
INODE_SIZE = 256
INODES_PER_BLOCK = BLOCK_SIZE // INODE_SIZE
MAX_INODES_PER_GROUP = 8 * BLOCK_SIZE
DESC_SIZE = 64
DESCS_PER_BLOCK = BLOCK_SIZE // DESC_SIZE
LOG_GROUPS_PER_FLEX = 4
FIRST_INO = 11  # inodes 1..10 are reserved
ROOT_INO = 2
JOURNAL_INO = 8
LOST_FOUND_INO = 11
INODE_RATIO = 16384  # bytes per inode, as mke2fs's default for ext4
MIN_FREE_BYTES = 256 * MIB
MIN_BLOCKS = 2048  # 8 MiB: mke2fs gives smaller filesystems no journal; we always have one
# The largest filesystem written: 2**32 blocks, 16 TiB. A limit of ours, not of ext4 (64bit
# addresses 2**64 blocks): a host's ext4 cannot hold a larger image file (its files end at
# 16 TiB - 4 KiB), and beyond it the descriptor table copied after every superblock copy,
# which holds no meta_bg, grows past its 2,048 blocks here. Every count below fits its field
# up to it (s_inodes_count capped at 2**32 - 1, see geometry()).
MAX_BLOCKS = 1 << 32
MAX_SIZE = MAX_BLOCKS * BLOCK_SIZE
MAX_INODES = (1 << 32) - 1  # s_inodes_count is 32 bits
MAX_GROUP_NR = 0xFFFF  # s_block_group_nr is 16 bits: later copies say 65535, as e2fsprogs'

# s_feature_compat / incompat / ro_compat bits
COMPAT_HAS_JOURNAL = 0x4
COMPAT_EXT_ATTR = 0x8
COMPAT_DIR_INDEX = 0x20
INCOMPAT_FILETYPE = 0x2
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_FLEX_BG = 0x200
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_LARGE_FILE = 0x2
RO_COMPAT_HUGE_FILE = 0x8
RO_COMPAT_DIR_NLINK = 0x20
RO_COMPAT_EXTRA_ISIZE = 0x40
RO_COMPAT_METADATA_CSUM = 0x400

FEATURE_COMPAT = COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX
FEATURE_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG
FEATURE_RO_COMPAT = (
    RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE
    | RO_COMPAT_METADATA_CSUM
)

HASH_HALF_MD4 = 1  # s_def_hash_version
FLAGS_UNSIGNED_HASH = 0x2  # s_flags: names hash as unsigned chars
DEFAULT_MOUNT_XATTR_USER_ACL = 0x0004 | 0x0008  # EXT4_DEFM_XATTR_USER | EXT4_DEFM_ACL
BG_INODE_ZEROED = 0x4  # bg_flags: the inode table reads as zeros
EXTRA_ISIZE = 32  # i_extra_isize: fields up to i_projid

MASK32 = 0xFFFFFFFF


def crc32c(seed: int, data: bytes | bytearray | memoryview) -> int:
    """ext4's crc32c: seed in, no final inversion (the library does the standard one)."""
    return ~_crc.crc32c(data, ~seed & MASK32) & MASK32


def fs_csum_seed(fs_uuid: uuidlib.UUID) -> int:
    return crc32c(MASK32, fs_uuid.bytes)


def inode_csum_seed(fs_seed: int, ino: int, generation: int = 0) -> int:
    """crc32c of the inode number then the generation, from the filesystem's seed (one
    call over both: the checksum of a concatenation continues from the first part's)."""
    return crc32c(fs_seed, struct.pack("<II", ino, generation))


def is_backup_group(group: int) -> bool:
    """sparse_super: group 0 and 1 and powers of 3, 5, 7 carry a superblock copy."""
    if group <= 1:
        return True
    for base in (3, 5, 7):
        n = base
        while n < group:
            n *= base
        if n == group:
            return True
    return False


def backup_groups(groups: int) -> list[int]:
    """Those of groups 0 .. groups-1 that carry a superblock copy, ascending (found without
    visiting every group)."""
    found = {g for g in (0, 1) if g < groups}
    for base in (3, 5, 7):
        power = base
        while power < groups:
            found.add(power)
            power *= base
    return sorted(found)


def gdt_blocks_for(groups: int) -> int:
    return ceil_div(groups, DESCS_PER_BLOCK)


def size_text(size: int) -> str:
    """A size for messages: whole MiB, GiB or TiB when it is one, else bytes."""
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (MIB, "MiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def default_journal_blocks(blocks_count: int) -> int:
    """The journal size mke2fs picks for a filesystem of this many 4 KiB blocks."""
    if blocks_count < 2048:
        return 0
    for limit, size in (
        (32768, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
    ):
        if blocks_count < limit:
            return size
    return 262144


def inodes_per_group_for(wanted_inodes: int, groups: int) -> int:
    """Inodes per group: enough for `wanted_inodes`, whole inode-table blocks."""
    per_group = ceil_div(max(wanted_inodes, 1), groups)
    return align_up(per_group, INODES_PER_BLOCK)


def wanted_inodes(blocks_count: int, used_inodes: int, by_ratio: bool = True) -> int:
    """One inode per INODE_RATIO bytes, and never fewer than the tree needs plus room."""
    room = used_inodes + max(used_inodes // 4, 256)
    return max(blocks_count * BLOCK_SIZE // INODE_RATIO, room) if by_ratio else room


def headroom_blocks(used_blocks: int) -> int:
    return max(ceil_div(used_blocks, 4), MIN_FREE_BYTES // BLOCK_SIZE)


def round_blocks(blocks: int) -> int:
    """Round a block count up to whole MiB."""
    return align_up(blocks, MIB // BLOCK_SIZE)


def blocks_for_inodes(inodes: int) -> int:
    """The fewest blocks whose groups can number `inodes` inodes (MAX_INODES_PER_GROUP
    each; the last group may be short), whole MiB."""
    groups = ceil_div(inodes, MAX_INODES_PER_GROUP)
    return round_blocks((groups - 1) * BLOCKS_PER_GROUP + 1)


def _estimate_used_blocks(data_size: int, inode_count: int, blocks_count: int) -> int:
    """A generous estimate of the blocks a tree of this shape uses in a filesystem of
    `blocks_count` blocks: data rounded up per file, directories, inode tables (as few as
    a tight size gets), bitmaps, descriptor tables and their backups, the journal; and
    never fewer than the groups its inodes need."""
    inodes = inode_count + FIRST_INO + 1
    room = wanted_inodes(blocks_count, inodes, by_ratio=False)
    groups = max(ceil_div(blocks_count, BLOCKS_PER_GROUP), ceil_div(room, MAX_INODES_PER_GROUP))
    ipg = inodes_per_group_for(room, groups)
    backups = len(backup_groups(groups))
    data = ceil_div(data_size, BLOCK_SIZE) + inode_count
    dirs = ceil_div(inode_count * 64, BLOCK_SIZE) + inode_count // 8
    itables = groups * ipg // INODES_PER_BLOCK
    used = (
        data
        + dirs
        + itables
        + 2 * groups
        + backups * (1 + gdt_blocks_for(groups))
        + default_journal_blocks(blocks_count)
        + 64
    )
    return max(used, blocks_for_inodes(room))


def required_size(data_size: int, inode_count: int) -> int:
    """The smallest size in bytes a filesystem needs for `data_size` bytes of file data in
    `inode_count` entries (an upper-bound estimate: use it to reject a --size early)."""
    blocks = round_blocks(_estimate_used_blocks(data_size, inode_count, MIN_BLOCKS))
    blocks = max(blocks, MIN_BLOCKS)
    for _ in range(20):
        need = round_blocks(_estimate_used_blocks(data_size, inode_count, blocks))
        if need <= blocks:
            return blocks * BLOCK_SIZE
        blocks = need
    return blocks * BLOCK_SIZE


def default_size(data_size: int, inode_count: int) -> int:
    """The size the writer picks when none is given: content and metadata plus 25 % free
    space, at least 256 MiB free (estimated from the same upper bounds as required_size)."""
    used = required_size(data_size, inode_count) // BLOCK_SIZE
    return round_blocks(used + headroom_blocks(used)) * BLOCK_SIZE


def check_max_size(size: int) -> None:
    """Raise a one-line error when `size` is beyond the largest filesystem written."""
    if size > MAX_SIZE:
        raise Oci2vmError(
            f"--size {size} bytes is beyond what oci2vm's ext4 holds: at most "
            f"{size_text(MAX_SIZE)} ({MAX_SIZE} bytes); pass a smaller --size"
        )


def check_size(size: int, data_size: int, inode_count: int) -> None:
    """Raise a one-line error when `size` is beyond the largest filesystem written or
    cannot hold the expected content."""
    check_max_size(size)
    need = required_size(data_size, inode_count)
    if size < need:
        raise Oci2vmError(
            f"--size {size} bytes is too small for this image: it needs at least "
            f"{ceil_div(need, MIB)} MiB; pass a larger --size or leave it out"
        )


Mark = tuple[int, int, tuple[int, int] | None]  # BlockAllocator.mark()


class BlockAllocator:
    """Hands out blocks in ascending order, stepping over each sparse_super group's
    superblock and descriptor-table copy (`reserved_gdt` blocks are kept free after every
    superblock, enough for the largest descriptor table the filesystem may get), up to
    `limit`: the given size (`given`), else the largest filesystem written."""

    def __init__(self, reserved_gdt: int, limit: int, *, given: bool) -> None:
        self.reserved_gdt = reserved_gdt
        self.limit = limit
        self.given = given
        self.next = 1 + reserved_gdt
        # When set, every run handed out is recorded in `allocated`, ascending, adjacent
        # runs merged (so the inode tables of every group take one entry, not one each).
        self.recording = False
        self.allocated: list[tuple[int, int]] = []

    def _record(self, start: int, length: int) -> None:
        allocated = self.allocated
        if allocated and allocated[-1][0] + allocated[-1][1] == start:
            allocated[-1] = (allocated[-1][0], allocated[-1][1] + length)
        else:
            allocated.append((start, length))

    def mark(self) -> Mark:
        """Where allocation stands, for rewind()."""
        return self.next, len(self.allocated), self.allocated[-1] if self.allocated else None

    def rewind(self, mark: Mark) -> None:
        """Give back everything handed out since mark() returned `mark`."""
        self.next, length, last = mark
        del self.allocated[length:]
        if last is not None:
            self.allocated[-1] = last

    def alloc(self, count: int) -> list[tuple[int, int]]:
        """Return `count` blocks as (start, length) runs, contiguous where possible."""
        runs: list[tuple[int, int]] = []
        while count > 0:
            group, index = divmod(self.next, BLOCKS_PER_GROUP)
            if index < 1 + self.reserved_gdt and is_backup_group(group):
                self.next = group * BLOCKS_PER_GROUP + 1 + self.reserved_gdt
                continue
            take = min(count, BLOCKS_PER_GROUP - index)
            if runs and runs[-1][0] + runs[-1][1] == self.next:
                runs[-1] = (runs[-1][0], runs[-1][1] + take)
            else:
                runs.append((self.next, take))
            self.next += take
            count -= take
        self._check_limit()
        if self.recording:
            for start, length in runs:
                self._record(start, length)
        return runs

    def alloc_contiguous(self, count: int) -> int:
        """Return the first of `count` adjacent blocks (count < BLOCKS_PER_GROUP)."""
        reserved = 1 + self.reserved_gdt
        while True:
            group, index = divmod(self.next, BLOCKS_PER_GROUP)
            if index < reserved and is_backup_group(group):
                self.next = group * BLOCKS_PER_GROUP + reserved
                continue
            following = group + 1
            if following * BLOCKS_PER_GROUP < self.next + count and is_backup_group(following):
                self.next = following * BLOCKS_PER_GROUP + reserved
                continue
            start = self.next
            self.next += count
            self._check_limit()
            if self.recording:
                self._record(start, count)
            return start

    def end_after(self, count: int) -> int:
        """Where the next `count` blocks would end (exclusive), as alloc() would hand them
        out, stepping over reserved areas; nothing is allocated."""
        pos = self.next
        while count > 0:
            group, index = divmod(pos, BLOCKS_PER_GROUP)
            if index < 1 + self.reserved_gdt and is_backup_group(group):
                pos = group * BLOCKS_PER_GROUP + 1 + self.reserved_gdt
                continue
            take = min(count, BLOCKS_PER_GROUP - index)
            pos += take
            count -= take
        return pos

    def check_fits(self, end: int) -> None:
        """Raise the size error unless blocks up to `end` (exclusive) fit the limit."""
        if end > self.limit:
            raise self.too_big()

    def too_big(self) -> Oci2vmError:
        if self.given:
            room = size_text(self.limit * BLOCK_SIZE)
            return Oci2vmError(
                f"the image does not fit in its root filesystem's {room} (what --size leaves "
                "it): pass a larger --size or leave it out"
            )
        return Oci2vmError(
            f"the image needs more than {size_text(self.limit * BLOCK_SIZE)}, the most "
            "oci2vm's ext4 holds: make the image smaller"
        )

    def _check_limit(self) -> None:
        if self.next > self.limit:
            raise self.too_big()

    def alloc_one(self) -> int:
        return self.alloc(1)[0][0]


@dataclass(frozen=True, slots=True)
class Geometry:
    blocks_count: int
    groups: int
    inodes_per_group: int
    gdt_blocks: int

    @property
    def inodes_count(self) -> int:
        return self.groups * self.inodes_per_group

    @property
    def itable_blocks(self) -> int:
        return self.inodes_per_group // INODES_PER_BLOCK

    def group_blocks(self, group: int) -> int:
        return min(BLOCKS_PER_GROUP, self.blocks_count - group * BLOCKS_PER_GROUP)


def geometry(blocks_count: int, used_inodes: int, by_ratio: bool = True) -> Geometry:
    """The groups of `blocks_count` blocks with inodes for `used_inodes` and room (one per
    INODE_RATIO bytes if `by_ratio`), within what a group and s_inodes_count can number."""
    groups = ceil_div(blocks_count, BLOCKS_PER_GROUP)
    ipg = inodes_per_group_for(wanted_inodes(blocks_count, used_inodes, by_ratio), groups)
    most = min(MAX_INODES_PER_GROUP, MAX_INODES // groups // INODES_PER_BLOCK * INODES_PER_BLOCK)
    if ipg > most:
        ipg = most
        if ipg * groups < used_inodes:
            need = blocks_for_inodes(used_inodes) * BLOCK_SIZE
            raise Oci2vmError(
                f"{used_inodes} inodes do not fit in {blocks_count * BLOCK_SIZE} bytes of "
                f"ext4: they need at least {size_text(need)}; pass a larger --size or leave "
                "it out"
            )
    return Geometry(blocks_count, groups, ipg, gdt_blocks_for(groups))


# struct ext4_super_block (super.rst) is 1024 bytes; pack_superblock() fills it in runs of
# adjacent fields, each asserted to end where the spec puts the field that follows it.
SUPERBLOCK_SIZE = 1024
_SB_BASE = "<13IHhHHHHIIIIHH"  # s_inodes_count (0x0) .. s_def_resgid (0x52)
assert struct.calcsize(_SB_BASE) == 0x54  # s_first_ino
_SB_DYNAMIC = "<IHHIII"  # s_first_ino (0x54) .. s_feature_ro_compat (0x64)
assert 0x54 + struct.calcsize(_SB_DYNAMIC) == 0x68  # s_uuid
_SB_HASH = "<BBHII"  # s_def_hash_version (0xFC) .. s_first_meta_bg (0x104)
assert 0xFC + struct.calcsize(_SB_HASH) == 0x108  # s_mkfs_time
_SB_JNL_BLOCKS = "<17I"  # s_jnl_blocks[17] (0x10C)
assert 0x10C + struct.calcsize(_SB_JNL_BLOCKS) == 0x150  # s_blocks_count_hi
_SB_64BIT = "<IIIHHI"  # s_blocks_count_hi (0x150) .. s_flags (0x160)
assert 0x150 + struct.calcsize(_SB_64BIT) == 0x164  # s_raid_stride
_SB_FLEX = "<BB"  # s_log_groups_per_flex (0x174), s_checksum_type (0x175)
assert 0x174 + struct.calcsize(_SB_FLEX) == 0x176  # a pad byte (s_encryption_level of late)


@dataclass(slots=True)
class SuperblockInfo:
    geometry: Geometry
    free_blocks: int
    free_inodes: int
    uuid: uuidlib.UUID
    hash_seed: uuidlib.UUID
    fs_time: int
    label: bytes
    journal_blocks: tuple[int, ...]  # s_jnl_blocks: i_block words, i_size_high, i_size


def _sb_time(seconds: int) -> tuple[int, int]:
    """A superblock time: unsigned seconds, their bits past 32 in an s_*_time_hi byte (as
    mke2fs writes them; a time past 2106 must not wrap to one in the past)."""
    stamp = min(max(seconds, 0), (1 << 40) - 1)
    return stamp & MASK32, stamp >> 32


def pack_superblock(info: SuperblockInfo, group: int) -> bytes:
    """The 1024-byte superblock (its copy in `group` differs only in s_block_group_nr)."""
    geo = info.geometry
    sb = bytearray(SUPERBLOCK_SIZE)
    fs_time, fs_time_hi = _sb_time(info.fs_time)
    struct.pack_into(
        _SB_BASE,
        sb,
        0x0,
        geo.inodes_count,  # s_inodes_count
        geo.blocks_count & MASK32,  # s_blocks_count_lo
        0,  # s_r_blocks_count_lo
        info.free_blocks & MASK32,  # s_free_blocks_count_lo
        info.free_inodes,  # s_free_inodes_count
        0,  # s_first_data_block
        2,  # s_log_block_size: 1024 << 2
        2,  # s_log_cluster_size
        BLOCKS_PER_GROUP,  # s_blocks_per_group
        BLOCKS_PER_GROUP,  # s_clusters_per_group
        geo.inodes_per_group,  # s_inodes_per_group
        0,  # s_mtime
        fs_time,  # s_wtime
        0,  # s_mnt_count
        -1,  # s_max_mnt_count
        EXT4_MAGIC,  # s_magic
        1,  # s_state: clean
        1,  # s_errors: continue
        0,  # s_minor_rev_level
        fs_time,  # s_lastcheck
        0,  # s_checkinterval
        0,  # s_creator_os: Linux
        1,  # s_rev_level: dynamic
        0,  # s_def_resuid
        0,  # s_def_resgid
    )
    struct.pack_into(
        _SB_DYNAMIC,
        sb,
        0x54,
        FIRST_INO,  # s_first_ino
        INODE_SIZE,  # s_inode_size
        min(group, MAX_GROUP_NR),  # s_block_group_nr
        FEATURE_COMPAT,
        FEATURE_INCOMPAT,
        FEATURE_RO_COMPAT,
    )
    sb[0x68:0x78] = info.uuid.bytes  # s_uuid
    sb[0x78:0x88] = info.label[:16].ljust(16, b"\0")  # s_volume_name
    struct.pack_into("<I", sb, 0xE0, JOURNAL_INO)  # s_journal_inum
    sb[0xEC:0xFC] = info.hash_seed.bytes  # s_hash_seed, four le32 words
    struct.pack_into(
        _SB_HASH,
        sb,
        0xFC,
        HASH_HALF_MD4,  # s_def_hash_version
        1,  # s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
        DESC_SIZE,  # s_desc_size
        DEFAULT_MOUNT_XATTR_USER_ACL,  # s_default_mount_opts
        0,  # s_first_meta_bg
    )
    struct.pack_into("<I", sb, 0x108, fs_time)  # s_mkfs_time
    # s_wtime_hi, s_mtime_hi, s_mkfs_time_hi, s_lastcheck_hi
    struct.pack_into("<4B", sb, 0x274, fs_time_hi, 0, fs_time_hi, fs_time_hi)
    struct.pack_into(_SB_JNL_BLOCKS, sb, 0x10C, *info.journal_blocks)  # s_jnl_blocks
    struct.pack_into(
        _SB_64BIT,
        sb,
        0x150,
        geo.blocks_count >> 32,  # s_blocks_count_hi
        0,  # s_r_blocks_count_hi
        info.free_blocks >> 32,  # s_free_blocks_count_hi
        EXTRA_ISIZE,  # s_min_extra_isize
        EXTRA_ISIZE,  # s_want_extra_isize
        FLAGS_UNSIGNED_HASH,  # s_flags
    )
    struct.pack_into(_SB_FLEX, sb, 0x174, LOG_GROUPS_PER_FLEX, 1)  # s_checksum_type: crc32c
    struct.pack_into("<I", sb, 0x3FC, crc32c(MASK32, bytes(sb[:0x3FC])))  # s_checksum
    return bytes(sb)


# struct ext4_group_desc (group_descr.rst) is DESC_SIZE = 64 bytes with 64bit: the 32-byte
# classic descriptor, then the high halves up to bg_reserved (0x3C, padding to 0x40).
_GD_LO = "<IIIHHHHIHHHH"  # bg_block_bitmap_lo (0x0) .. bg_checksum (0x1E)
assert struct.calcsize(_GD_LO) == 0x20  # bg_block_bitmap_hi
_GD_HI = "<IIIHHHHIHH"  # bg_block_bitmap_hi (0x20) .. bg_inode_bitmap_csum_hi (0x3A)
assert 0x20 + struct.calcsize(_GD_HI) == 0x3C  # bg_reserved
assert DESC_SIZE == 0x40


@dataclass(slots=True)
class GroupDesc:
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free_blocks: int
    free_inodes: int
    used_dirs: int
    itable_unused: int
    block_bitmap_csum: int
    inode_bitmap_csum: int


def pack_group_desc(desc: GroupDesc, group: int, fs_seed: int) -> bytes:
    raw = bytearray(DESC_SIZE)
    struct.pack_into(
        _GD_LO,
        raw,
        0x0,
        desc.block_bitmap & MASK32,  # bg_block_bitmap_lo
        desc.inode_bitmap & MASK32,  # bg_inode_bitmap_lo
        desc.inode_table & MASK32,  # bg_inode_table_lo
        desc.free_blocks & 0xFFFF,  # bg_free_blocks_count_lo
        desc.free_inodes & 0xFFFF,  # bg_free_inodes_count_lo
        desc.used_dirs & 0xFFFF,  # bg_used_dirs_count_lo
        BG_INODE_ZEROED,  # bg_flags
        0,  # bg_exclude_bitmap_lo
        desc.block_bitmap_csum & 0xFFFF,  # bg_block_bitmap_csum_lo
        desc.inode_bitmap_csum & 0xFFFF,  # bg_inode_bitmap_csum_lo
        desc.itable_unused & 0xFFFF,  # bg_itable_unused_lo
        0,  # bg_checksum, below
    )
    struct.pack_into(
        _GD_HI,
        raw,
        0x20,
        desc.block_bitmap >> 32,
        desc.inode_bitmap >> 32,
        desc.inode_table >> 32,
        desc.free_blocks >> 16,
        desc.free_inodes >> 16,
        desc.used_dirs >> 16,
        desc.itable_unused >> 16,
        0,  # bg_exclude_bitmap_hi
        desc.block_bitmap_csum >> 16,
        desc.inode_bitmap_csum >> 16,
    )
    csum = crc32c(crc32c(fs_seed, struct.pack("<I", group)), bytes(raw))
    struct.pack_into("<H", raw, 0x1E, csum & 0xFFFF)  # computed with bg_checksum zero
    return bytes(raw)
