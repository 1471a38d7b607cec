"""The tar reader facing hostile archives: metadata that must be buffered (pax headers,
GNU long names, sparse maps) is capped before it is read, and every malformed field is a
one-line Oci2vmError naming what is wrong, never another exception."""

from __future__ import annotations

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.layers import tarstream
from oci2vm.layers.tarstream import Member, TarReader
from support.tarbytes import END, Tail, header, member, padded, pax

GIB = 1 << 30


def read_all(source: Tail | bytes) -> list[tuple[Member, bytes]]:
    tar = TarReader(source if isinstance(source, Tail) else Tail(source), "layer 1")
    return [(m, tar.read_data(m.stored)) for m in tar]


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        (b"x", "pax extended header"),
        (b"g", "pax global header"),
        (b"L", "GNU long name"),
        (b"K", "GNU long link name"),
        (b"V", "GNU volume header"),
    ],
)
def test_metadata_claiming_gigabytes_is_refused_before_it_is_read(kind: bytes, named: str) -> None:
    source = Tail(header(kind, b"meta", 2 * GIB), 2 * GIB, b"1")
    with pytest.raises(Oci2vmError, match=rf"^layer 1: {named} of 2147483648 bytes exceeds") as e:
        read_all(source)
    assert "1 MiB" in str(e.value) and "\n" not in str(e.value)
    assert source.largest <= 512
    # Up to the limit, a long name is read.
    name = b"d/" * ((tarstream.MAX_LONG_NAME - 1) // 2)
    got = read_all(member(b"L", b"././@LongLink", name + b"\0") + member(b"0", b"x", b"ab") + END)
    assert (got[0][0].name, got[0][1]) == (name.decode(), b"ab")


def test_many_pax_headers_for_one_member_count_together() -> None:
    one = pax([("SCHILY.xattr.user.k", "v" * 1000)])
    archive = one * (tarstream.MAX_PAX_HEADER // 1000 + 1) + member(b"0", b"f") + END
    with pytest.raises(Oci2vmError, match=r"pax extended headers .* exceed"):
        read_all(archive)


def test_global_headers_are_read_aside_in_bounded_memory() -> None:
    """Many global headers: each is parsed (a malformed one is an error) and dropped."""
    records = [(f"SCHILY.xattr.user.k{i}", "v" * 100) for i in range(800)]
    archive = b"".join(pax([r], b"g") for r in records) + member(b"0", b"f") + END
    assert [(m.name, m.xattrs) for m, _ in read_all(archive)] == [("f", {})]
    with pytest.raises(Oci2vmError, match=r"pax"):
        read_all(pax([("uid", "5")], b"g")[:512] + b"9 broken\n".ljust(512, b"\0") + END)


def test_an_empty_pax_value_keeps_the_header_field() -> None:
    archive = pax([("path", ""), ("size", ""), ("mtime", "")]) + member(b"0", b"n", b"ab") + END
    got = read_all(archive)
    assert (got[0][0].name, got[0][0].size, got[0][0].mtime_ns, got[0][1]) == (
        "n",
        2,
        1_700_000_000 * 10**9,
        b"ab",
    )


@pytest.mark.parametrize("key", ["size", "uid", "gid", "mtime", "atime", "ctime"])
@pytest.mark.parametrize("value", [b"abc", b"1_0", b" 5", b"0x10", b"\xff", b"9" * 5000, b"1e3"])
def test_malformed_pax_numbers_are_named(key: str, value: bytes) -> None:
    archive = pax([(key, value)]) + member(b"0", b"f") + END
    with pytest.raises(Oci2vmError, match=rf"^layer 1: malformed pax header: {key} "):
        read_all(archive)


@pytest.mark.parametrize("key", ["size", "uid", "gid", "GNU.sparse.size"])
def test_a_negative_pax_count_is_named(key: str) -> None:
    archive = pax([(key, "-5")]) + member(b"0", b"f") + END
    with pytest.raises(Oci2vmError, match=rf"^layer 1: malformed pax header: {key} .*negative"):
        read_all(archive)
    # Times may be negative (before 1970), and keep their nanoseconds.
    archive = pax([("mtime", "-1.25"), ("atime", "+3"), ("ctime", "4.")]) + member(b"0", b"f")
    m = read_all(archive + END)[0][0]
    assert (m.mtime_ns, m.atime_ns, m.ctime_ns) == (-1_250_000_000, 3 * 10**9, 4 * 10**9)


def test_bad_base64_in_a_libarchive_xattr_is_named() -> None:
    archive = pax([("LIBARCHIVE.xattr.user.k", "A")]) + member(b"0", b"f") + END
    with pytest.raises(Oci2vmError, match=r"LIBARCHIVE.xattr.user.k .*base64"):
        read_all(archive)


def _sparse_pax(records: list[tuple[str, str | bytes]], stored: bytes = b"AAAABB") -> bytes:
    return pax(records) + member(b"0", b"GNUSparse/f", stored) + END


@pytest.mark.parametrize(
    "records",
    [
        [("GNU.sparse.size", "10"), ("GNU.sparse.offset", "0")],  # 0.0: no numbytes
        [("GNU.sparse.offset", "0"), ("GNU.sparse.numbytes", "4"), ("GNU.sparse.offset", "8")],
        [("GNU.sparse.size", "10000"), ("GNU.sparse.map", "0,4,9998")],  # 0.1: odd
        [("GNU.sparse.size", "10000"), ("GNU.sparse.map", "0,4,x,2")],
        [("GNU.sparse.size", "10000"), ("GNU.sparse.map", "0,4,-2,2")],
        [("GNU.sparse.size", "10000"), ("GNU.sparse.map", "9998,2,0,4")],  # not in order
        [("GNU.sparse.size", "10000"), ("GNU.sparse.map", "0,4,9999,2")],  # beyond the size
        [("GNU.sparse.size", "10000"), ("GNU.sparse.map", "0,4,9000,3")],  # 7 bytes, 6 stored
        [("GNU.sparse.size", "x"), ("GNU.sparse.map", "0,6")],
    ],
)
def test_bad_pax_sparse_maps_are_named(records: list[tuple[str, str | bytes]]) -> None:
    with pytest.raises(Oci2vmError, match=r"^layer 1: .*sparse"):
        read_all(_sparse_pax(records))


SPARSE_1_0 = pax(
    [
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.name", "f"),
        ("GNU.sparse.realsize", "10000"),
    ]
)


def _sparse_1_0(map_text: bytes, data: bytes = b"AAAABB") -> bytes:
    return SPARSE_1_0 + member(b"0", b"GNUSparse/f", padded(map_text) + data)


@pytest.mark.parametrize(
    "map_text",
    [
        b"2\n0\n4\nx\n2\n",
        b"-1\n",
        b"1\n0\n",
        b"2\n0\n4\n9998\n9\n",
        b"1\n0\n" + b"9" * 5000 + b"\n",
    ],
)
def test_bad_sparse_1_0_maps_are_named(map_text: bytes) -> None:
    with pytest.raises(Oci2vmError, match=r"^layer 1: .*sparse"):
        read_all(_sparse_1_0(map_text) + END)


def test_a_sparse_1_0_map_longer_than_the_limit_is_refused() -> None:
    got = read_all(_sparse_1_0(b"2\n0\n4\n9998\n2\n") + END)
    assert (got[0][0].sparse, got[0][0].stored, got[0][1]) == ([(0, 4), (9998, 2)], 6, b"AAAABB")
    # The member claims 4 GiB; its map announces 10^9 regions, one digit a line.
    head = SPARSE_1_0 + header(b"0", b"GNUSparse/f", 4 * GIB) + b"1000000000\n"
    source = Tail(head, 4 * GIB, b"1\n")
    with pytest.raises(Oci2vmError, match=r"^layer 1: GNU sparse map .* exceeds"):
        read_all(source)


def _old_sparse(regions: list[tuple[int, int]], extended: int, size: int, stored: int) -> bytes:
    fields = {483: f"{size:011o}\0".encode(), 482: bytes([extended])}
    for i, (off, n) in enumerate(regions[:4]):
        fields[386 + 24 * i] = f"{off:011o}\0{n:011o}\0".encode()
    return header(b"S", b"s", stored, fields=fields)


def test_endless_old_gnu_sparse_extension_blocks_are_refused() -> None:
    ext = bytearray(512)
    ext[504] = 1  # another extension block follows, forever
    source = Tail(_old_sparse([(0, 1)], 1, 2, 1), 4 * GIB, bytes(ext))
    with pytest.raises(Oci2vmError, match=r"^layer 1: GNU sparse map .* exceeds"):
        read_all(source)


def test_an_old_gnu_sparse_map_beyond_the_file_is_named() -> None:
    archive = _old_sparse([(0, 1), (10, 5)], 0, 12, 6) + padded(b"abcdef") + END
    with pytest.raises(Oci2vmError, match=r"^layer 1: .*sparse map"):
        read_all(archive)


def test_a_pax_record_longer_than_its_header_is_named() -> None:
    archive = member(b"x", b"p", b"99 path=a\n") + member(b"0", b"f") + END
    with pytest.raises(Oci2vmError, match=r"^layer 1: malformed pax header"):
        read_all(archive)


def test_a_header_size_that_is_no_number_is_named() -> None:
    archive = header(b"0", b"f", b"12z45") + END
    with pytest.raises(Oci2vmError, match=r"^layer 1: malformed tar header: bad number"):
        read_all(archive)
