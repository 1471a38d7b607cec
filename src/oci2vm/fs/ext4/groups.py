"""ext4's per-group metadata, streamed: where the writer placed the bitmaps and inode tables
(Placed, Tail), then the block and inode bitmaps, the group descriptor table and the
superblocks (kernel Documentation/filesystems/ext4/group_descr.rst, bitmaps.rst).

Nothing is held per group. Placements are runs of same-sized items laid end to end (one run
per superblock copy stepped over), and each group's bitmaps and descriptor are made when its
turn comes; the descriptor table is copied to group 0 and every sparse_super backup group a
chunk at a time. So memory does not grow with the filesystem's size; time grows by one
64-byte descriptor per group and its copies, as ext4 (and mke2fs) make it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from oci2vm.fs.blockio import BlockWriter
from oci2vm.fs.ext4.inode import Extent
from oci2vm.fs.ext4.layout import (
    BLOCK_SIZE,
    BLOCKS_PER_GROUP,
    INODE_SIZE,
    MAX_INODES_PER_GROUP,
    Geometry,
    GroupDesc,
    SuperblockInfo,
    backup_groups,
    crc32c,
    is_backup_group,
    pack_group_desc,
    pack_superblock,
)
from oci2vm.tree.model import Kind

GDT_CHUNK = 256 * BLOCK_SIZE  # descriptor-table bytes gathered before they are copied out
_ZERO_BLOCK = bytes(BLOCK_SIZE)


class Placed:
    """The first blocks of a sequence of items `stride` blocks long (bitmaps, inode
    tables), as the allocator placed them: runs of items laid end to end, looked up by
    bisection. Memory grows with the runs, not with the items."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.count = 0
        self._first_item: list[int] = []  # per run: its first item, and that item's block
        self._first_block: list[int] = []

    def add(self, block: int, items: int = 1) -> None:
        """Place the next `items` items end to end from `block` on."""
        if items <= 0:
            return
        runs = self._first_item
        if not runs or self[self.count - 1] + self.stride != block:
            runs.append(self.count)
            self._first_block.append(block)
        self.count += items

    def __getitem__(self, item: int) -> int:
        if not 0 <= item < self.count:
            raise IndexError(item)
        run = bisect_right(self._first_item, item) - 1
        return self._first_block[run] + (item - self._first_item[run]) * self.stride


@dataclass(frozen=True, slots=True)
class Tail:
    """Where finish() put the journal, the bitmaps and the inode tables for the final
    geometry."""

    geo: Geometry
    journal: list[Extent]
    block_bitmaps: Placed  # one block per group
    inode_bitmaps: Placed
    itables: Placed  # geo.itable_blocks per group
    end: int  # where the blocks the inodes allocate afterwards will end (exclusive)

    def inode_pos(self, ino: int) -> int:
        """Where inode `ino` goes in its group's table (bytes from the filesystem's start)."""
        group, index = divmod(ino - 1, self.geo.inodes_per_group)
        return self.itables[group] * BLOCK_SIZE + index * INODE_SIZE


def set_bits(bitmap: bytearray, first: int, count: int) -> None:
    end = first + count
    while first < end and first % 8:
        bitmap[first >> 3] |= 1 << (first & 7)
        first += 1
    full = (end - first) // 8
    if full:
        bitmap[first >> 3 : (first >> 3) + full] = b"\xff" * full
        first += full * 8
    while first < end:
        bitmap[first >> 3] |= 1 << (first & 7)
        first += 1


def inode_bitmap(in_use: int, inodes_per_group: int) -> bytes:
    """A group's inode bitmap: its first `in_use` inodes, and the padding past the table."""
    bitmap = bytearray(BLOCK_SIZE)
    set_bits(bitmap, 0, in_use)
    set_bits(bitmap, inodes_per_group, MAX_INODES_PER_GROUP - inodes_per_group)
    return bytes(bitmap)


def _coalesced(runs: Iterator[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Ascending (start, length) runs with those that touch merged: files placed one after
    the other are one run (a million tiny files, a few runs)."""
    current = next(runs, None)
    if current is None:
        return
    start, length = current
    for following, count in runs:
        if following == start + length:
            length += count
        else:
            yield start, length
            start, length = following, count
    yield start, length


def block_bitmaps(geo: Geometry, used: Iterator[tuple[int, int]]) -> Iterator[bytes | None]:
    """Each group's block bitmap in turn, None for one that is all zeros: its superblock
    copy and descriptor table, the blocks of the `used` runs (start, length), which must
    come in ascending order, and past the last block, the padding."""
    used = _coalesced(used)
    pending = next(used, None)
    last = geo.groups - 1
    for group in range(geo.groups):
        base = group * BLOCKS_PER_GROUP
        end = base + BLOCKS_PER_GROUP
        bitmap: bytearray | None = None
        if is_backup_group(group):
            bitmap = bytearray(BLOCK_SIZE)
            set_bits(bitmap, 0, 1 + geo.gdt_blocks)
        while pending is not None and pending[0] < end:
            start, length = pending
            if start < base:
                raise RuntimeError("ext4 blocks were recorded out of order")
            count = min(length, end - start)
            bitmap = bitmap or bytearray(BLOCK_SIZE)
            set_bits(bitmap, start - base, count)
            if count < length:
                pending = (end, length - count)
                break
            pending = next(used, None)
        blocks = geo.group_blocks(group)
        if group == last and blocks < BLOCKS_PER_GROUP:
            bitmap = bitmap or bytearray(BLOCK_SIZE)
            set_bits(bitmap, blocks, BLOCKS_PER_GROUP - blocks)  # padding past the end
        yield None if bitmap is None else bytes(bitmap)
    if pending is not None:
        raise RuntimeError("ext4 blocks were recorded past the filesystem's end")


def write_inode_bitmaps(io: BlockWriter, tail: Tail, used_inodes: int) -> None:
    """Each group's inode bitmap, where it is not all zeros (a group with no inode in use
    has only the padding; one bytes object serves them all)."""
    ipg = tail.geo.inodes_per_group
    unused = inode_bitmap(0, ipg)
    for group in range(tail.geo.groups):
        in_use = max(0, min(ipg, used_inodes - group * ipg))
        bitmap = inode_bitmap(in_use, ipg) if in_use else unused
        if bitmap != _ZERO_BLOCK:
            io.write_at(tail.inode_bitmaps[group] * BLOCK_SIZE, bitmap)


def write_descriptors(
    io: BlockWriter,
    tail: Tail,
    used_inodes: int,
    count_kind: Callable[[Kind, int, int], int],
    used: Iterator[tuple[int, int]],
    fs_seed: int,
) -> int:
    """Write each group's block bitmap (those not all zeros) and the descriptor table,
    in group 0 and every backup group; return the count of free blocks. Inodes 1 ..
    `used_inodes` are in use; `count_kind`
    counts the inodes of a kind among inode numbers first .. end - 1; `used` as for
    block_bitmaps()."""
    geo = tail.geo
    ipg = geo.inodes_per_group
    zero_csum = crc32c(fs_seed, _ZERO_BLOCK)
    unused_csum = crc32c(fs_seed, inode_bitmap(0, ipg)[: ipg // 8])
    table = bytearray()
    written = 0  # descriptor-table bytes written out
    free_blocks = 0
    for group, bitmap in enumerate(block_bitmaps(geo, used)):
        if bitmap is None:
            free, block_csum = BLOCKS_PER_GROUP, zero_csum
        else:
            io.write_at(tail.block_bitmaps[group] * BLOCK_SIZE, bitmap)
            free = BLOCKS_PER_GROUP - int.from_bytes(bitmap, "little").bit_count()
            block_csum = crc32c(fs_seed, bitmap)
        free_blocks += free
        in_use = max(0, min(ipg, used_inodes - group * ipg))
        inode_csum, dirs = unused_csum, 0
        if in_use:
            inode_csum = crc32c(fs_seed, inode_bitmap(in_use, ipg)[: ipg // 8])
            first = group * ipg + 1
            dirs = count_kind(Kind.DIR, first, first + in_use)
        desc = GroupDesc(
            block_bitmap=tail.block_bitmaps[group],
            inode_bitmap=tail.inode_bitmaps[group],
            inode_table=tail.itables[group],
            free_blocks=free,
            free_inodes=ipg - in_use,
            used_dirs=dirs,
            itable_unused=ipg - in_use,
            block_bitmap_csum=block_csum,
            inode_bitmap_csum=inode_csum,
        )
        table += pack_group_desc(desc, group, fs_seed)
        if len(table) >= GDT_CHUNK or group == geo.groups - 1:
            _write_table_chunk(io, geo, written, bytes(table))
            written += len(table)
            table = bytearray()
    return free_blocks


def _write_table_chunk(io: BlockWriter, geo: Geometry, at: int, chunk: bytes) -> None:
    """Bytes `at`.. of the descriptor table, into group 0 and every backup group."""
    for group in backup_groups(geo.groups):
        io.write_at(group * BLOCKS_PER_GROUP * BLOCK_SIZE + BLOCK_SIZE + at, chunk)


def write_superblocks(io: BlockWriter, info: SuperblockInfo) -> None:
    """The superblock, at byte 1024 of group 0 and at the start of every backup group."""
    for group in backup_groups(info.geometry.groups):
        base = group * BLOCKS_PER_GROUP * BLOCK_SIZE
        io.write_at(base + (1024 if group == 0 else 0), pack_superblock(info, group))
