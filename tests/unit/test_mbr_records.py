"""The MBR writer without a tool to read it: partition records and their CHS fields, the
disk signature and boot code bytes, placement, and what does not fit an MBR.
(tests/readback/test_mbr_sfdisk.py reads the table back through sfdisk.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.disk.mbr import (
    TYPE_ESP,
    TYPE_LINUX,
    MbrPartition,
    chs,
    disk_signature_from_seed,
    write_mbr,
)
from oci2vm.disk.placement import place_partitions
from oci2vm.errors import Oci2vmError
from support.tables import GIB, mbr_partitions, read_sector0, write_mbr_disk

MIB = 1024 * 1024


def test_records_carry_conventional_chs_fields(tmp_path: Path) -> None:
    image = write_mbr_disk(tmp_path / "disk.img", 10 * GIB, mbr_partitions(10 * GIB), b"seed")
    records = read_sector0(image)[446:510]
    # LBA 2048 = C0/H32/S33, LBA 206847 = C12/H223/S19; 206848 = C12/H223/S20;
    # the disk end lies beyond cylinder 1023, so fdisk's FE FF FF
    assert records == (
        bytes.fromhex("80 202100 ef df130c 00080000 00200300")
        + bytes.fromhex("00 df140c 83 feffff 00280300 00d83c01")
        + bytes(32)
    )


@pytest.mark.parametrize(
    ("lba", "expected"),
    [
        (0, "000100"),
        (62, "003f00"),  # last sector of the first track
        (63, "010100"),
        (255 * 63, "000101"),  # cylinder 1
        (1023 * 255 * 63 + 254 * 63 + 62, "feffff"),  # the last addressable sector
        (1024 * 255 * 63, "feffff"),
    ],
)
def test_chs_encoding(lba: int, expected: str) -> None:
    assert chs(lba).hex() == expected


def test_signature_and_boot_code_bytes(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    boot_code = bytes(range(220)) * 2
    with path.open("wb") as out:
        out.truncate(GIB)
        out.write(boot_code)
        write_mbr(out, mbr_partitions(GIB), disk_signature=0x12345678)
    sector0 = read_sector0(path)
    assert sector0[:440] == boot_code
    assert sector0[440:446] == bytes.fromhex("78563412 0000")
    assert sector0[510:] == b"\x55\xaa"
    with path.open("r+b") as out:
        write_mbr(out, mbr_partitions(GIB), disk_signature=0x12345678, keep_boot_code=False)
    assert read_sector0(path)[:440] == bytes(440)


def test_disk_signature_is_deterministic_and_seeded(tmp_path: Path) -> None:
    first = read_sector0(write_mbr_disk(tmp_path / "a.img", GIB, mbr_partitions(GIB), b"x"))
    again = read_sector0(write_mbr_disk(tmp_path / "b.img", GIB, mbr_partitions(GIB), b"x"))
    other = read_sector0(write_mbr_disk(tmp_path / "c.img", GIB, mbr_partitions(GIB), b"y"))
    assert first == again
    assert first[440:444] != other[440:444]
    assert first[444:] == other[444:]
    assert disk_signature_from_seed(b"x") != 0


def test_place_partitions_sizes_the_disk_when_asked() -> None:
    # the first in whole MiB, the last (the root) and the disk in whole 4 KiB blocks
    assert place_partitions([MIB, 3 * MIB + 1]) == (
        5 * MIB + 4096,
        [(2048, 4095), (4096, 4096 + 3 * 2048 + 8 - 1)],
    )
    assert place_partitions([MIB + 1, 3 * MIB])[1][0] == (2048, 2048 + 2 * 2048 - 1)


def test_a_fifth_partition_or_an_overlap_is_rejected(tmp_path: Path) -> None:
    fifth = [MbrPartition(TYPE_LINUX, 2048 * n, 2048) for n in range(1, 6)]
    with pytest.raises(ValueError, match="4 partition records, not 5"):
        write_mbr_disk(tmp_path / "disk.img", 16 * MIB, fifth, b"")
    overlap = [MbrPartition(TYPE_LINUX, 2048, 2048), MbrPartition(TYPE_ESP, 4095, 2048)]
    with pytest.raises(ValueError, match="overlap"):
        write_mbr_disk(tmp_path / "disk.img", 16 * MIB, overlap, b"")


def test_partitions_past_2_tib_do_not_fit_an_mbr(tmp_path: Path) -> None:
    beyond = [MbrPartition(TYPE_LINUX, 2048, 2**32)]
    with pytest.raises(ValueError, match="outside 32-bit LBA"):
        write_mbr_disk(tmp_path / "disk.img", 16 * MIB, beyond, b"")


def test_too_small_disk_names_the_size_needed() -> None:
    with pytest.raises(
        Oci2vmError, match="a 50 MiB disk cannot hold these partitions: make it at least 101 MiB"
    ):
        place_partitions([100 * MIB], disk_size=50 * MIB)
