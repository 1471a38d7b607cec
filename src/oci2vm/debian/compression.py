"""Decompressing the streams Debian archives hold: xz (Python's lzma), gzip and zstd (the
layer decompressors of oci2vm.layers.decompress), or none. A stream is produced a few chunks
ahead in a background thread (a LayerStream), so it can be read as a tar stream or scanned
as an index without ever being held whole."""

from __future__ import annotations

import lzma
from collections.abc import Iterator
from typing import cast

from oci2vm.debian import xzblocks
from oci2vm.errors import Oci2vmError
from oci2vm.layers.decompress import (
    CHUNK,
    GZIP_MAGIC,
    XZ_MAGIC,
    XZ_MEMLIMIT,
    ZSTD_MAGIC,
    Blob,
    LayerStream,
    decompressed,
    member_chunks,
)

SUFFIXES = {".xz": "xz", ".gz": "gzip", ".zst": "zstd"}
UNSUPPORTED = (".bz2", ".lzma", ".lz4", ".Z")
MAGIC = {"xz": XZ_MAGIC, "gzip": GZIP_MAGIC, "zstd": ZSTD_MAGIC}


def _kind_of(head: bytes) -> str:
    return next((kind for kind, magic in MAGIC.items() if head.startswith(magic)), "none")


def compression_of(name: str) -> str | None:
    """'xz', 'gzip', 'zstd' or 'none' for a file name's suffix; None if unsupported."""
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return None if name.endswith(UNSUPPORTED) else "none"


def _xz_member() -> lzma.LZMADecompressor:
    return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)


def _xz_chunks(raw: Blob, head: bytes, what: str) -> Iterator[bytes]:
    """Decompress one or more concatenated xz streams, in pieces of at most OUT_CHUNK
    bytes; zero padding after the last one is tolerated, as xz(1) does."""
    try:
        yield from member_chunks(raw, head, _xz_member)
    except lzma.LZMAError as e:
        raise Oci2vmError(f"{what}: corrupt xz stream ({e})") from e
    except EOFError as e:
        raise Oci2vmError(f"{what}: truncated xz stream") from e


def open_stream(raw: Blob, kind: str, what: str, *, size: int | None = None) -> LayerStream:
    """The decompressed bytes of `raw` (compressed as `kind`, which its magic bytes must
    confirm), read ahead in a background thread. Closing the stream closes `raw`. A corrupt
    or truncated stream raises Oci2vmError naming `what` when it is read. With `size` (the
    bytes of `raw`, which must then take seek()), the blocks of an xz file that xz cut
    into several are inflated in parallel (debian.xzblocks)."""
    head = raw.read(len(XZ_MAGIC))
    if _kind_of(head) != kind:
        getattr(raw, "abort", raw.close)()
        raise Oci2vmError(f"{what}: its bytes are not {kind}-compressed, as its name says")
    if kind != "xz":
        return decompressed(_Prefixed(head, raw), what=what, hash_stream=False)

    def produce() -> Iterator[bytes]:
        if size:  # `raw` takes seek() then
            seekable = cast(xzblocks.RandomAccess, raw)
            blocks = xzblocks.plan(seekable, size)
            if blocks is not None:
                yield from xzblocks.inflate(seekable, *blocks, what)
                return
            seekable.seek(len(head))
        yield from _xz_chunks(raw, head, what)
        while raw.read(CHUNK):  # the whole blob is read, so that its digest is checked
            pass

    return LayerStream(produce, getattr(raw, "abort", raw.close), lambda: "")


class _Prefixed:
    """`raw` with bytes already read from it put back in front."""

    def __init__(self, head: bytes, raw: Blob) -> None:
        self._head = head
        self._raw = raw

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)

    def close(self) -> None:
        self._raw.close()

    def abort(self) -> None:
        getattr(self._raw, "abort", self._raw.close)()
