"""Layer decompression at the edges of the zstd format: skippable frames (which `zstd -dc`
passes over), several frames, and streams cut short, which must be reported as truncated
rather than as a digest mismatch of the shorter output."""

from __future__ import annotations

import hashlib
import io
import random
import zlib

import pytest
import zstandard

from oci2vm.errors import Oci2vmError
from oci2vm.layers.decompress import decompressed, detect_compression

TAR = random.Random(10).randbytes(600_000)  # incompressible: several zstd blocks
DIFF_ID = "sha256:" + hashlib.sha256(TAR).hexdigest()


def skippable(payload: bytes, nibble: int = 0) -> bytes:
    """A skippable frame (RFC 8878 section 3.1.2): magic 0x184D2A5?, size, payload."""
    return (
        (0x184D2A50 + nibble).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload
    )


def zstd(data: bytes, **kw: object) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)  # type: ignore[arg-type]


def inflate(blob: bytes, diff_id: str | None = DIFF_ID) -> bytes:
    stream = decompressed(io.BytesIO(blob), "", "layer 1", diff_id)
    try:
        out = stream.read()
        stream.finish()
    finally:
        stream.abort()
    return out


@pytest.mark.parametrize(
    "blob",
    [
        skippable(b"metadata") + zstd(TAR),
        skippable(b"", 0xF) + zstd(TAR[:1000]) + skippable(b"x" * 70_000, 3) + zstd(TAR[1000:]),
        zstd(TAR, write_checksum=True, write_content_size=False) + skippable(b"trailer"),
    ],
    ids=["leading", "between-frames", "trailing"],
)
def test_skippable_zstd_frames_are_passed_over(blob: bytes) -> None:
    assert inflate(blob) == TAR


@pytest.mark.parametrize("cut", [1, 3, 4, 100, 5000, -9, -1])
@pytest.mark.parametrize("checksum", [True, False])
def test_a_truncated_zstd_layer_is_reported_as_truncated(cut: int, checksum: bool) -> None:
    blob = zstd(TAR, write_checksum=checksum)
    with pytest.raises(Oci2vmError, match=r"^layer 1: truncated zstd stream$"):
        inflate(blob[:cut])
    # Cut inside a skippable frame, too.
    with pytest.raises(Oci2vmError, match=r"^layer 1: truncated zstd stream$"):
        inflate(blob + skippable(b"x" * 100)[:-10])


@pytest.mark.parametrize(
    ("head", "named"),
    [(b"BZh9", "bzip2"), (b"BZh1", "bzip2"), (b"\xfd7zX", "xz"), (b"\x04\x22\x4d\x18", "lz4")],
)
def test_compressions_no_runtime_reads_are_named(head: bytes, named: str) -> None:
    with pytest.raises(Oci2vmError, match=rf"^unsupported layer compression \({named}\)"):
        detect_compression(head, "application/vnd.oci.image.layer.v1.tar")


def test_a_tar_whose_first_name_begins_like_a_magic_is_a_tar() -> None:
    assert detect_compression(b"BZhx") == detect_compression(b"xz.t") == "none"


def gzip_member(data: bytes, flags: int, name: bytes = b"layer.tar") -> bytes:
    """A gzip member (RFC 1952) with the optional header fields `flags` asks for; what
    gzip(1) writes has none but FNAME."""
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\x00\x03"
    if flags & 0x04:  # FEXTRA
        header += len(b"AB\x02\x00hi").to_bytes(2, "little") + b"AB\x02\x00hi"
    if flags & 0x08:  # FNAME
        header += name + b"\0"
    if flags & 0x10:  # FCOMMENT
        header += b"a comment\0"
    if flags & 0x02:  # FHCRC: the low 16 bits of the header's CRC-32
        header += (zlib.crc32(header) & 0xFFFF).to_bytes(2, "little")
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflater.compress(data) + deflater.flush()
    return header + body + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little")


class Pieces(io.RawIOBase):
    """A blob whose first 8 KiB (where both members' headers are) are read back at most
    `size` bytes at a time, as a slow download may hand them over."""

    def __init__(self, blob: bytes, size: int) -> None:
        self._blob, self._at, self._size = blob, 0, size

    def read(self, size: int = -1, /) -> bytes:
        piece = self._size if self._at < 8192 else 1 << 16
        size = piece if size < 0 else min(size, piece)
        data = self._blob[self._at : self._at + size]
        self._at += len(data)
        return data


@pytest.mark.parametrize("flags", [0x02, 0x04 | 0x02, 0x08 | 0x10 | 0x02, 0x1E, 0x08, 0x04])
@pytest.mark.parametrize("piece", [1, 3, 7, 1 << 20])
def test_every_gzip_header_field_is_read_however_the_blob_arrives(flags: int, piece: int) -> None:
    # ISA-L checks a header CRC (FHCRC) wrongly unless the header reaches it whole; the
    # second member's header starts wherever the first ends.
    blob = gzip_member(TAR[:1000], flags) + gzip_member(TAR[1000:], flags, b"n" * 3000)
    stream = decompressed(Pieces(blob, piece), "", "layer 1", DIFF_ID)  # type: ignore[arg-type]
    try:
        assert stream.read() == TAR
        stream.finish()
    finally:
        stream.abort()


@pytest.mark.parametrize("cut", [3, 11, 25])
def test_a_gzip_stream_cut_inside_a_member_header_is_truncated(cut: int) -> None:
    blob = gzip_member(TAR, 0x1E)
    with pytest.raises(Oci2vmError, match=r"^layer 1: truncated gzip stream$"):
        inflate(blob[:cut])
    with pytest.raises(Oci2vmError, match=r"^layer 1: truncated gzip stream$"):
        inflate(blob + blob[:cut])


def _windowed(data: bytes, window_log: int) -> bytes:
    """A zstd frame asking for a 2**window_log window (zstd --long), no content size."""
    params = zstandard.ZstdCompressionParameters(window_log=window_log, write_content_size=False)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as f:
        f.write(data)
    return out.getvalue()


def test_zstd_windows_up_to_512_mib_are_read_as_container_runtimes_read_them() -> None:
    """libzstd's default stops at 128 MiB and called --long=28 layers corrupt; docker's
    decoder (klauspost/compress) takes 512 MiB, and names a larger window."""
    for window_log in (27, 28, 29):
        assert inflate(_windowed(TAR, window_log)) == TAR
    with pytest.raises(Oci2vmError, match=r"^layer 1: a zstd frame's window is larger than 512"):
        inflate(_windowed(TAR, 30))


def test_bytes_after_the_last_gzip_member_are_named_not_called_a_truncation() -> None:
    packer = zlib.compressobj(wbits=31)
    blob = packer.compress(TAR) + packer.flush()
    assert inflate(blob + bytes(700)) == TAR  # zero padding, as gzip -d takes it
    assert inflate(blob + blob, diff_id=None) == TAR + TAR  # two members
    for junk in (b"junk", b"\x1fx", b"x" * 5000):
        with pytest.raises(Oci2vmError, match=r"^layer 1: bytes after the end of its gzip"):
            inflate(blob + junk)
