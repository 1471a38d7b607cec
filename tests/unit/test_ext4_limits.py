"""The ext4 writer at the edges of what it can address, without reading images back: sizes
beyond its maximum refused at once, an empty filesystem of the largest size built in bounded
memory, backup superblocks past group 65535, and default sizes that count inodes as well as
bytes. (tests/readback/test_ext4_hostile.py reads such images back with e2fsck.)"""

from __future__ import annotations

import re
import time
import tracemalloc

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4 import Ext4Result, Ext4Writer, required_size
from oci2vm.fs.ext4.layout import (
    BLOCK_SIZE,
    MAX_SIZE,
    SuperblockInfo,
    geometry,
    pack_superblock,
)
from oci2vm.tree.model import BytesData, Inode, Kind, new_dir
from support.deadline import within
from support.ext4check import FS_TIME, FS_UUID, HASH_SEED, MIB
from support.ext4trees import DiscardingOutput, small_files_tree

TIB = 1 << 40


def _build(root: Inode, size: int | None, out: DiscardingOutput) -> Ext4Result:
    writer = Ext4Writer(out, size=size, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)
    return writer.finish(root)


def _one_file() -> Inode:
    root = new_dir()
    assert root.children is not None
    root.children["f"] = Inode(Kind.FILE, size=3, data=BytesData(b"abc"))
    return root


@pytest.mark.parametrize("size", [16 * TIB + MIB, 16 * TIB + BLOCK_SIZE, 64 * TIB, 1 << 70, 10**30])
def test_a_size_beyond_16_tib_is_refused_at_once(size: int) -> None:
    out = DiscardingOutput()
    assert MAX_SIZE == 16 * TIB == (1 << 32) * BLOCK_SIZE
    with within(5), pytest.raises(Oci2vmError) as error:
        _build(_one_file(), size, out)
    message = str(error.value)
    assert "\n" not in message
    assert f"--size {size} bytes" in message and "at most 16 TiB" in message
    assert "smaller --size" in message
    assert out.written == 0


def test_an_empty_filesystem_of_16_tib_costs_no_more_memory_than_one_of_1_gib() -> None:
    peaks = {}
    for size in (1 << 30, 16 * TIB):
        out = DiscardingOutput()
        tracemalloc.start()
        try:
            started = time.monotonic()
            result = _build(_one_file(), size, out)
            seconds = time.monotonic() - started
            peaks[size] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.size == size and out.size == size
        assert seconds < 180  # a bound on runaway work (one 16 TiB build takes ~30 s), not a target
    assert peaks[16 * TIB] < peaks[1 << 30] + 16 * MIB, peaks


def _superblock_info(size: int, fs_time: int = FS_TIME) -> SuperblockInfo:
    return SuperblockInfo(
        geometry=geometry(size, 100),
        free_blocks=0,
        free_inodes=0,
        uuid=FS_UUID,
        hash_seed=HASH_SEED,
        fs_time=fs_time,
        label=b"",
        journal_blocks=(0,) * 17,
    )


def test_backup_superblocks_past_group_65535_say_65535() -> None:
    """s_block_group_nr is 16 bits: e2fsprogs writes 65535 for later groups, and so do we
    (a 16 TiB filesystem has backups in groups 78125 and 117649)."""
    info = _superblock_info(1 << 32)
    for group, recorded in ((3, 3), (65535, 65535), (78125, 65535), (117649, 65535)):
        packed = pack_superblock(info, group)
        assert int.from_bytes(packed[0x5A:0x5C], "little") == recorded


@pytest.mark.parametrize("when", [0, 1685620800, (1 << 32) + 5, 7_000_000_000])
def test_the_superblock_keeps_times_past_2106_in_its_hi_bytes(when: int) -> None:
    sb = pack_superblock(_superblock_info(64 << 20, when), 0)

    def stamp(lo: int, hi: int) -> int:
        return int.from_bytes(sb[lo : lo + 4], "little") | sb[hi] << 32

    # s_wtime/s_wtime_hi, s_mkfs_time/s_mkfs_time_hi, s_lastcheck/s_lastcheck_hi
    assert stamp(0x30, 0x274) == stamp(0x108, 0x276) == stamp(0x40, 0x277) == when
    assert stamp(0x2C, 0x275) == 0  # s_mtime: never mounted


def test_a_default_size_holds_100000_empty_files() -> None:
    """Far more inodes than one per 16 KiB of the size the bytes alone would give: the
    default size grows until they fit."""
    result = _build(small_files_tree(100_000), None, DiscardingOutput())
    assert result.inodes_count - result.free_inodes == 11 + 100 + 100_000  # reserved, dirs


def test_a_given_size_too_small_for_the_inodes_names_the_size_they_need() -> None:
    with pytest.raises(Oci2vmError) as error:
        _build(small_files_tree(100_000), 64 * MIB, DiscardingOutput())
    message = str(error.value)
    assert "\n" not in message
    assert re.search(r"need at least \d+ MiB", message), message
    assert message.endswith("pass a larger --size or leave it out")


def test_required_size_of_an_absurd_hint_is_quick() -> None:
    with within(5):
        assert required_size(1 << 80, 1 << 40) > MAX_SIZE


@pytest.mark.parametrize("name", ["n" * 256, "é" * 128])
def test_a_name_longer_than_255_bytes_is_refused_with_its_length(name: str) -> None:
    root = _one_file()
    assert root.children is not None
    root.children[name] = Inode(Kind.FILE, size=0, data=BytesData(b""))
    with pytest.raises(Oci2vmError) as error:
        _build(root, None, DiscardingOutput())
    message = str(error.value)
    assert "(256 bytes) cannot be stored in ext4 (a name is 1 to 255 bytes" in message
    assert "\n" not in message and len(message) < 200
