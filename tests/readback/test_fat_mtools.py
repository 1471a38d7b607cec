"""The FAT writer's volumes pass fsck.vfat and read back byte-exact through mtools."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oci2vm.errors import Oci2vmError
from oci2vm.fs.fat import MIN_ESP_SIZE, fat_size_for, write_fat
from oci2vm.util.tools import run
from support.programs import requires
from support.tables import MTIME, fat_files, write_fat_volume

pytestmark = requires("fsck.vfat", "mcopy", "mdir")


MIB = 1024 * 1024


# mtools prints and creates non-ASCII long names only in a UTF-8 locale
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}


def _fsck(image: Path) -> str:
    proc = run(["fsck.vfat", "-n", "-v", image], check=False)
    output = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, output
    return output


def _read_back(image: Path, offset: int, dest: Path) -> dict[str, bytes]:
    dest.mkdir()
    run(["mcopy", "-s", "-n", "-i", f"{image}@@{offset}", "::*", f"{dest}/"], env=MTOOLS_ENV)
    return {
        str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()
    }


def _mdir(image: Path, offset: int, directory: str) -> list[str]:
    proc = run(["mdir", "-i", f"{image}@@{offset}", f"::{directory}"], env=MTOOLS_ENV)
    return [line.rstrip() for line in proc.stdout.decode().splitlines()]


@pytest.mark.parametrize(
    ("size", "fat_bits"),
    [
        (1 * MIB, 12),
        (4 * MIB, 12),  # 8192 sectors: below the 8400 fatgen103 gives FAT16
        (5 * MIB, 16),
        (32 * MIB, 16),  # 65536 sectors: below FAT32's 66600
        (33 * MIB, 32),
        (64 * MIB, 32),
        (1024 * MIB, 32),
    ],
)
def test_fat_type_follows_the_cluster_count(tmp_path: Path, size: int, fat_bits: int) -> None:
    image = write_fat_volume(tmp_path / "fat.img", size, {"EFI/BOOT/BOOTX64.EFI": b"MZ"})
    report = _fsck(image)
    assert f"2 FATs, {fat_bits} bit entries" in report
    used, clusters = map(int, re.findall(r"(\d+)/(\d+) clusters", report)[0])
    assert used == (4 if fat_bits == 32 else 3)  # root on FAT32, EFI, BOOT, BOOTX64.EFI
    assert {12: clusters < 4085, 16: 4085 <= clusters < 65525, 32: clusters >= 65525}[fat_bits]
    with image.open("rb") as volume:
        boot = volume.read(512)
    fs_type_offset = 0x52 if fat_bits == 32 else 0x36
    assert boot[fs_type_offset : fs_type_offset + 8] == f"FAT{fat_bits}   ".encode()
    assert boot[510:] == b"\x55\xaa"


@pytest.mark.parametrize("size", [2 * MIB, 16 * MIB, 64 * MIB], ids=["fat12", "fat16", "fat32"])
def test_every_file_reads_back_byte_exact(tmp_path: Path, size: int) -> None:
    files = fat_files()
    standalone = write_fat_volume(tmp_path / "alone.img", size, files, mtime=MTIME)
    _fsck(standalone)
    disk = write_fat_volume(tmp_path / "disk.img", size, files, offset=3 * MIB, mtime=MTIME)
    assert _read_back(disk, 3 * MIB, tmp_path / "out") == files


# Long names from letters that stress short-name generation (dots, spaces, case, symbols
# invalid in 8.3, non-ASCII). Only the Basic Multilingual Plane: mtools turns each half of
# a surrogate pair into '_', though the volume stores the pair as Windows does.
_NAME = st.text(alphabet="aZ09 .+,;=[]-_~!éÄ漢", min_size=1, max_size=40).filter(
    lambda n: n.strip(" ") != "" and not n.endswith((".", " ")) and n not in (".", "..")
)


_TREE = st.dictionaries(
    st.lists(_NAME, min_size=1, max_size=4).map("/".join),
    st.binary(max_size=3000),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=_TREE, size=st.sampled_from([2 * MIB, 5 * MIB, 33 * MIB]))
def test_any_tree_reads_back_byte_exact(tmp_path: Path, files: dict[str, bytes], size: int) -> None:
    try:
        image = write_fat_volume(tmp_path / "fat.img", size, files, mtime=MTIME)
    except Oci2vmError as error:  # a path that is both a file and a directory, or a case clash
        assert "FAT names ignore case" in str(error)
        return
    _fsck(image)
    out = tmp_path / "out"
    if out.exists():
        shutil.rmtree(out)
    assert _read_back(image, 0, out) == files


def test_names_are_upper_case_8_3_with_long_names_where_needed(tmp_path: Path) -> None:
    image = write_fat_volume(tmp_path / "fat.img", 64 * MIB, fat_files(), offset=MIB, mtime=MTIME)
    assert _mdir(image, MIB, "/") == [
        " Volume in drive : is ESP",
        " Volume Serial Number is 1234-ABCD",
        "Directory for ::/",
        "",
        "EFI          <DIR>     2023-11-14  22:13",
        "EMPTY                0 2023-11-14  22:13",
        "MIXEDC~1 TXT         6 2023-11-14  22:13  MixedCase.Txt",
        "ABCDEF~1 TXT        35 2023-11-14  22:13  abcdefghijk.txt",
        "ABCDEF~2 TXT        36 2023-11-14  22:13  abcdefghijz.txt",
        "DEEP         <DIR>     2023-11-14  22:13  deep",
        "EXACTL~1            49 2023-11-14  22:13  exactly13char",
        "LOADER       <DIR>     2023-11-14  22:13  loader",
        "MANY         <DIR>     2023-11-14  22:13  many",
        "_N_COD~1 TXT        10 2023-11-14  22:13  Ünïcode-ñame.txt",
        "       10 files                 136 bytes",
        # 128992 data clusters of 512 bytes, 672 of them used (counted by hand)
        "                         65 699 840 bytes free",
        "",
    ]
    assert _mdir(image, MIB, "/EFI/debian") == [
        " Volume in drive : is ESP",
        " Volume Serial Number is 1234-ABCD",
        "Directory for ::/EFI/debian",
        "",
        ".            <DIR>     2023-11-14  22:13",
        "..           <DIR>     2023-11-14  22:13",
        "README              26 2023-11-14  22:13",
        "        3 files                  26 bytes",
        "                         65 699 840 bytes free",
        "",
    ]


def test_timestamps_before_1980_are_clamped_to_the_fat_epoch(tmp_path: Path) -> None:
    image = write_fat_volume(tmp_path / "fat.img", 2 * MIB, {"A.TXT": b"a"}, mtime=0)
    assert "A        TXT         1 1980-01-01   0:00" in _mdir(image, 0, "/")


def test_unused_space_stays_sparse_and_nothing_outside_is_touched(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    size, offset = 1024 * MIB, 1 * MIB
    with path.open("wb") as out:
        out.truncate(offset + size + MIB)
        out.seek(offset - 4)
        out.write(b"keep")
        out.seek(offset + size)
        out.write(b"keep")
        write_fat(out, offset, size, fat_files(), volume_id=1, mtime=MTIME)
    assert path.stat().st_blocks * 512 < 2 * MIB
    with path.open("rb") as image:
        image.seek(offset - 4)
        assert image.read(4) == b"keep"
        image.seek(offset + size)
        assert image.read(4) == b"keep"
    assert _read_back(path, offset, tmp_path / "out") == fat_files()


def test_fat_size_for_is_whole_mib_fat32_with_headroom(tmp_path: Path) -> None:
    assert fat_size_for({"EFI/BOOT/BOOTX64.EFI": b"x" * 4_000_000}) == MIN_ESP_SIZE == 64 * MIB
    files = {"vmlinuz": bytes(60 * MIB), "initrd.img": bytes(20 * MIB), "EFI/BOOT/A.EFI": b"a"}
    size = fat_size_for(files)
    # 80 MiB of files + 3 directories at 4 KiB + one 4 KiB cluster, half again, plus 1 MiB
    assert size == 122 * MIB
    image = write_fat_volume(tmp_path / "fat.img", size, files)
    report = _fsck(image)
    assert "32 bit entries" in report
