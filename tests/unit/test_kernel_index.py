"""oci2vm.kernel.kmodindex: kmod's binary index, read back with the tests' own reader
(support.kmodindexes) and checked against bytes worked out by hand from depmod's
index_write; and the string hash whose order modules.symbols follows."""

from __future__ import annotations

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.kernel.kmodindex import IndexBuilder, hash_order, superfast_hash
from support.kmodindexes import read_index


def test_a_one_key_index_is_byte_for_byte_depmods() -> None:
    index = IndexBuilder("t")
    index.insert("a", "x", 1)
    assert index.build() == bytes.fromhex(
        "b007f457" "00020001" "20000016"  # magic, version 2.1, root at 22 with children
        "00000001" "00000001" "7800"  # at 12, the node of "a": one value, priority 1, "x"
        "6161" "4000000c"  # at 22, the root: children 'a'..'a', the first at 12 with values
    )  # fmt: skip


def test_an_empty_index_is_a_header_with_no_root() -> None:
    assert IndexBuilder("t").build() == bytes.fromhex("b007f4570002000100000000")


def test_keys_and_values_round_trip_in_depmods_value_order() -> None:
    index = IndexBuilder("t")
    entries = [
        ("pci:v00008086d*", "e1000e", 7),
        ("pci:v00008086d*", "igb", 3),
        ("pci:v00008086d*", "ixgbe", 7),  # equal priority: the later first
        ("pci:v00008086", "short", 1),  # a key ending inside another's path
        ("pci:v0000", "shorter", 0),
        ("usb:v*", "usbcore", 2),
        ("usb:v*", "usbcore", 2),  # a repeated value is kept twice, as depmod does
        ("", "root", 5),
        ("z" * 5000, "long", 9),  # deeper than Python's recursion limit would allow
    ]
    for key, value, priority in entries:
        index.insert(key, value, priority)
    assert read_index(index.build()) == {
        "pci:v00008086d*": [(3, "igb"), (7, "ixgbe"), (7, "e1000e")],
        "pci:v00008086": [(1, "short")],
        "pci:v0000": [(0, "shorter")],
        "usb:v*": [(2, "usbcore"), (2, "usbcore")],
        "": [(5, "root")],
        "z" * 5000: [(9, "long")],
    }


def test_many_branching_keys_round_trip() -> None:
    index = IndexBuilder("t")
    pairs = zip("abcxyz" * 50, "qrs" * 100, strict=True)
    keys = {f"symbol:{a}{b}_{n}": n for n, (a, b) in enumerate(pairs)}
    for key, n in keys.items():
        index.insert(key, f"mod{n}", n)
    assert read_index(index.build()) == {k: [(n, f"mod{n}")] for k, n in keys.items()}


@pytest.mark.parametrize(("key", "value"), [("caf\u00e9", "v"), ("k", "\u00fc")])
def test_characters_past_7_bits_are_refused_as_depmod_refuses_them(key: str, value: str) -> None:
    with pytest.raises(Oci2vmError, match=r"modules\.alias\.bin: .* is not 7-bit ASCII"):
        IndexBuilder("modules.alias.bin").insert(key, value, 0)


def test_the_hash_is_kmods_superfast_hash() -> None:
    """Values of kmod's hash_superfast as a little-endian x86 computes it; the order of
    the real modules.symbols (tests/integration/test_depmod_differential.py) depends on
    every branch of it."""
    assert [superfast_hash(k) for k in (b"", b"a", b"ab", b"abc", b"abcd", b"printk")] == [
        0x0, 0x115EA782, 0x516B8B44, 0xD2BE198A, 0xDAD8B8DB, 0x6A0863D1,
    ]  # fmt: skip
    assert superfast_hash(b"\xe9t\xe9") == 0x69BDF30D  # signed char in the tail


def test_hash_order_is_by_bucket_then_by_key() -> None:
    keys = ["printk", "abcd", "abc", "ab", "a", "kmalloc", "kfree"]
    ordered = hash_order(keys, 4)
    buckets = [superfast_hash(k.encode()) & 3 for k in ordered]
    assert buckets == sorted(buckets)
    assert sorted(keys) == sorted(ordered)
    for bucket in set(buckets):
        same = [k for k, b in zip(ordered, buckets, strict=True) if b == bucket]
        assert same == sorted(same)
