"""The verifying blob reader: every byte hashed once, whichever way it is read; a short
or altered blob is an error at its end."""

from __future__ import annotations

import hashlib
import io

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import VerifyingReader

DATA = bytes(range(256)) * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _reader(
    data: bytes = DATA, size: int | None = len(DATA), digest: str = DIGEST
) -> VerifyingReader:
    return VerifyingReader(io.BytesIO(data), size, digest, what="blob x")


def test_read_readinto_and_readall_see_the_same_bytes() -> None:
    assert _reader().read() == DATA
    r = _reader()
    got = bytearray()
    buffer = bytearray(7777)
    while n := r.readinto(buffer):
        got += buffer[:n]
        got += r.read(1000) + r.read(0)
    assert bytes(got) == DATA and r.total == len(DATA)


def test_a_short_blob_is_truncated() -> None:
    r = _reader(DATA[:-10])
    with pytest.raises(Oci2vmError, match="blob x: truncated: 10 bytes missing"):
        while r.read(4096):
            pass


def test_an_altered_blob_fails_its_digest_at_the_end() -> None:
    altered = bytearray(DATA)
    altered[1000] ^= 1
    r = _reader(bytes(altered))
    assert len(r.read(len(DATA) - 1)) == len(DATA) - 1  # nothing said before the end
    with pytest.raises(Oci2vmError, match="blob x: digest mismatch"):
        r.read(4096)
        r.read(4096)
