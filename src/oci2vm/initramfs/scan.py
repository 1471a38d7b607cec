"""The names inside an initrd as the kernel unpacks it (init/initramfs.c): archives one
after the other, uncompressed ones (an early microcode cpio) and compressed ones (gzip, xz,
lzma, zstd, bzip2), NUL padding between them. Used to tell whether an image's own initrd
can mount the root oci2vm writes (does it hold ext4's module?).

The decompressed archive is scanned as it comes and never held: only names are kept, and
the decompressed size is capped.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable

import zstandard

from oci2vm.errors import Oci2vmError

MAX_UNPACKED = 2 << 30  # decompressed bytes scanned in all; Debian's are ~100 MB
CHUNK = 1 << 20
HEADER = 110  # newc: "070701" + 13 fields of 8 hex digits
TRAILER = "TRAILER!!!"


class UnknownFormatError(Oci2vmError):
    """An initrd in a form oci2vm cannot read (lz4, lzo, something else)."""


class CorruptInitrdError(Oci2vmError):
    """An initrd that is damaged: a compressed stream corrupt or cut short, a cpio
    archive malformed. No kernel unpacks it either."""


class _Scanner:
    """newc/crc cpio archives fed in pieces: the member names, data skipped."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._buffer = bytearray()
        self._skip = 0

    def feed(self, piece: bytes) -> None:
        if self._skip:
            taken = min(self._skip, len(piece))
            self._skip -= taken
            piece = piece[taken:]
        self._buffer += piece
        while self._step():
            pass

    def finish(self) -> None:
        """At the end of the compressed stream: a member cut short is a damaged initrd
        (the kernel would unpack a truncated file, or stop at the header)."""
        if self._skip or self._buffer.strip(b"\0"):
            raise CorruptInitrdError("initrd: a cpio archive ends inside a member")

    def _step(self) -> bool:
        buffer = self._buffer
        padding = len(buffer) - len(buffer.lstrip(b"\0"))  # after a trailer
        del buffer[:padding]
        if len(buffer) < HEADER:
            return False
        if bytes(buffer[:6]) not in (b"070701", b"070702"):
            raise CorruptInitrdError("initrd: not a newc cpio archive inside")
        try:
            size = int(buffer[54:62], 16)
            name_size = int(buffer[94:102], 16)
        except ValueError:
            raise CorruptInitrdError("initrd: a malformed cpio header") from None
        name_end = HEADER + name_size
        data_start = name_end + (-name_end % 4)
        if len(buffer) < data_start:
            return False
        name = bytes(buffer[HEADER : name_end - 1]).decode("utf-8", "surrogateescape")
        if name != TRAILER:
            self.names.append(name)
        total = data_start + size + (-size % 4)
        if len(buffer) >= total:
            del buffer[:total]
            return True
        self._skip = total - len(buffer)
        buffer.clear()
        return False


def _decompressor(head: bytes) -> Callable[[bytes], tuple[bytes, bytes, bool]] | None:
    """A function feeding compressed bytes and returning (output, unused, ended)."""
    if head.startswith(b"\x1f\x8b"):
        z = zlib.decompressobj(31)
        return lambda d: (z.decompress(d, CHUNK), z.unconsumed_tail + z.unused_data, z.eof)
    if head.startswith(b"\xfd7zXZ\x00") or head.startswith(b"\x5d\x00\x00"):
        fmt = lzma.FORMAT_XZ if head.startswith(b"\xfd7zXZ") else lzma.FORMAT_ALONE
        x = lzma.LZMADecompressor(fmt)
        return lambda d: (x.decompress(d, CHUNK), x.unused_data if x.eof else b"", x.eof)
    if head.startswith(b"BZh"):
        b = bz2.BZ2Decompressor()
        return lambda d: (b.decompress(d, CHUNK), b.unused_data if b.eof else b"", b.eof)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        s = zstandard.ZstdDecompressor(max_window_size=1 << 27).decompressobj()
        return lambda d: (s.decompress(d), s.unused_data, s.eof)
    return None


def _inflate(data: memoryview, feed: Callable[[bytes], None]) -> int:
    """Decompress one stream at the start of `data` into `feed`; returns its length."""
    step = _decompressor(bytes(data[:6]))
    if step is None:
        raise UnknownFormatError(f"initrd: an archive compressed in a form oci2vm cannot read "
                            f"(starts {bytes(data[:4]).hex()})")  # fmt: skip
    fed = 0
    pos = 0
    pending = bytes(data[: 4 * CHUNK])
    pos = len(pending)
    while True:
        try:
            out, unused, ended = step(pending)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, zstandard.ZstdError) as e:
            raise CorruptInitrdError(f"initrd: a corrupt compressed archive ({e})") from None
        fed += len(out)
        if fed > MAX_UNPACKED:
            raise Oci2vmError(f"initrd: unpacks to more than {MAX_UNPACKED >> 20} MiB")
        if out:
            feed(out)
        if ended:
            return pos - len(unused)
        if unused and not out:
            pending = unused  # the decompressor's own backlog
            continue
        if pos >= len(data) and not out and not unused:
            raise CorruptInitrdError("initrd: a compressed archive is truncated")
        pending = unused + bytes(data[pos : pos + 4 * CHUNK])
        pos += min(4 * CHUNK, len(data) - pos)


def initrd_names(data: bytes) -> list[str]:
    """Every member name of the initrd `data`, in order."""
    names: list[str] = []
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if view[pos] == 0:
            pos += 1
            continue
        if bytes(view[pos : pos + 6]) in (b"070701", b"070702"):
            pos += _uncompressed_archive(view[pos:], names)
        else:
            scanner = _Scanner(names)
            pos += _inflate(view[pos:], scanner.feed)
            scanner.finish()
    return names


def _uncompressed_archive(data: memoryview, names: list[str]) -> int:
    """The names of one uncompressed archive up to its trailer; returns its length."""
    pos = 0
    while True:
        header = bytes(data[pos : pos + HEADER])
        if len(header) < HEADER or header[:6] not in (b"070701", b"070702"):
            raise CorruptInitrdError(f"initrd: no cpio header at byte {pos} of an archive")
        try:
            size, name_size = int(header[54:62], 16), int(header[94:102], 16)
        except ValueError:
            raise CorruptInitrdError("initrd: a malformed cpio header") from None
        name_end = pos + HEADER + name_size
        name = bytes(data[pos + HEADER : name_end - 1]).decode("utf-8", "surrogateescape")
        data_end = name_end + (-name_end % 4) + size
        if data_end > len(data):
            raise CorruptInitrdError(f"initrd: member {name!r} runs past the end")
        pos = data_end + (-data_end % 4)
        if name == TRAILER:
            return pos
        names.append(name)
