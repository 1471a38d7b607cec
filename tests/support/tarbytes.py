"""Tar archives byte by byte, for the tests of the tar reader's limits and of its fuzzer:
headers with any field value (tarfile refuses to write most hostile ones), pax bodies,
and a Source whose tail is gigabytes of one repeated pattern generated on demand, as a
small compressed layer can inflate to.

    header(b"x", size=2**31) + pax_body([("path", "a")])
    Tail(archive, 4 << 30, b"\\0")     # archive, then 4 GiB of zeros, never all in memory
"""

from __future__ import annotations

BLOCK = 512
# A read this large of a layer stream can only be a buffered piece of hostile metadata.
LARGEST_READ = 16 << 20


def octal(value: int, width: int) -> bytes:
    """A numeric header field: octal digits and a NUL, as tar writes them."""
    return f"{value:0{width - 1}o}".encode()[-(width - 1) :] + b"\0"


def base256(value: int, width: int) -> bytes:
    """A numeric field in GNU's base-256 form (any size, negative too)."""
    if value < 0:
        return b"\xff" + (value + 256 ** (width - 1)).to_bytes(width - 1, "big")
    return b"\x80" + value.to_bytes(width - 1, "big")


def with_checksum(block: bytearray) -> bytes:
    """`block` with its checksum field computed (the field counts as eight spaces)."""
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def header(
    kind: bytes,
    name: bytes = b"file",
    size: int | bytes = 0,
    *,
    linkname: bytes = b"",
    mode: int = 0o644,
    fields: dict[int, bytes] | None = None,
) -> bytes:
    """A ustar header block; `size` as a number (octal, or base-256 when too large) or
    as the raw field; `fields` overwrites bytes at the given offsets before the checksum."""
    block = bytearray(BLOCK)
    block[0 : len(name[:100])] = name[:100]
    block[100:108] = octal(mode, 8)
    block[108:116] = octal(0, 8)
    block[116:124] = octal(0, 8)
    if isinstance(size, bytes):
        block[124:136] = size.ljust(12, b"\0")[:12]
    else:
        size = min(size, 256**11 - 1)  # the largest base-256 field
        block[124:136] = octal(size, 12) if size < 8**11 else base256(size, 12)
    block[136:148] = octal(1_700_000_000, 12)
    block[156:157] = kind
    block[157 : 157 + len(linkname[:100])] = linkname[:100]
    block[257:265] = b"ustar\x0000"
    for at, raw in (fields or {}).items():
        block[at : at + len(raw)] = raw
    return with_checksum(block)


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def member(kind: bytes, name: bytes, data: bytes = b"", **kw: object) -> bytes:
    """A header and its padded data; the header's size is len(data) unless given."""
    size = kw.pop("size", len(data))
    return header(kind, name, size, **kw) + padded(data)  # type: ignore[arg-type]


def pax_body(records: list[tuple[str, str | bytes]]) -> bytes:
    """'LEN KEY=VALUE\\n' records, each length counting itself."""
    body = b""
    for key, value in records:
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        rec = b" " + key.encode() + b"=" + raw + b"\n"
        length = len(rec) + 1
        while len(str(length)) + len(rec) != length:
            length = len(str(length)) + len(rec)
        body += str(length).encode() + rec
    return body


def pax(records: list[tuple[str, str | bytes]], kind: bytes = b"x") -> bytes:
    """A pax extended header ('x') or global header ('g') with its records."""
    return member(kind, b"PaxHeader", pax_body(records))


END = b"\0" * 2 * BLOCK


class Tail:
    """A tar reader Source: `head`, then `tail` bytes of `pattern` repeated, made as they
    are read. A single read over LARGEST_READ fails the test: the reader must never
    buffer that much at once."""

    def __init__(self, head: bytes, tail: int = 0, pattern: bytes = b"\0") -> None:
        self._head = head
        self._size = len(head) + tail
        self._pattern = pattern
        self._pos = 0
        self.largest = 0

    def _bytes(self, size: int) -> bytes:
        size = max(0, min(size, self._size - self._pos))
        if size > LARGEST_READ:
            raise AssertionError(f"the reader buffered {size} bytes in one read")
        self.largest = max(self.largest, size)
        start, end = self._pos, self._pos + size
        self._pos = end
        from_head = self._head[start:end]
        if len(from_head) == size:
            return from_head
        tail_start = max(start, len(self._head)) - len(self._head)
        needed = size - len(from_head)
        phase = tail_start % len(self._pattern)
        reps = self._pattern * ((phase + needed) // len(self._pattern) + 1)
        return from_head + reps[phase : phase + needed]

    def read(self, size: int, /) -> bytes:
        return self._bytes(size)

    def view(self, size: int, /) -> memoryview:
        return memoryview(self._bytes(min(size, 1 << 20)))

    def skip(self, size: int, /) -> int:
        size = max(0, min(size, self._size - self._pos))
        self._pos += size
        return size
