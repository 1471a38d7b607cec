"""Layer decompression at the edges of the zstd format: skippable frames (which `zstd -dc`
passes over), several frames, and streams cut short, which must be reported as truncated
rather than as a digest mismatch of the shorter output."""

from __future__ import annotations

import hashlib
import io
import random

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
