"""A forward-only tar reader for layer streams.

Python's tarfile spends most of a layer's parsing time decoding fields that oci2vm
never uses, copies its stream-mode buffer on every read, and turns xattr values into
text. This reader parses only what a filesystem needs, keeps xattr values as bytes,
and reads straight from the stream. It follows POSIX pax (IEEE 1003.1-2008 "pax
Interchange Format"), ustar, and GNU tar's extensions (long names 'L'/'K', old sparse
'S', and the pax sparse formats 0.0, 0.1 and 1.0 from GNU tar's manual, "Sparse Formats").
"""

from __future__ import annotations

import base64
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from oci2vm.errors import Oci2vmError

BLOCK = 512
_SKIP_CHUNK = 1 << 20

REGULAR = (b"0", b"\0", b"7")
HARDLINK = b"1"
SYMLINK = b"2"
CHAR = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
PAX_FILE = (b"x", b"X")  # X: Solaris' name for the same thing
PAX_GLOBAL = b"g"
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
GNU_SPARSE = b"S"
GNU_VOLUME = b"V"
GNU_DUMPDIR = b"D"
ENTRY_TYPES = (*REGULAR, HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO, GNU_DUMPDIR)


@dataclass(slots=True)
class Member:
    """One archive entry, with every extension header applied."""

    name: str  # as stored (decoded UTF-8, undecodable bytes as surrogates)
    type: bytes  # the typeflag; GNU 'S' and contiguous '7' files read as regular '0'
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int  # regular files: the logical size, holes included
    stored: int  # bytes of file data that follow in the archive
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    atime_ns: int | None = None
    ctime_ns: int | None = None
    offset_data: int = 0  # where the stored data starts in the stream
    sparse: list[tuple[int, int]] | None = None  # (offset, length) regions, else dense
    xattrs: dict[str, bytes] = field(default_factory=dict)

    def isfile(self) -> bool:
        return self.type in REGULAR

    def isdir(self) -> bool:
        return self.type in (DIRECTORY, GNU_DUMPDIR)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _field(header: bytes, start: int, length: int) -> bytes:
    raw = header[start : start + length]
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _number(header: bytes, start: int, length: int) -> int:
    """A numeric field: octal ASCII, or GNU's base-256 (first byte 0x80, or 0xff for
    negative numbers, as GNU tar writes times before 1970)."""
    raw = header[start : start + length]
    lead = raw[0]
    if lead in (0x80, 0xFF):
        value = int.from_bytes(raw[1:], "big")
        if lead == 0xFF:
            value -= 256 ** (length - 1)
        return value
    try:
        return int(raw.strip(b" \0") or b"0", 8)  # the usual "0000644\0" or " 644 \0"
    except ValueError:
        pass
    digits = raw.split(b"\0", 1)[0].strip()  # digits, NUL, then anything
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise Oci2vmError(f"malformed tar header: bad number {raw!r}") from None


def _byte_sum(data: bytes) -> int:
    """The sum of the bytes of `data` (at most 256 of them), computed in C: Adler-32's
    first half is 1 + that sum modulo 65521, and 256 bytes cannot reach the modulus."""
    return (zlib.adler32(data) & 0xFFFF) - 1


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header, 148, 8)
    # The checksum field itself counts as eight spaces.
    unsigned = _byte_sum(header[:148]) + 256 + _byte_sum(header[156:384]) + _byte_sum(header[384:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + b" " * 8 + header[156:])
    return stored == signed


def _time_ns(value: str) -> int:
    """A pax time ("1700000000.123456789", "-1.5") as exact integer nanoseconds."""
    sign = -1 if value.startswith("-") else 1
    whole, _, frac = value.lstrip("+-").partition(".")
    try:
        seconds = int(whole or "0")
        nanos = int((frac + "000000000")[:9]) if frac else 0
    except ValueError:
        raise Oci2vmError(f"malformed pax time {value!r}") from None
    return sign * (seconds * 1_000_000_000 + nanos)


def _pax_records(data: bytes) -> list[tuple[str, bytes]]:
    """'LEN KEY=VALUE\\n' records, in order (GNU sparse 0.0 repeats keys)."""
    records: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding after the last record
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise Oci2vmError("malformed pax header: bad record length") from None
        if space < 0 or length <= 0 or pos + length > len(data):
            raise Oci2vmError("malformed pax header: record overruns the header")
        record = data[space + 1 : pos + length]
        key, sep, value = record.partition(b"=")
        if not sep or not record.endswith(b"\n"):
            raise Oci2vmError("malformed pax header: record without key=value")
        records.append((key.decode("utf-8", "surrogateescape"), value[:-1]))
        pos += length
    return records


class _FileSource:
    """read()/view()/skip() over a plain binary file (a rootfs tar, tests)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, size: int) -> bytes:
        return self._f.read(size)

    def view(self, size: int) -> memoryview:
        return memoryview(self._f.read(min(size, _SKIP_CHUNK)))

    def skip(self, size: int) -> int:
        left = size
        while left > 0 and (chunk := self._f.read(min(left, _SKIP_CHUNK))):
            left -= len(chunk)
        return size - left


class Source(Protocol):
    """What a TarReader reads: decompress.LayerStream, or any file through _FileSource."""

    def read(self, size: int, /) -> bytes: ...

    def view(self, size: int, /) -> memoryview: ...

    def skip(self, size: int, /) -> int: ...


class TarReader:
    """Iterates a tar stream's entries. After each member, up to member.stored bytes of
    its data may be read with read_data() (copied) or view() (in place); the rest is
    skipped on the next step."""

    def __init__(self, stream: Source | BinaryIO, what: str = "layer") -> None:
        self._stream: Source = (
            stream if hasattr(stream, "view") else _FileSource(stream)  # type: ignore[assignment]
        )
        self._what = what
        self._pos = 0
        self._data_end = 0  # end of the current member's data, padding excluded
        self._next_header = 0
        self._global: list[tuple[str, bytes]] = []

    # -- the stream -----------------------------------------------------------------

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        self._pos += len(data)
        if len(data) != size:
            raise Oci2vmError(f"{self._what}: tar stream ends inside an entry (truncated)")
        return data

    def _skip_to(self, pos: int) -> None:
        if self._pos < pos:
            self._pos += self._stream.skip(pos - self._pos)
            if self._pos < pos:
                raise Oci2vmError(f"{self._what}: tar stream ends inside an entry (truncated)")

    def read_data(self, size: int) -> bytes:
        """Up to `size` bytes of the current member's stored data, copied."""
        size = min(size, self._data_end - self._pos)
        if size <= 0:
            return b""
        data = self._stream.read(size)
        self._pos += len(data)
        if len(data) < size:
            raise Oci2vmError(f"{self._what}: tar stream ends inside a file (truncated)")
        return data

    def view(self, size: int) -> memoryview:
        """Up to `size` bytes of the current member's stored data, in place (at least
        one while any is left): this makes the reader a DataReader for the member."""
        size = min(size, self._data_end - self._pos)
        if size <= 0:
            return memoryview(b"")
        data = self._stream.view(size)
        self._pos += len(data)
        if not data:
            raise Oci2vmError(f"{self._what}: tar stream ends inside a file (truncated)")
        return data

    def _block_data(self, size: int) -> bytes:
        """The data of an extension header, and its padding."""
        data = self._read(size)
        self._read(-size % BLOCK)
        return data

    # -- entries ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Member]:
        while True:
            self._skip_to(self._next_header)
            member = self._next()
            if member is None:
                return
            yield member

    def _header(self) -> bytes | None:
        header = self._stream.read(BLOCK)
        self._pos += len(header)
        if len(header) < BLOCK or (header[0] == 0 and not header.strip(b"\0")):
            return None  # end of archive (two zero blocks, or simply the end)
        if not _checksum_ok(header):
            raise Oci2vmError(f"{self._what}: not a valid tar stream (bad header checksum)")
        return header

    def _next(self) -> Member | None:
        pax: list[tuple[str, bytes]] = []
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            header = self._header()
            if header is None:
                return None
            kind = header[156:157]
            size = _number(header, 124, 12)
            if kind in PAX_FILE:
                pax.extend(_pax_records(self._block_data(size)))
            elif kind == PAX_GLOBAL:
                self._global.extend(_pax_records(self._block_data(size)))
            elif kind == GNU_LONGNAME:
                long_name = self._block_data(size).split(b"\0", 1)[0]
            elif kind == GNU_LONGLINK:
                long_link = self._block_data(size).split(b"\0", 1)[0]
            elif kind == GNU_VOLUME:
                self._block_data(size)
            elif kind in ENTRY_TYPES or kind == GNU_SPARSE:
                return self._member(header, kind, size, self._global + pax, long_name, long_link)
            else:
                raise Oci2vmError(
                    f"{self._what}: unsupported tar entry type {kind.decode('latin-1')!r}"
                )

    def _member(
        self,
        header: bytes,
        kind: bytes,
        size: int,
        pax: list[tuple[str, bytes]],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> Member:
        magic = header[257:263]
        name = _field(header, 0, 100)
        if magic == b"ustar\0":  # POSIX ustar: a prefix field extends the name
            prefix = _field(header, 345, 155)
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        member = Member(
            name=_text(name),
            type=b"0" if kind in (b"7", b"\0", GNU_SPARSE) else kind,
            mode=_number(header, 100, 8) & 0o7777,
            uid=_number(header, 108, 8),
            gid=_number(header, 116, 8),
            mtime_ns=_number(header, 136, 12) * 1_000_000_000,
            size=size,
            stored=size,
            linkname=_text(long_link if long_link is not None else _field(header, 157, 100)),
            devmajor=_number(header, 329, 8) if kind in (CHAR, BLOCKDEV) else 0,
            devminor=_number(header, 337, 8) if kind in (CHAR, BLOCKDEV) else 0,
        )
        if kind == GNU_SPARSE:
            self._old_gnu_sparse(header, member)
        sparse_major = self._apply_pax(member, pax)
        data_start = member.offset_data = self._pos
        # Only regular files (and GNU dump directories) have a data area, as in tarfile.
        area = member.stored if member.type in REGULAR or kind == GNU_DUMPDIR else 0
        if member.type in REGULAR:
            if sparse_major == "1":
                self._sparse_map_in_data(member)
                member.stored = area - (self._pos - data_start)
            self._data_end = member.offset_data + member.stored
        else:
            member.stored = 0
            self._data_end = data_start
        self._next_header = data_start + area + (-area % BLOCK)
        return member

    def _apply_pax(self, member: Member, pax: list[tuple[str, bytes]]) -> str | None:
        """Apply pax records to a member; returns the GNU sparse major version if any."""
        sparse_major = None
        sparse_offsets: list[int] = []
        sparse_sizes: list[int] = []
        sparse_name: bytes | None = None
        real_size: int | None = None
        for key, value in pax:
            if key == "path":
                member.name = _text(value)
            elif key == "linkpath":
                member.linkname = _text(value)
            elif key == "size":
                member.size = member.stored = int(value)
            elif key == "uid":
                member.uid = int(value)
            elif key == "gid":
                member.gid = int(value)
            elif key == "mtime":
                member.mtime_ns = _time_ns(value.decode())
            elif key == "atime":
                member.atime_ns = _time_ns(value.decode())
            elif key == "ctime":
                member.ctime_ns = _time_ns(value.decode())
            elif key.startswith("SCHILY.xattr."):
                member.xattrs[key[13:]] = value
            elif key.startswith("LIBARCHIVE.xattr."):
                name = urllib.parse.unquote(key[17:])
                member.xattrs[name] = base64.b64decode(value + b"=" * (-len(value) % 4))
            elif key == "GNU.sparse.major":
                sparse_major = value.decode()
            elif key == "GNU.sparse.name":
                sparse_name = value
            elif key in ("GNU.sparse.size", "GNU.sparse.realsize"):
                real_size = int(value)
            elif key == "GNU.sparse.offset":
                sparse_offsets.append(int(value))
            elif key == "GNU.sparse.numbytes":
                sparse_sizes.append(int(value))
            elif key == "GNU.sparse.map":
                numbers = [int(n) for n in value.split(b",") if n]
                sparse_offsets, sparse_sizes = numbers[::2], numbers[1::2]
        if sparse_name is not None:
            member.name = _text(sparse_name)
        if sparse_offsets or sparse_major is not None or real_size is not None:
            if sparse_offsets:  # formats 0.0 and 0.1: the map was in the pax header
                member.sparse = list(zip(sparse_offsets, sparse_sizes, strict=True))
            if real_size is not None:
                member.size = real_size
        if sparse_major is not None and sparse_major != "1":
            raise Oci2vmError(f"{self._what}: unsupported GNU sparse format {sparse_major}")
        return sparse_major

    def _sparse_map_in_data(self, member: Member) -> None:
        """GNU sparse 1.0: the map opens the data, decimal numbers one a line, padded to
        a block: the count of regions, then an offset and a length for each."""
        buffer = self._read(BLOCK)
        numbers: list[int] = []
        count: int | None = None
        while True:
            lines = buffer.split(b"\n")
            complete, buffer = lines[:-1], lines[-1]
            for line in complete:
                if count is None:
                    count = int(line)
                else:
                    numbers.append(int(line))
            if count is not None and len(numbers) >= 2 * count:
                break
            buffer += self._read(BLOCK)
        pairs = numbers[: 2 * count]
        member.sparse = list(zip(pairs[::2], pairs[1::2], strict=True))
        member.offset_data = self._pos

    def _old_gnu_sparse(self, header: bytes, member: Member) -> None:
        """GNU's old sparse headers: four (offset, length) pairs in the header, more in
        extension blocks, and the real size at offset 483."""
        regions: list[tuple[int, int]] = []

        def collect(block: bytes, start: int, count: int) -> None:
            for i in range(count):
                at = start + 24 * i
                offset, length = _number(block, at, 12), _number(block, at + 12, 12)
                if offset or length:
                    regions.append((offset, length))

        collect(header, 386, 4)
        extended = header[482]
        while extended:
            block = self._read(BLOCK)
            collect(block, 0, 21)
            extended = block[504]
        member.size = _number(header, 483, 12)
        member.sparse = regions
