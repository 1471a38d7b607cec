"""The FAT writer's bytes without a tool to read them: FSInfo and the backup boot sector,
both FATs, reproducibility, and the one-line errors for what FAT cannot hold.
(tests/readback/test_fat_mtools.py reads volumes back through fsck.vfat and mtools.)"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from support.tables import MTIME, fat_files, write_fat_volume

MIB = 1024 * 1024


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    files = fat_files()
    reordered = dict(reversed(list(files.items())))
    first = write_fat_volume(tmp_path / "a.img", 64 * MIB, files, offset=MIB, mtime=MTIME)
    second = write_fat_volume(tmp_path / "b.img", 64 * MIB, reordered, offset=MIB, mtime=MTIME)
    later = write_fat_volume(tmp_path / "c.img", 64 * MIB, files, offset=MIB, mtime=MTIME + 2)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second, later)]
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_fat32_has_fsinfo_and_a_backup_boot_sector(tmp_path: Path) -> None:
    image = write_fat_volume(tmp_path / "fat.img", 64 * MIB, {"EFI/BOOT/BOOTX64.EFI": b"x" * 1000})
    data = image.read_bytes()
    assert data[6 * 512 : 7 * 512] == data[:512]
    assert data[7 * 512 : 8 * 512] == data[512:1024]
    fsinfo = data[512:1024]
    # 131072 sectors - 32 reserved - 2 FATs of 1024 = 128992 clusters; root, EFI, BOOT and
    # two 512-byte clusters of BOOTX64.EFI take clusters 2..6
    assert struct.unpack_from("<I", fsinfo, 0)[0] == 0x41615252
    assert struct.unpack_from("<III", fsinfo, 484) == (0x61417272, 128992 - 5, 7)
    assert struct.unpack_from("<I", fsinfo, 508)[0] == 0xAA550000


def test_both_fats_are_written(tmp_path: Path) -> None:
    image = write_fat_volume(tmp_path / "fat.img", 16 * MIB, fat_files())
    data = image.read_bytes()
    reserved, fat_sectors = (
        struct.unpack_from("<H", data, 14)[0],
        struct.unpack_from("<H", data, 22)[0],
    )
    first = data[reserved * 512 : (reserved + fat_sectors) * 512]
    second = data[(reserved + fat_sectors) * 512 : (reserved + 2 * fat_sectors) * 512]
    assert first == second
    assert first[:4] == b"\xf8\xff\xff\xff"


def test_files_too_big_for_the_volume_name_the_size_needed(tmp_path: Path) -> None:
    with pytest.raises(
        Oci2vmError, match=r"a 2 MiB ESP cannot hold these files: make it at least 64 MiB"
    ):
        write_fat_volume(tmp_path / "fat.img", 2 * MIB, {"big": bytes(3 * MIB)})


def test_names_that_differ_only_in_case_clash(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match="FAT names ignore case"):
        write_fat_volume(tmp_path / "fat.img", 2 * MIB, {"EFI/boot/a": b"", "EFI/BOOT/b": b""})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a:b", "ESP file name 'a:b' in 'a:b' cannot be stored on FAT (characters ':'): rename it"),
        ("end.", "ESP file name 'end.' in 'end.' cannot be stored on FAT (trailing dot or space)"),
        ("t\tb", "ESP file name 't\\tb' in 't\\tb' cannot be stored on FAT (characters '\\t')"),
        ("dir//x", "ESP path 'dir//x' has an empty or dot component: remove it"),
        ("a/../b", "ESP path 'a/../b' has an empty or dot component: remove it"),
    ],
)
def test_names_fat_cannot_store_are_rejected(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(Oci2vmError, match=re.escape(message)):
        write_fat_volume(tmp_path / "fat.img", 2 * MIB, {name: b""})


def test_fat12_root_directory_overflow_is_reported(tmp_path: Path) -> None:
    files = {f"file-{n:03}.txt": b"" for n in range(300)}  # 2 entries each, 512 slots
    with pytest.raises(Oci2vmError, match="root directory holds 512 entries on FAT12"):
        write_fat_volume(tmp_path / "fat.img", 2 * MIB, files)
