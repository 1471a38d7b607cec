"""The GPT writer without a tool to read it: where partitions go, GUIDs from the seed,
the bytes of entries and of the protective MBR, and what it refuses.
(tests/readback/test_gpt_tools.py reads the tables back through sgdisk and sfdisk.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from oci2vm.disk.gpt import (
    BIOS_BOOT,
    ESP,
    LINUX_DATA,
    Partition,
    PartitionSpec,
    derive_guid,
    layout,
    write_gpt,
)
from oci2vm.errors import Oci2vmError
from support.tables import GIB, GPT_SPECS, ROOT_X86_64, gpt_disk, write_gpt_disk

MIB = 1024 * 1024


def test_layout_starts_at_1_mib_and_aligns_every_partition() -> None:
    disk = layout(GPT_SPECS, seed=b"seed", disk_size=GIB)
    assert disk.disk_size == GIB
    # the last partition ends on the last whole 4 KiB block before the 33 sectors of
    # backup GPT: no gap that a grower at boot would fill
    assert [(p.first_lba, p.last_lba) for p in disk.partitions] == [
        (2048, 4095),
        (4096, 135167),
        (135168, 2097111),
    ]
    assert 2097152 - 33 - (2097111 + 1) < 8
    assert [(p.type_guid, p.name, p.attributes) for p in disk.partitions] == [
        (BIOS_BOOT, "BIOS boot", 0),
        (ESP, "EFI System", 4),
        (ROOT_X86_64, "root-x86-64 ✓", 0),
    ]


def test_layout_without_a_disk_size_fits_partitions_and_backup_gpt() -> None:
    disk = layout(
        [PartitionSpec(ESP, "esp", 100 * MIB), PartitionSpec(LINUX_DATA, "data", 5 * MIB + 1)],
        seed=b"s",
    )
    # the last partition in whole 4 KiB blocks, the disk up to the block holding the backup
    assert [(p.first_lba, p.last_lba) for p in disk.partitions] == [
        (2048, 206847),
        (206848, 206848 + 5 * 2048 + 8 - 1),
    ]
    assert disk.disk_size == (206848 + 5 * 2048 + 8 + 40) * 512


def test_layout_on_a_too_small_disk_names_the_size_needed() -> None:
    with pytest.raises(Oci2vmError, match=r"a 64 MiB disk cannot .* at least 68 MiB"):
        layout(GPT_SPECS, seed=b"s", disk_size=64 * MIB)


def test_guids_are_derived_from_the_seed() -> None:
    first, again, other = (layout(GPT_SPECS, seed=s, disk_size=GIB) for s in (b"a", b"a", b"b"))
    assert first == again
    guids = [first.disk_guid, *(p.guid for p in first.partitions)]
    assert len(set(guids)) == 4
    assert all(g.version == 5 for g in guids)
    assert first.disk_guid == derive_guid(b"a", "disk")
    assert first.disk_guid != other.disk_guid
    assert first.partitions[0].guid != other.partitions[0].guid


def test_type_guids_are_stored_mixed_endian(tmp_path: Path) -> None:
    with gpt_disk(tmp_path / "disk.img").open("rb") as image:
        first_entry = image.read(3 * 512)[2 * 512 : 2 * 512 + 128]
    # 21686148-6449-6E6F-744E-656564454649 is the ASCII "Hah!IdontNeedEFI" on disk
    assert first_entry[:16] == b"Hah!IdontNeedEFI"
    assert first_entry[56:128] == "BIOS boot".encode("utf-16-le").ljust(72, b"\0")


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    digests = [
        hashlib.sha256(gpt_disk(tmp_path / name, seed, 72 * MIB).read_bytes()).hexdigest()
        for name, seed in (("a.img", b"x"), ("b.img", b"x"), ("c.img", b"y"))
    ]
    assert digests[0] == digests[1] != digests[2]


def test_protective_mbr_leaves_boot_code_alone(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    boot_code = bytes(range(256)) + bytes(range(184))
    disk = layout(GPT_SPECS, seed=b"seed", disk_size=GIB)
    with path.open("wb") as out:
        out.truncate(GIB)
        out.write(boot_code)
        write_gpt(out, GIB, disk.partitions, disk_guid=disk.disk_guid)
    sector0 = _sector0(path)
    assert sector0[:440] == boot_code
    # signature 0, reserved, then one record: not bootable, CHS 0/0/2, type 0xEE,
    # CHS of LBA 2097151 (cylinder 130, head 138, sector 8), LBA 1, 2097151 sectors
    assert sector0[440:] == (
        bytes(6) + bytes.fromhex("00 000200 ee 8a0882 01000000 ffff1f00") + bytes(48) + b"\x55\xaa"
    )
    with path.open("r+b") as out:
        write_gpt(out, GIB, disk.partitions, disk_guid=disk.disk_guid, keep_boot_code=False)
    assert _sector0(path)[:440] == bytes(440)


def _sector0(path: Path) -> bytes:
    with path.open("rb") as image:
        return image.read(512)


def test_a_name_longer_than_36_units_is_an_error(tmp_path: Path) -> None:
    disk = layout([PartitionSpec(ESP, "x" * 37, MIB)], seed=b"s")
    with pytest.raises(Oci2vmError, match="longer than 36 UTF-16 units"):
        write_gpt_disk(tmp_path / "disk.img", disk.disk_size, disk.partitions, disk.disk_guid)


def test_overlapping_or_out_of_range_partitions_are_rejected(tmp_path: Path) -> None:
    a = Partition(ESP, derive_guid(b"", "a"), 2048, 4095, "a")
    b = Partition(LINUX_DATA, derive_guid(b"", "b"), 4095, 6143, "b")
    with pytest.raises(ValueError, match="'a' and 'b' overlap"):
        write_gpt_disk(tmp_path / "disk.img", 8 * MIB, (a, b), derive_guid(b"", "disk"))
    tail = Partition(LINUX_DATA, derive_guid(b"", "t"), 2048, 16351, "t")  # into backup GPT
    with pytest.raises(ValueError, match=r"outside the usable sectors 34\.\.16350"):
        write_gpt_disk(tmp_path / "disk.img", 8 * MIB, (tail,), derive_guid(b"", "disk"))
