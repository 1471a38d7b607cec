"""oci2vm.kernel.modinfo: a module's .modinfo fields, exported and needed symbols, read
from tiny ELF files built here in every class and byte order, compressed or not; damaged
files are refused with Oci2vmError and nothing else."""

from __future__ import annotations

import gzip
import lzma
import struct

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from oci2vm.errors import Oci2vmError
from oci2vm.kernel import modinfo
from oci2vm.kernel.modinfo import ModInfo, decompress_module, module_name, read_modinfo
from support.elfmodules import build_module, elf_file
from support.fuzzing import bounded_memory, fuzz_settings, outcome

EXT4_INFO = (
    "alias=fs-ext4",
    "softdep=pre: crc32c",
    "alias=ext3",
    "depends=jbd2,mbcache,crc16",
    "firmware=none.bin",
    "name=ext4",
    "vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions ",
)


@pytest.mark.parametrize("is64", [True, False])
@pytest.mark.parametrize("little", [True, False])
def test_modinfo_fields_and_symbols_read_in_every_class_and_byte_order(
    is64: bool, little: bool
) -> None:
    data = build_module(
        EXT4_INFO,
        exports=["ext4_thing", "ext4_other"],
        undefined=["jbd2_start", "kmalloc", "mb_cache_find"],
        versions=["module_layout", "kmalloc", "jbd2_start"],
        is64=is64,
        little=little,
    )
    assert read_modinfo(data) == ModInfo(
        name="ext4",
        depends=("jbd2", "mbcache", "crc16"),
        aliases=("fs-ext4", "ext3"),
        softdeps=("pre: crc32c",),
        firmware=("none.bin",),
        vermagic="6.1.0-50-amd64 SMP preempt mod_unload modversions ",
        exports=("ext4_thing", "ext4_other"),
        # undefined symbols in table order, then the __versions names none matched
        needs=("jbd2_start", "kmalloc", "mb_cache_find", "module_layout"),
    )


def test_an_empty_depends_and_runs_of_nul_padding_give_nothing() -> None:
    data = elf_file([(".modinfo", b"\0\0depends=\0\0\0weakdep=a\0\0name=x")])
    info = read_modinfo(data)
    assert (info.name, info.depends, info.weakdeps, info.exports, info.needs) == (
        "x", (), ("a",), (), ()
    )  # fmt: skip


def test_without_crc_symbols_exports_come_from_ksymtab_strings() -> None:
    """libkmod's fallback for kernels without modversions."""
    data = build_module(["name=m"], ksymtab_strings=["\0a_sym", "b_sym"])
    assert read_modinfo(data).exports == ("a_sym", "b_sym")
    with_crcs = build_module(["name=m"], exports=["c_sym"], ksymtab_strings=["a_sym"])
    assert read_modinfo(with_crcs).exports == ("c_sym",)


def test_sparc_register_symbols_are_not_needs() -> None:
    register = 13  # STT_REGISTER
    sparc = build_module(undefined=["g7", "f"], undefined_type=register, machine=2)
    assert read_modinfo(sparc).needs == ()
    elsewhere = build_module(undefined=["g7", "f"], undefined_type=register, machine=62)
    assert read_modinfo(elsewhere).needs == ("g7", "f")


def test_module_names_are_the_file_name_up_to_its_first_dot_with_underscores() -> None:
    assert module_name("kernel/drivers/block/virtio-blk.ko.xz") == "virtio_blk"
    assert module_name("kernel/fs/ext4/ext4.ko") == "ext4"


ELF = build_module(EXT4_INFO, exports=["s"], undefined=["u"])


@pytest.mark.parametrize(
    ("name", "packed"),
    [
        ("ext4.ko", ELF),
        ("ext4.ko.xz", lzma.compress(ELF, check=lzma.CHECK_CRC32)),
        ("ext4.ko.xz", lzma.compress(ELF[:100]) + lzma.compress(ELF[100:])),
        ("ext4.ko.zst", zstandard.ZstdCompressor().compress(ELF)),
        ("ext4.ko.zst", zstandard.ZstdCompressor(write_content_size=False).compress(ELF)),
        ("ext4.ko.gz", gzip.compress(ELF)),
    ],
)
def test_compressed_modules_inflate_to_the_elf_file(name: str, packed: bytes) -> None:
    assert decompress_module(name, packed) == ELF


@pytest.mark.parametrize(
    ("name", "packed"),
    [
        ("a.ko.xz", lzma.compress(ELF)[:-20]),
        ("a.ko.zst", zstandard.ZstdCompressor().compress(ELF)[:-5]),
        ("a.ko.gz", gzip.compress(ELF)[:-12]),
        ("a.ko.gz", b"not gzip at all"),
    ],
)
def test_truncated_or_corrupt_compressed_modules_are_refused(name: str, packed: bytes) -> None:
    with pytest.raises(Oci2vmError, match=f"{name}: corrupt compressed module"):
        decompress_module(name, packed)


def test_a_file_that_is_no_module_is_refused() -> None:
    with pytest.raises(Oci2vmError, match=r"a\.txt: not a kernel module"):
        decompress_module("a.txt", ELF)


@pytest.mark.parametrize("suffix", [".ko", ".ko.xz", ".ko.zst", ".ko.gz"])
def test_the_inflated_size_is_capped(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    big = b"\0" * 5000
    packed = {
        ".ko": big,
        ".ko.xz": lzma.compress(big),
        ".ko.zst": zstandard.ZstdCompressor().compress(big),
        ".ko.gz": gzip.compress(big),
    }[suffix]
    monkeypatch.setattr(modinfo, "MAX_MODULE", 4096)
    with pytest.raises(Oci2vmError, match="inflates to more than 0 MiB"):
        decompress_module(f"m{suffix}", packed)
    unstated = zstandard.ZstdCompressor(write_content_size=False).compress(big)
    with pytest.raises(Oci2vmError, match=r"m\.ko\.zst: "):
        decompress_module("m.ko.zst", unstated)


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not an ELF file"),
        (b"MZ" + bytes(100), "not an ELF file"),
        (ELF[:40], "truncated ELF header"),
        (ELF[:4] + b"\x03" + ELF[5:], "unknown ELF class 3"),
        (ELF[:5] + b"\x00" + ELF[6:], "unknown ELF class 2 or data encoding 0"),
        (_patched(ELF, 0x28, "<Q", 1 << 40), "section header table runs past the end"),
        (_patched(ELF, 0x3A, "<H", 40), "section header table .* bad size"),
        (_patched(ELF, 0x3E, "<H", 0), "no valid section-name table"),
        (_patched(ELF, 0x3E, "<H", 999), "no valid section-name table"),
        (ELF[: len(ELF) - 1], "section header table runs past the end"),
    ],
)
def test_malformed_elf_files_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(Oci2vmError, match=f"m.ko: malformed kernel module: {problem}"):
        read_modinfo(data, "m.ko")


def test_a_symbol_table_of_odd_size_or_wild_names_is_passed_over_as_libkmod_does() -> None:
    odd = elf_file([(".modinfo", b"name=a\0"), (".strtab", b"\0x\0"), (".symtab", b"\0" * 25)])
    assert read_modinfo(odd).needs == ()
    wild = build_module(undefined=["u"])
    # point the undefined symbol's name past .strtab: libkmod drops the whole list
    strtab = wild.index(b"\0u\0")
    symbol = wild.index(struct.pack("<I", 1), strtab + 3)
    assert read_modinfo(_patched(wild, symbol, "<I", 1 << 20)).needs == ()


def test_every_mutated_module_parses_or_is_refused() -> None:
    seeds = [
        build_module(EXT4_INFO, exports=["e"], undefined=["u"], versions=["v"]),
        build_module(EXT4_INFO, is64=False, little=False, ksymtab_strings=["k"]),
    ]

    @fuzz_settings(300)
    @given(
        seed=st.sampled_from(seeds),
        edits=st.lists(st.tuples(st.integers(0, 2000), st.binary(min_size=1, max_size=8))),
        cut=st.integers(0, 2000),
    )
    def check(seed: bytes, edits: list[tuple[int, bytes]], cut: int) -> None:
        data = bytearray(seed)
        for at, raw in edits:
            at %= len(data)
            data[at : at + len(raw)] = raw
        damaged = bytes(data[: max(len(data) - cut, 0)] if cut % 3 == 0 else data)
        outcome(lambda: read_modinfo(damaged, "fuzz.ko"))

    with bounded_memory():
        check()
