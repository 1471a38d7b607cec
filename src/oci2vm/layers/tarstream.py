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
import binascii
import re
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from oci2vm.errors import Oci2vmError
from oci2vm.layers import acl

BLOCK = 512
_SKIP_CHUNK = 1 << 20

# Metadata that must be held in memory whole is capped before it is read. Go's
# archive/tar, which Docker, containerd and buildkit use, allows 1 MiB for a pax header
# and a GNU long name ("maxSpecialFileSize"); sparse maps get as much.
MAX_PAX_HEADER = 1 << 20  # the pax extended headers ('x') of one entry, together
MAX_LONG_NAME = 1 << 20  # a GNU long name or long link name ('L', 'K'), a volume header
MAX_SPARSE_MAP = 1 << 20  # a GNU sparse map: 1.0's text, or old GNU's extension blocks
_DECIMAL = re.compile(rb"[0-9]{1,30}")  # a pax count: 2**64 has 20 digits
_TIME = re.compile(rb"([+-]?)([0-9]{0,30})(?:\.([0-9]*))?")  # a pax time, "-1.5"

# The xattr namespaces Linux filesystems store (xattr(7)); in system. only the POSIX ACLs.
STORABLE_XATTRS = ("user.", "trusted.", "security.")
POSIX_ACLS = (acl.ACCESS, acl.DEFAULT)

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


def _show(raw: bytes) -> str:
    """A field's value for a one-line message: quoted, escaped, shortened."""
    shown = repr(raw[:40].decode("utf-8", "replace"))
    return shown + ("…" if len(raw) > 40 else "")


def _size_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


def _field(header: bytes, start: int, length: int) -> bytes:
    raw = header[start : start + length]
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _name_prefix(header: bytes) -> bytes:
    """The part of a member's name before its name field, as Go's archive/tar (thus
    docker, containerd, podman) reads it: ustar's 155-byte prefix; star's 131 bytes (its
    "tar\\0" trailer at 508, its times after the prefix); and in a GNU header, which has no
    prefix, the ustar prefix that Go before 1.8 wrote there, told by times that do not
    parse (Go's reader does the same: golang/go#12594)."""
    magic = header[257:263]
    if magic == b"ustar\0":
        return _field(header, 345, 131 if header[508:512] == b"tar\0" else 155)
    if magic == b"ustar " and header[263:265] == b" \0":
        garbled = any(not _octal_or_empty(header[at : at + 12]) for at in (345, 357))
        prefix = _field(header, 345, 155)
        if garbled and prefix.isascii():
            return prefix
    return b""


def _octal_or_empty(raw: bytes) -> bool:
    """Whether a GNU time field reads as a time (or is unset), as Go's parser has it."""
    if raw[0] == 0 or raw[0] & 0x80:  # unset, or base-256
        return True
    digits = raw.strip(b" \0").split(b"\0", 1)[0]
    return not digits.strip(b"01234567")


def _number(header: bytes, start: int, length: int, what: str) -> int:
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
        raise Oci2vmError(f"{what}: malformed tar header: bad number {raw!r}") from None


def _byte_sum(data: bytes) -> int:
    """The sum of the bytes of `data` (at most 256 of them), computed in C: Adler-32's
    first half is 1 + that sum modulo 65521, and 256 bytes cannot reach the modulus."""
    return (zlib.adler32(data) & 0xFFFF) - 1


def is_header(block: bytes) -> bool:
    """Whether a 512-byte block can begin a tar archive: a header whose checksum holds,
    or the zero block that ends an empty one."""
    return len(block) == BLOCK and (not block.strip(b"\0") or _checksum_ok(block))


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header, 148, 8, "")
    except Oci2vmError:
        return False
    # The checksum field itself counts as eight spaces.
    unsigned = _byte_sum(header[:148]) + 256 + _byte_sum(header[156:384]) + _byte_sum(header[384:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + b" " * 8 + header[156:])
    return stored == signed


def _count(key: str, value: bytes, what: str) -> int:
    """A pax count (size, uid, a sparse offset...): decimal digits only."""
    if _DECIMAL.fullmatch(value):
        return int(value)
    negative = value.startswith(b"-") and _DECIMAL.fullmatch(value[1:])
    problem = "is negative" if negative else "is not a decimal number"
    raise Oci2vmError(f"{what}: malformed pax header: {key} {_show(value)} {problem}")


def _time_ns(key: str, value: bytes, what: str) -> int:
    """A pax time ("1700000000.123456789", "-1.5") as exact integer nanoseconds."""
    match = _TIME.fullmatch(value)
    if match is None or not (match[2] or match[3]):
        raise Oci2vmError(f"{what}: malformed pax header: {key} {_show(value)} is not a time")
    sign = -1 if match[1] == b"-" else 1
    nanos = int((match[3] or b"")[:9].ljust(9, b"0"))
    return sign * (int(match[2] or b"0") * 1_000_000_000 + nanos)


def _pax_records(data: bytes, what: str) -> list[tuple[str, bytes]]:
    """'LEN KEY=VALUE\\n' records, in order (GNU sparse 0.0 repeats keys)."""
    records: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding after the last record
            break
        space = data.find(b" ", pos, pos + 32)
        if space < 0 or not _DECIMAL.fullmatch(data[pos:space]):
            raise Oci2vmError(f"{what}: malformed pax header: bad record length")
        length = int(data[pos:space])
        if pos + length > len(data) or space >= pos + length:
            raise Oci2vmError(f"{what}: malformed pax header: record overruns the header")
        record = data[space + 1 : pos + length]
        key, sep, value = record.partition(b"=")
        if not sep or not record.endswith(b"\n"):
            raise Oci2vmError(f"{what}: malformed pax header: record without key=value")
        records.append((key.decode("utf-8", "surrogateescape"), value[:-1]))
        pos += length
    return records


def _xattr_from_base64(key: str, value: bytes, what: str) -> bytes:
    """libarchive's xattr record: the value in base64, its padding left out."""
    try:
        return base64.b64decode(value + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise Oci2vmError(f"{what}: malformed pax header: {key} is not base64") from None


@dataclass(slots=True)
class _SparseRecords:
    """The GNU.sparse.* pax records of one entry (formats 0.0, 0.1 and 1.0)."""

    major: bytes | None = None
    name: bytes | None = None
    real_size: int | None = None
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    seen: bool = False  # any record at all

    def add(self, key: str, value: bytes, what: str) -> None:
        self.seen = True
        if key == "GNU.sparse.major":
            self.major = value
        elif key == "GNU.sparse.name":
            self.name = value
        elif key in ("GNU.sparse.size", "GNU.sparse.realsize"):
            self.real_size = _count(key, value, what)
        elif key == "GNU.sparse.offset":
            self.offsets.append(_count(key, value, what))
        elif key == "GNU.sparse.numbytes":
            self.sizes.append(_count(key, value, what))
        elif key == "GNU.sparse.map":
            numbers = [_count(key, n, what) for n in value.split(b",") if n]
            if len(numbers) % 2:
                raise Oci2vmError(
                    f"{what}: malformed GNU sparse map: {len(numbers)} numbers, not pairs"
                )
            self.offsets, self.sizes = numbers[::2], numbers[1::2]

    def regions(self, what: str) -> list[tuple[int, int]] | None:
        """The map given in the records (formats 0.0 and 0.1), if any."""
        if len(self.offsets) != len(self.sizes):
            raise Oci2vmError(
                f"{what}: malformed GNU sparse map: {len(self.offsets)} offsets "
                f"but {len(self.sizes)} sizes"
            )
        return list(zip(self.offsets, self.sizes, strict=True)) if self.offsets else None


def _check_sparse(member: Member, what: str) -> None:
    """A sparse map's regions come in order, within the file, and cover exactly the
    data stored in the archive."""
    assert member.sparse is not None
    end = 0
    for offset, length in member.sparse:
        if offset < end or offset + length > member.size:
            raise Oci2vmError(
                f"{what}: malformed GNU sparse map of {member.name!r}: region "
                f"({offset}, {length}) overlaps another or lies beyond the file's "
                f"{member.size} bytes"
            )
        end = offset + length
    covered = sum(length for _offset, length in member.sparse)
    if covered != member.stored:
        raise Oci2vmError(
            f"{what}: malformed GNU sparse map of {member.name!r}: it maps {covered} "
            f"bytes of data but {member.stored} are stored"
        )


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
        # Entries with POSIX ACLs as text (SCHILY.acl.*: GNU tar, star and bsdtar with
        # --acls), left out as Go's archive/tar, docker, podman and umoci leave them: the
        # binary form (SCHILY.xattr.system.posix_acl_*) is what they and we read.
        self.text_acls = 0
        # The xattrs left out because Linux stores none of them, and on how many entries.
        self.unstorable_xattrs: dict[str, None] = {}
        self.unstorable_entries = 0

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

    def _block_data(self, size: int, what: str, limit: int) -> bytes:
        """The data of an extension header, and its padding: at most `limit` bytes,
        refused before anything is read when the header claims more."""
        if size > limit:
            raise self._too_large(f"{what} of {size} bytes exceeds", limit)
        data = self._read(size)
        self._read(-size % BLOCK)
        return data

    def _too_large(self, what: str, limit: int) -> Oci2vmError:
        return Oci2vmError(
            f"{self._what}: {what} the limit of {_size_text(limit)} (the layer is corrupt "
            "or hostile: container runtimes refuse it too)"
        )

    # -- entries ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Member]:
        while True:
            self._skip_to(self._next_header)
            member = self._next()
            if member is None:
                return
            yield member

    def _block(self) -> bytes | None:
        """The next 512-byte block, or None at the end of the stream; a block cut short
        is a truncated stream (Go's archive/tar refuses it too)."""
        block = self._stream.read(BLOCK)
        self._pos += len(block)
        if not block:
            return None
        if len(block) < BLOCK:
            if self._pos == len(block):  # the whole stream: shorter than one tar header
                raise Oci2vmError(f"{self._what}: not a tar archive ({len(block)} bytes)")
            raise Oci2vmError(f"{self._what}: tar stream ends inside a header (truncated)")
        return block

    def _header(self) -> bytes | None:
        header = self._block()
        if header is None:
            return None  # simply the end
        if header[0] == 0 and not header.strip(b"\0"):
            # The end of the archive: two zero blocks (one, at the end of the stream). A
            # zero block followed by anything else is a corrupt archive, as in Go, not an
            # end that would silently drop the members after it.
            after = self._block()
            if after is None or not after.strip(b"\0"):
                return None
            raise Oci2vmError(f"{self._what}: not a valid tar stream (a zero block inside it)")
        if not _checksum_ok(header):
            if self._pos == BLOCK:  # its first block: no tar at all, more likely
                raise Oci2vmError(f"{self._what}: not a tar archive (no tar header at its start)")
            raise Oci2vmError(f"{self._what}: not a valid tar stream (bad header checksum)")
        return header

    def _next(self) -> Member | None:
        pax: list[tuple[str, bytes]] = []
        pax_size = 0
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            header = self._header()
            if header is None:
                return None
            kind = header[156:157]
            size = _number(header, 124, 12, self._what)
            if size < 0:
                raise Oci2vmError(f"{self._what}: malformed tar header: negative size {size}")
            if kind in PAX_FILE:
                pax_size += size
                if pax_size > MAX_PAX_HEADER and size <= MAX_PAX_HEADER:
                    raise self._too_large(
                        f"pax extended headers of one entry total {pax_size} bytes, which exceeds",
                        MAX_PAX_HEADER,
                    )
                data = self._block_data(size, "pax extended header", MAX_PAX_HEADER)
                pax.extend(_pax_records(data, self._what))
            elif kind == PAX_GLOBAL:
                # Parsed (a malformed one fails there too) and left aside, as Go's archive/tar
                # hands them to docker, containerd and buildkit, which ignore them: what a
                # container sees is what counts (GNU tar and Python's tarfile would apply
                # them to every later entry).
                _pax_records(
                    self._block_data(size, "pax global header", MAX_PAX_HEADER), self._what
                )
            elif kind == GNU_LONGNAME:
                long_name = self._block_data(size, "GNU long name", MAX_LONG_NAME)
                long_name = long_name.split(b"\0", 1)[0]
            elif kind == GNU_LONGLINK:
                long_link = self._block_data(size, "GNU long link name", MAX_LONG_NAME)
                long_link = long_link.split(b"\0", 1)[0]
            elif kind == GNU_VOLUME:
                self._block_data(size, "GNU volume header", MAX_LONG_NAME)
            elif kind in ENTRY_TYPES or kind == GNU_SPARSE:
                return self._member(header, kind, size, pax, long_name, long_link)
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
        name = _field(header, 0, 100)
        prefix = _name_prefix(header)
        if prefix:
            name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        what = self._what
        member = Member(
            name=_text(name),
            type=b"0" if kind in (b"7", b"\0", GNU_SPARSE) else kind,
            mode=_number(header, 100, 8, what) & 0o7777,
            uid=_number(header, 108, 8, what),
            gid=_number(header, 116, 8, what),
            mtime_ns=_number(header, 136, 12, what) * 1_000_000_000,
            size=size,
            stored=size,
            linkname=_text(long_link if long_link is not None else _field(header, 157, 100)),
            devmajor=_number(header, 329, 8, what) if kind in (CHAR, BLOCKDEV) else 0,
            devminor=_number(header, 337, 8, what) if kind in (CHAR, BLOCKDEV) else 0,
        )
        if kind == GNU_SPARSE:
            self._old_gnu_sparse(header, member)
        sparse_major = self._apply_pax(member, pax)
        self._place_data(member, kind, sparse_major)
        if kind == b"\0" and member.name.endswith("/"):
            # Pre-POSIX tars mark a directory by its name's trailing slash, with the type
            # of a regular file: a directory to tar(1), bsdtar and Go's archive/tar (thus
            # container runtimes), which skip the data area its size claims, as here.
            member.type, member.stored, member.sparse = DIRECTORY, 0, None
            self._data_end = member.offset_data
        return member

    def _place_data(self, member: Member, kind: bytes, sparse_major: bytes | None) -> None:
        """Where the member's data starts and ends, and where the next header is; the
        sparse map of a GNU 1.0 sparse file is read from the start of its data."""
        data_start = member.offset_data = self._pos
        # Only regular files (and GNU dump directories) have a data area, as in tarfile.
        area = member.stored if member.type in REGULAR or kind == GNU_DUMPDIR else 0
        if member.type in REGULAR:
            if sparse_major == b"1":
                self._sparse_map_in_data(member, area)
                member.stored = area - (self._pos - data_start)
            if member.sparse is not None:
                _check_sparse(member, self._what)
            self._data_end = member.offset_data + member.stored
        else:
            member.stored = 0
            self._data_end = data_start
        self._next_header = data_start + area + (-area % BLOCK)

    def _apply_pax(self, member: Member, pax: list[tuple[str, bytes]]) -> bytes | None:
        """Apply the entry's pax records; returns the GNU sparse major version if any."""
        sparse = _SparseRecords()
        text_acl = False
        for key, value in pax:
            if key.startswith("GNU.sparse."):
                sparse.add(key, value, self._what)
            elif key.startswith("SCHILY.acl."):
                text_acl = text_acl or bool(value)
            else:
                self._apply_record(member, key, value)
        self.text_acls += text_acl
        if member.xattrs:
            self._drop_unstorable(member)
        if sparse.name is not None:
            member.name = _text(sparse.name)
        regions = sparse.regions(self._what)
        if regions is not None:  # formats 0.0 and 0.1: the map was in the pax header
            member.sparse = regions
        if sparse.real_size is not None:
            member.size = sparse.real_size
        if sparse.major is not None and sparse.major != b"1":
            raise Oci2vmError(f"{self._what}: unsupported GNU sparse format {_show(sparse.major)}")
        return sparse.major

    def _drop_unstorable(self, member: Member) -> None:
        """Leave out the xattrs no Linux filesystem takes (setxattr answers ENOTSUP, and
        umoci, containerd and GNU tar go on without them): namespaces other than user.,
        trusted., security. and the two POSIX ACLs (macOS's com.apple.*, system.nfs4_acl),
        and an ACL without entries, which the kernel takes as the ACL's removal."""
        dropped = [
            name
            for name, value in member.xattrs.items()
            if not name.startswith(STORABLE_XATTRS) and not (name in POSIX_ACLS and len(value) > 4)
        ]
        for name in dropped:
            del member.xattrs[name]
        if dropped:
            self.unstorable_xattrs.update(dict.fromkeys(dropped))
            self.unstorable_entries += 1

    def _apply_record(self, member: Member, key: str, value: bytes) -> None:
        """One pax record. An empty value leaves the header's field as it is (POSIX:
        it deletes the record); an xattr may be empty."""
        what = self._what
        if key.startswith("SCHILY.xattr."):
            member.xattrs[key[13:]] = value
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[17:], errors="surrogateescape")
            member.xattrs[name] = _xattr_from_base64(key, value, what)
        elif not value:
            return
        elif key == "path":
            member.name = _text(value)
        elif key == "linkpath":
            member.linkname = _text(value)
        elif key == "size":
            member.size = member.stored = _count(key, value, what)
        elif key == "uid":
            member.uid = _count(key, value, what)
        elif key == "gid":
            member.gid = _count(key, value, what)
        elif key == "mtime":
            member.mtime_ns = _time_ns(key, value, what)
        elif key == "atime":
            member.atime_ns = _time_ns(key, value, what)
        elif key == "ctime":
            member.ctime_ns = _time_ns(key, value, what)

    def _sparse_map_in_data(self, member: Member, area: int) -> None:
        """GNU sparse 1.0: the map opens the data, decimal numbers one a line, padded to
        a block: the count of regions, then an offset and a length for each."""
        numbers: list[int] = []
        count: int | None = None
        pending = b""  # an unfinished line
        read = 0
        while count is None or len(numbers) < 2 * count:
            if read + BLOCK > min(area, MAX_SPARSE_MAP):
                if read + BLOCK > MAX_SPARSE_MAP:
                    raise self._too_large(
                        f"GNU sparse map of over {MAX_SPARSE_MAP} bytes exceeds", MAX_SPARSE_MAP
                    )
                raise Oci2vmError(f"{self._what}: GNU sparse map runs past the file's data")
            *lines, pending = (pending + self._read(BLOCK)).split(b"\n")
            read += BLOCK
            for line in lines:
                if count is None:
                    count = _count("GNU sparse map size", line, self._what)
                    if 4 * count > MAX_SPARSE_MAP:  # each region takes four bytes or more
                        raise self._too_large(
                            f"GNU sparse map of {count} regions exceeds", MAX_SPARSE_MAP
                        )
                else:
                    numbers.append(_count("GNU sparse map", line, self._what))
            if len(pending) > 30 and (count is None or len(numbers) < 2 * count):
                raise Oci2vmError(f"{self._what}: malformed GNU sparse map: a line too long")
        assert count is not None
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
                offset = _number(block, at, 12, self._what)
                length = _number(block, at + 12, 12, self._what)
                if offset < 0 or length < 0:
                    raise Oci2vmError(f"{self._what}: malformed GNU sparse map: negative number")
                if offset or length:
                    regions.append((offset, length))

        collect(header, 386, 4)
        extended = header[482]
        blocks = 0
        while extended:
            blocks += 1
            if blocks * BLOCK > MAX_SPARSE_MAP:
                raise self._too_large(
                    f"GNU sparse map of over {MAX_SPARSE_MAP} bytes exceeds", MAX_SPARSE_MAP
                )
            block = self._read(BLOCK)
            collect(block, 0, 21)
            extended = block[504]
        member.size = _number(header, 483, 12, self._what)
        member.sparse = regions
