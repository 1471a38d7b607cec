"""The tar reader: every header form a layer may use, checked against archives written
by Python's tarfile (ustar, GNU, pax) and by hand where tarfile cannot write them."""

from __future__ import annotations

import io
import tarfile

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.layers.tarstream import Member, TarReader


def read_all(archive: bytes) -> list[tuple[Member, bytes]]:
    tar = TarReader(io.BytesIO(archive))
    return [(m, tar.read_data(m.stored)) for m in tar]


def tar_of(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = 0o644
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_plain_members_in_every_format(fmt: int) -> None:
    archive = tar_of(
        (info("dir/", tarfile.DIRTYPE, mode=0o755, uid=1, gid=2, mtime=1000), b""),
        (info("dir/file", size=5, mtime=1234567890, uid=1000, gid=1000), b"hello"),
        (info("dir/link", tarfile.SYMTYPE, linkname="file"), b""),
        (info("dir/hard", tarfile.LNKTYPE, linkname="dir/file"), b""),
        (info("null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
        (info("sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b""),
        (info("fifo", tarfile.FIFOTYPE), b""),
        fmt=fmt,
    )
    got = read_all(archive)
    assert [(m.name, m.type) for m, _ in got] == [
        ("dir/", b"5"),  # names as stored: the tree normalizes them
        ("dir/file", b"0"),
        ("dir/link", b"2"),
        ("dir/hard", b"1"),
        ("null", b"3"),
        ("sda", b"4"),
        ("fifo", b"6"),
    ]
    d, f = got[0][0], got[1][0]
    assert (d.mode, d.uid, d.gid, d.mtime_ns) == (0o755, 1, 2, 1000 * 10**9)
    assert (f.size, f.stored, f.uid, f.mtime_ns, got[1][1]) == (
        5,
        5,
        1000,
        1234567890 * 10**9,
        b"hello",
    )
    assert got[2][0].linkname == "file" and got[3][0].linkname == "dir/file"
    assert (got[4][0].devmajor, got[4][0].devminor) == (1, 3)
    assert (got[5][0].devmajor, got[5][0].devminor) == (8, 0)


def test_long_names_ustar_prefix_gnu_and_pax() -> None:
    prefix_name = "p" * 90 + "/" + "q" * 90
    long_name = "d/" + "x" * 300
    long_link = "t" * 200
    ustar = tar_of((info(prefix_name, size=1), b"u"), fmt=tarfile.USTAR_FORMAT)
    assert read_all(ustar)[0][0].name == prefix_name
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        archive = tar_of(
            (info(long_name, size=2), b"ab"),
            (info("l", tarfile.SYMTYPE, linkname=long_link), b""),
            fmt=fmt,
        )
        got = read_all(archive)
        assert got[0][0].name == long_name and got[0][1] == b"ab"
        assert got[1][0].linkname == long_link


def test_base256_numbers_negative_times_and_big_ids() -> None:
    archive = tar_of(
        (info("old", mtime=-86400, uid=3_000_000, gid=4_000_000), b""), fmt=tarfile.GNU_FORMAT
    )
    m = read_all(archive)[0][0]
    assert (m.mtime_ns, m.uid, m.gid) == (-86400 * 10**9, 3_000_000, 4_000_000)


def test_pax_times_xattrs_and_names_keep_their_bytes() -> None:
    ti = info("caf\udcff", size=0)
    ti.pax_headers = {
        "mtime": "1700000000.123456789",
        "atime": "-1.5",
        "SCHILY.xattr.user.bin": "\udcff\x00\udcfe".encode("utf-8", "surrogateescape").decode(
            "utf-8", "surrogateescape"
        ),
        "LIBARCHIVE.xattr.user.b64%20name": "AAEC",
    }
    archive = tar_of((ti, b""))
    m = read_all(archive)[0][0]
    assert m.name == "caf\udcff"
    assert m.mtime_ns == 1_700_000_000_123_456_789
    assert m.atime_ns == -1_500_000_000
    assert m.xattrs == {"user.bin": b"\xff\x00\xfe", "user.b64 name": b"\x00\x01\x02"}


def test_a_global_pax_header_changes_no_member_as_in_a_container() -> None:
    """docker, containerd and buildkit ignore what Go's archive/tar hands them as a 'g'
    entry: a global uid, time or capability must not reach every later file."""
    buf = io.BytesIO()
    cap = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12
    globals_ = {"uid": "4242", "mtime": "5", "SCHILY.xattr.security.capability": cap}
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers=globals_
    ) as tar:
        tar.addfile(info("a"))
        tar.addfile(info("b"))
    got = read_all(buf.getvalue())
    assert [(m.uid, m.mtime_ns, m.xattrs) for m, _ in got] == [(0, 0, {}), (0, 0, {})]


def _pax_header(records: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = records.items() if isinstance(records, dict) else records
    body = b""
    for key, value in items:
        rec = f" {key}={value}\n".encode()
        length = len(rec) + 1
        while len(str(length)) + len(rec) != length:
            length = len(str(length)) + len(rec)
        body += str(length).encode() + rec
    return body


def _raw_member(name: str, kind: bytes, data: bytes, size: int | None = None) -> bytes:
    ti = info(name, size=len(data) if size is None else size)
    ti.type = kind
    header = ti.tobuf(format=tarfile.USTAR_FORMAT)
    return header + data + b"\0" * (-len(data) % 512)


def test_gnu_sparse_pax_0_0_and_0_1() -> None:
    stored = b"AAAA" + b"BB"
    for records in (
        [("GNU.sparse.size", "10000"), ("GNU.sparse.numblocks", "2"),
         ("GNU.sparse.offset", "0"), ("GNU.sparse.numbytes", "4"),
         ("GNU.sparse.offset", "9998"), ("GNU.sparse.numbytes", "2"),
         ("GNU.sparse.name", "real")],
        [("GNU.sparse.size", "10000"), ("GNU.sparse.map", "0,4,9998,2"),
         ("GNU.sparse.name", "real")],
    ):  # fmt: skip
        pax = _pax_header(records)
        archive = _raw_member("x", b"x", pax) + _raw_member("GNUSparse/real", b"0", stored)
        archive += _raw_member("after", b"0", b"z") + b"\0" * 1024
        got = read_all(archive)
        m, data = got[0]
        assert (m.name, m.size, m.stored, m.sparse, data) == (
            "real",
            10000,
            6,
            [(0, 4), (9998, 2)],
            stored,
        )
        assert got[1][0].name == "after" and got[1][1] == b"z"


def test_old_gnu_sparse_with_extension_block() -> None:
    ti = info("sparse", size=0)
    header = bytearray(ti.tobuf(format=tarfile.GNU_FORMAT))
    regions = [(i * 8192, 1) for i in range(6)]  # 4 in the header, 2 in an extension
    for i, (off, n) in enumerate(regions[:4]):
        header[386 + 24 * i : 386 + 24 * i + 24] = f"{off:011o}\0{n:011o}\0".encode()
    header[482] = 1
    header[483:495] = f"{6 * 8192:011o}\0".encode()
    header[124:136] = f"{6:011o}\0".encode()
    header[156] = ord("S")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    ext = bytearray(512)
    for i, (off, n) in enumerate(regions[4:]):
        ext[24 * i : 24 * i + 24] = f"{off:011o}\0{n:011o}\0".encode()
    data = b"abcdef".ljust(512, b"\0")
    got = read_all(bytes(header) + bytes(ext) + data + b"\0" * 1024)
    m, stored = got[0]
    assert (m.type, m.size, m.stored, m.sparse, stored) == (b"0", 6 * 8192, 6, regions, b"abcdef")


def test_end_of_archive_without_zero_blocks_is_accepted() -> None:
    archive = tar_of((info("a", size=1), b"x"))
    got = read_all(archive[: 512 + 512])  # header and data, no end blocks
    assert [m.name for m, _ in got] == ["a"]


@pytest.mark.parametrize("cut", [1, 300, 511])
@pytest.mark.parametrize("filler", [b"x", b"\0"])
def test_a_stream_that_ends_inside_a_header_is_truncated(cut: int, filler: bytes) -> None:
    # Go's archive/tar refuses these too: a member must not vanish because its header
    # was cut short, nor a short blob that is no tar read as an empty layer.
    whole = _raw_member("a", b"0", b"x") + _raw_member("b", b"0", b"y")
    with pytest.raises(Oci2vmError, match=r"^layer: tar stream ends inside a header"):
        read_all(whole[: 1024 + cut])
    with pytest.raises(Oci2vmError, match=rf"^layer: not a tar archive \({cut} bytes\)$"):
        read_all(filler * cut)  # shorter than a header: no tar at all
    assert read_all(b"") == []  # an empty blob is an empty layer


def test_one_zero_block_ends_the_archive_only_before_zeros_or_the_end() -> None:
    a, b = _raw_member("a", b"0", b"x"), _raw_member("b", b"0", b"y")
    zero = b"\0" * 512
    for tail in (b"", zero, zero * 18, zero + b"garbage after the end" * 30):
        assert [m.name for m, _ in read_all(a + zero + tail)] == ["a"]
    with pytest.raises(Oci2vmError, match=r"^layer: not a valid tar stream \(a zero block inside"):
        read_all(a + zero + b)  # b would vanish
    with pytest.raises(Oci2vmError, match=r"^layer: tar stream ends inside a header"):
        read_all(a + zero + zero[:100])


def _header(name: bytes, magic: bytes, fields: dict[int, bytes], size: int = 0) -> bytes:
    """A regular file's header with `magic` (6 bytes + 2 of version) and raw `fields` by
    offset, its checksum computed."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"14537034034\0"
    block[156:157] = b"0"
    block[257:265] = magic
    for at, raw in fields.items():
        block[at : at + len(raw)] = raw
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_name_prefixes_of_star_and_of_old_go_gnu_headers_as_go_reads_them() -> None:
    """Go's archive/tar (docker, containerd) reads a star header's 131-byte prefix (its
    times follow it), and the ustar prefix Go before 1.8 wrote into GNU headers, whose
    time fields then do not parse; GNU times that do parse are times."""
    star_prefix = b"d" * 131
    star = _header(
        b"file", b"ustar\x0000", {345: star_prefix, 476: b"14537034034\0", 508: b"tar\0"}
    )
    go17 = _header(b"foo", b"ustar  \0", {345: b"a" * 120})
    gnu_times = _header(b"bar", b"ustar  \0", {345: b"14537034034\0", 357: b"14537034034\0"})
    ustar = _header(b"baz", b"ustar\x0000", {345: b"p" * 155})
    got = read_all(star + go17 + gnu_times + ustar + bytes(1024))
    assert [m.name for m, _ in got] == [
        "d" * 131 + "/file",
        "a" * 120 + "/foo",
        "bar",
        "p" * 155 + "/baz",
    ]


def test_a_pre_posix_directory_is_a_regular_type_with_a_trailing_slash() -> None:
    # Type NUL with a trailing slash, as old tars and bsdtar's v7 format write directories
    # (GNU tar, bsdtar and Go read a directory; the data area its size claims is skipped);
    # type '0' with a trailing slash stays a file, as in Go.
    archive = (
        _raw_member("old/", b"\0", b"ignored")
        + _raw_member("old/f", b"\0", b"data")
        + _raw_member("new/", b"0", b"")
    )
    got = read_all(archive + b"\0" * 1024)
    assert [(m.name, m.type, data) for m, data in got] == [
        ("old/", b"5", b""),
        ("old/f", b"0", b"data"),
        ("new/", b"0", b""),
    ]


def test_bad_checksum_is_an_error() -> None:
    archive = bytearray(tar_of((info("a", size=1), b"x"), (info("b", size=1), b"y")))
    archive[1024] ^= 1  # the second member's header
    with pytest.raises(Oci2vmError, match="bad header checksum"):
        read_all(bytes(archive))
    archive[0] ^= 1  # the first: the stream is no tar at all
    with pytest.raises(Oci2vmError, match=r"not a tar archive \(no tar header at its start\)$"):
        read_all(bytes(archive))


def test_truncated_data_is_an_error() -> None:
    archive = tar_of((info("a", size=2000), b"y" * 2000))
    tar = TarReader(io.BytesIO(archive[:1000]), "layer 1")
    with pytest.raises(Oci2vmError, match="layer 1: tar stream ends inside"):
        for m in tar:
            tar.read_data(m.stored)


def test_unsupported_entry_type_is_named() -> None:
    with pytest.raises(Oci2vmError, match="unsupported tar entry type 'M'"):
        read_all(_raw_member("multi", b"M", b""))


def test_headers_and_data_that_straddle_the_inflaters_chunks() -> None:
    """Read through decompress.LayerStream fed in pieces of 1 to 700 bytes, so headers,
    pax records and file data all cross chunk boundaries; views stay valid once taken."""
    import hashlib
    import random

    from oci2vm.layers.decompress import LayerStream

    files = [(f"dir/file{i}", bytes(random.Random(i).randbytes(i * 37 % 3000))) for i in range(60)]
    long_name = "deep/" + "x" * 150 + "/name"
    archive = tar_of(
        (info("dir/", tarfile.DIRTYPE), b""),
        *((info(name, size=len(data)), data) for name, data in files),
        (info(long_name, size=3, pax_headers={"SCHILY.xattr.user.k": "v"}), b"abc"),
    )
    rng = random.Random(7)
    pieces, at = [], 0
    while at < len(archive):
        n = rng.randint(1, 700)
        pieces.append(archive[at : at + n])
        at += n
    stream = LayerStream(lambda: iter(pieces), lambda: None, lambda: "")
    tar = TarReader(stream)
    seen: dict[str, tuple[bytes, dict[str, bytes]]] = {}
    held = []
    for member in tar:
        views = []
        while piece := tar.view(1 << 20):
            views.append(piece)
        held.extend(views)
        seen[member.name] = (b"".join(views), member.xattrs)
    stream.finish()
    assert {n: d for n, (d, _x) in seen.items() if n.startswith("dir/file")} == dict(files)
    assert seen[long_name] == (b"abc", {"user.k": b"v"})
    assert seen["dir/"][0] == b""
    digest = hashlib.sha256(b"".join(held)).hexdigest()
    assert digest == hashlib.sha256(b"".join(d for _n, d in files) + b"abc").hexdigest()
