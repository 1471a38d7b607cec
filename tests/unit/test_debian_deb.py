"""Reading .deb files in Python: the ar container, the control fields, data.tar's members
streamed (xz, gzip, zstd or none), and broken packages refused with one line."""

from __future__ import annotations

import lzma
import threading
import tracemalloc
from pathlib import Path

import pytest

from oci2vm.debian.deb import open_deb
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from support.debarchives import ar_of, build_deb, compress, tar_of

FILES = {"./bin/busybox": b"\x7fELF" + bytes(range(256)) * 40, "./etc/motd": b"hello\n"}


def blob_of(tmp_path: Path, data: bytes, prefix: bytes = b"") -> BlobRef:
    path = tmp_path / "pkg.deb"
    path.write_bytes(prefix + data)
    return BlobRef(path, len(prefix), len(data), None)


def read_all(tmp_path: Path, deb: bytes) -> dict[str, bytes]:
    files = {}
    with open_deb(blob_of(tmp_path, deb)).data() as tar:
        for member in tar:
            if member.isfile():
                files[member.name] = b"".join(iter(lambda: bytes(tar.view(7)), b""))
    return files


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_data_members_stream_with_their_bytes(tmp_path: Path, compression: str) -> None:
    deb = build_deb("busybox-static", "1:1.35.0-4", FILES, compression=compression)
    assert read_all(tmp_path, deb) == FILES


def test_a_deb_inside_a_larger_file_is_read_at_its_offset(tmp_path: Path) -> None:
    deb = build_deb("p", "1", FILES)
    with open_deb(blob_of(tmp_path, deb, prefix=b"x" * 101)).data() as tar:
        assert [m.name for m in tar if m.isfile()] == list(FILES)


def test_control_fields_are_read(tmp_path: Path) -> None:
    deb = build_deb("busybox-static", "1:1.35.0-4", FILES, extra={"Depends": "libc6 (>= 2.34)"})
    control = open_deb(blob_of(tmp_path, deb)).control()
    assert control == {
        "Package": "busybox-static", "Version": "1:1.35.0-4", "Architecture": "amd64",
        "Maintainer": "Test <t@example.org>", "Depends": "libc6 (>= 2.34)",
        "Description": "a test package\nmore text",
    }  # fmt: skip


def test_data_streams_without_holding_the_package_in_memory(tmp_path: Path) -> None:
    big = bytes(48 << 20)  # inflates from a few kB: only the stream's chunks are held
    deb = build_deb("k", "1", {"./boot/vmlinuz": big})
    tracemalloc.start()
    try:
        total = 0
        with open_deb(blob_of(tmp_path, deb)).data() as tar:
            for _member in tar:
                while piece := tar.view(1 << 20):
                    total += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == len(big)
    assert peak < 32 << 20


def test_leaving_the_data_early_stops_its_thread(tmp_path: Path) -> None:
    deb = build_deb("k", "1", {"./a": bytes(20 << 20), "./b": b"b"})
    before = threading.active_count()
    with pytest.raises(KeyError), open_deb(blob_of(tmp_path, deb)).data() as tar:
        next(iter(tar))
        raise KeyError("stop")
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("deb", "message"),
    [
        (b"PK\x03\x04zip", r"not a Debian package \(no ar header\)$"),
        (ar_of([("control.tar.xz", b"")]), r"not a Debian binary package \(no debian-binary\)$"),
        (ar_of([("debian-binary", b"3.0\n")]), r"Debian package format b'3.0' is not 2.x$"),
        (ar_of([("debian-binary", b"2.0\n"), ("control.tar.xz", b"x")]),
         r"no single data.tar\* member \(a broken package\)$"),
        (ar_of([("debian-binary", b"2.0\n"), ("control.tar.xz", b"x"), ("data.tar.bz2", b"x")]),
         r"data.tar.bz2 is compressed in a way not read$"),
        (ar_of([("debian-binary", b"2.0\n")])[:-3], r"runs past the end \(truncated\)$"),
        (b"!<arch>\n" + b"x" * 70, r"malformed ar member header at byte 8$"),
    ],
)  # fmt: skip
def test_broken_packages_are_refused_in_one_line(tmp_path: Path, deb: bytes, message: str) -> None:
    with pytest.raises(Oci2vmError, match=message):
        open_deb(blob_of(tmp_path, deb))


def flipped(data: bytes, start: int, end: int) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start:end]) + data[end:]


def members_with(data_name: str, data: bytes) -> bytes:
    control = compress(tar_of({"./control": b"Package: p\n"}), "xz")
    return ar_of([("debian-binary", b"2.0\n"), ("control.tar.xz", control), (data_name, data)])


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("data.tar.xz", compress(tar_of(FILES), "gzip"), r"not xz-compressed, as its name says$"),
        ("data.tar.xz", lzma.compress(tar_of(FILES))[:-40], r"data.tar.xz: truncated xz stream$"),
        ("data.tar.xz", flipped(lzma.compress(tar_of(FILES)), 40, 80),
         r"data.tar.xz: corrupt xz stream"),
        ("data.tar.gz", compress(tar_of(FILES), "gzip")[:-30], r"truncated gzip stream$"),
        ("data.tar", b"0" * 2048, r"data.tar: not a tar archive \(no tar header at its start\)$"),
    ],
)  # fmt: skip
def test_corrupt_data_is_refused_in_one_line(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    with pytest.raises(Oci2vmError, match=message):
        read_all(tmp_path, members_with(name, data))
