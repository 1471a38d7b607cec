"""Where partitions go: one after another on 1 MiB boundaries, shared by the GPT and MBR
writers and by the disk plan, which fixes every offset before any byte is written.

The last partition (the root) ends where the disk's usable space does, to the 4 KiB block:
no gap is left behind it, since whatever grows partitions at boot (systemd-repart, cloud
growpart) would grow the root into a gap of any size, and the filesystem after it (online,
converting ext4 to meta_bg), on a disk nobody enlarged."""

from __future__ import annotations

from collections.abc import Sequence

from oci2vm.errors import Oci2vmError
from oci2vm.util.units import MIB, SECTOR, align_up

ALIGN_SECTORS = MIB // SECTOR  # every partition starts on a 1 MiB boundary
BLOCK = 4096  # the last partition's size, and the disk's, are whole 4 KiB blocks
BLOCK_SECTORS = BLOCK // SECTOR


def place_partitions(
    sizes: Sequence[int | None],
    *,
    disk_size: int | None = None,
    reserved_tail_sectors: int = 0,
) -> tuple[int, list[tuple[int, int]]]:
    """Place partitions one after another, each starting on a 1 MiB boundary (the first
    at 1 MiB), each `size` bytes rounded up to whole MiB, the last to whole 4 KiB blocks.
    The last size may be None: that partition takes the rest of the disk in whole blocks.
    `reserved_tail_sectors` stay free at the end (the backup GPT). Without `disk_size` the
    disk is the smallest whole number of blocks that fits. Returns (disk_size,
    [(first_lba, last_lba), ...])."""
    if any(size is None for size in sizes[:-1]):
        raise ValueError("only the last partition can take the rest of the disk")
    if disk_size is not None and (disk_size <= 0 or disk_size % SECTOR):
        raise Oci2vmError(f"disk size {disk_size} is not a positive multiple of {SECTOR} bytes")
    fill = bool(sizes) and sizes[-1] is None
    if fill and disk_size is None:
        raise ValueError("a partition that takes the rest of the disk needs a disk size")
    lba = ALIGN_SECTORS
    extents: list[tuple[int, int]] = []
    for number, size in enumerate(sizes, 1):
        if size is None:
            break
        if size <= 0:
            raise Oci2vmError(f"partition size {size} must be positive")
        count = align_up(size, BLOCK if number == len(sizes) else MIB) // SECTOR
        extents.append((lba, lba + count - 1))
        lba += count
    # a partition that takes the rest of the disk gets at least 1 MiB
    needed = (lba + (ALIGN_SECTORS if fill else 0) + reserved_tail_sectors) * SECTOR
    if disk_size is None:
        disk_size = align_up(needed, BLOCK)
    elif disk_size < needed:
        raise Oci2vmError(
            f"a {disk_size / MIB:g} MiB disk cannot hold these partitions: "
            f"make it at least {-(-needed // MIB)} MiB"
        )
    if fill:
        free = disk_size // SECTOR - reserved_tail_sectors - lba
        extents.append((lba, lba + free // BLOCK_SECTORS * BLOCK_SECTORS - 1))
    return disk_size, extents
