"""A tar writer that writes layers header by header as Go's archive/tar (Docker, containerd)
does: USTAR headers, a PAX 'x' header when a field does not fit, GNU sparse 1.0 by hand, and
moby's S_IFMT bits in the mode field on request. Also records each member for tree.json."""

from __future__ import annotations

import hashlib
import stat
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .tarentry import MIB, NS, TarEntry, enc

BLOCK = 512

TYPEFLAGS: dict[str, bytes] = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}

# moby's pkg/archive puts the S_IFMT bits back into the mode field (fillGo18FileTypeBits) so
# layer digests stayed stable across Go 1.9 -> 1.10; readers must mask the field with 07777.
MODE_TYPE_BITS: dict[str, int] = {
    "file": stat.S_IFREG,
    "hardlink": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def pax_record(key: str, value: bytes) -> bytes:
    body = b" " + enc(key) + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length = len(body) + len(str(length))
    return str(length).encode() + body


def ascii_only(raw: bytes, limit: int) -> str:
    """Best-effort USTAR field for a value carried in PAX (as Go's toASCII + truncate)."""
    return bytes(b for b in raw if b < 0x80).decode("ascii")[:limit]


def ustar_fits(raw: bytes) -> bool:
    """Whether tarfile's USTAR writer can store this name (<= 100 bytes or a prefix split)."""
    if not raw.isascii():
        return False
    if len(raw) <= 100:
        return True
    parts = raw.split(b"/")
    return any(
        len(b"/".join(parts[:i])) <= 155 and len(b"/".join(parts[i:])) <= 100
        for i in range(1, len(parts))
    )


def with_type_bits(header: bytes, mode: int) -> bytes:
    """Rewrite a USTAR header's mode field (tarfile masks it to 07777) and its checksum."""
    block = bytearray(header)
    block[100:108] = b"%07o\0" % mode
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


class HashingWriter:
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.sha.update(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            yield chunk


def _sparse_map(regions: tuple[tuple[int, bytes], ...], realsize: int) -> bytes:
    """GNU sparse 1.0 map: decimal count, then offset/size pairs, newline-terminated, padded.
    A zero-length region at `realsize` ends the map when the file ends in a hole (as GNU tar)."""
    pairs = [(offset, len(chunk)) for offset, chunk in regions]
    if not pairs or pairs[-1][0] + pairs[-1][1] < realsize:
        pairs.append((realsize, 0))
    text = f"{len(pairs)}\n" + "".join(f"{o}\n{n}\n" for o, n in pairs)
    raw = text.encode()
    return raw + b"\0" * (-len(raw) % BLOCK)


def _expanded_sparse(entry: TarEntry) -> Iterator[bytes]:
    position = 0
    for offset, chunk in entry.sparse:
        while position < offset:
            step = min(MIB, offset - position)
            yield b"\0" * step
            position += step
        yield chunk
        position += len(chunk)
    while position < entry.size:
        step = min(MIB, entry.size - position)
        yield b"\0" * step
        position += step


def _record(entry: TarEntry, content_sha256: str) -> dict[str, object]:
    """The tree.json record of one member (`content_sha256` of its logical bytes)."""
    record: dict[str, object] = {
        "path": entry.path,
        "kind": entry.kind,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "mtime_ns": entry.mtime_ns,
    }
    if entry.kind == "file":
        record["size"] = entry.data_size
        record["sha256"] = content_sha256
    if entry.kind in ("symlink", "hardlink"):
        record["linkname"] = entry.linkname
    if entry.kind in ("char", "block"):
        record["rdev"] = [entry.major, entry.minor]
    if entry.xattrs:
        record["xattrs"] = {k: v.hex() for k, v in sorted(entry.xattrs.items())}
    return record


class TarWriter:
    """Writes a tar stream as Go's archive/tar does: USTAR headers; a PAX 'x' header named
    DIR/PaxHeaders.0/BASE with sorted records when a field does not fit; two zero blocks at the
    end, no padding to a record size. Returns one record per member for the expected tree."""

    def __init__(
        self, out: BinaryIO, *, expand_sparse: bool = False, type_bits: bool = False
    ) -> None:
        self.out = HashingWriter(out)
        self.expand_sparse = expand_sparse
        self.type_bits = type_bits
        self.records: list[dict[str, object]] = []

    def _header(self, entry: TarEntry, size: int, pax: dict[str, bytes], name: str) -> None:
        raw_name = enc(name) + (b"/" if entry.kind == "dir" else b"")
        if not ustar_fits(raw_name):
            pax.setdefault("path", raw_name)
            ustar_name = ascii_only(raw_name, 99 if entry.kind == "dir" else 100).rstrip("/")
        else:
            ustar_name = raw_name.decode("ascii")
        raw_link = enc(entry.linkname)
        if not raw_link.isascii() or len(raw_link) > 100:
            pax["linkpath"] = raw_link
            link = ascii_only(raw_link, 100)
        else:
            link = raw_link.decode("ascii")
        ids = {"uid": entry.uid, "gid": entry.gid}
        for key, value in ids.items():
            if not 0 <= value < 8**7:
                pax[key] = str(value).encode()
                ids[key] = 0
        seconds, fraction = divmod(entry.mtime_ns, NS)
        if fraction or not 0 <= seconds < 8**11:
            pax["mtime"] = (f"{seconds}.{fraction:09d}" if fraction else str(seconds)).encode()
        if pax:
            self._pax_header(name, pax)
        info = tarfile.TarInfo(ustar_name)
        info.type = TYPEFLAGS[entry.kind]
        info.mode = entry.mode
        info.uid, info.gid = ids["uid"], ids["gid"]
        info.size = size
        info.mtime = seconds if 0 <= seconds < 8**11 else 0
        info.linkname = link
        info.uname = info.gname = ""
        info.devmajor, info.devminor = entry.major, entry.minor
        header = info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
        if self.type_bits:
            header = with_type_bits(header, entry.mode | MODE_TYPE_BITS[entry.kind])
        self.out.write(header)

    def _pax_header(self, name: str, pax: dict[str, bytes]) -> None:
        """An 'x' member named DIR/PaxHeaders.0/BASE holding `pax`'s records, sorted by key."""
        records = b"".join(pax_record(k, pax[k]) for k in sorted(pax))
        head, _, base = name.rpartition("/")
        pax_name = (head + "/" if head else "") + "PaxHeaders.0/" + base
        info = tarfile.TarInfo(ascii_only(enc(pax_name), 100).rstrip("/"))
        info.type, info.size, info.mode, info.mtime = tarfile.XHDTYPE, len(records), 0, 0
        info.uname = info.gname = ""
        self.out.write(info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict"))
        self._write_data([records], len(records))

    def _write_data(self, chunks: Iterable[bytes], size: int) -> None:
        written = 0
        for chunk in chunks:
            self.out.write(chunk)
            written += len(chunk)
        if written != size:
            raise RuntimeError(f"tar member data is {written} bytes, header says {size}")
        self.out.write(b"\0" * (-size % BLOCK))

    def _add_sparse(self, entry: TarEntry, pax: dict[str, bytes]) -> None:
        """A GNU sparse 1.0 member: PAX GNU.sparse.* records, the map, then the data regions."""
        pax.update(
            {
                "GNU.sparse.major": b"1",
                "GNU.sparse.minor": b"0",
                "GNU.sparse.name": enc(entry.path),
                "GNU.sparse.realsize": str(entry.size).encode(),
            }
        )
        head, _, base = entry.path.rpartition("/")
        sparse_name = (head + "/" if head else "") + "GNUSparseFile.0/" + base
        header_map = _sparse_map(entry.sparse, entry.size)
        stored = len(header_map) + sum(len(chunk) for _, chunk in entry.sparse)
        self._header(entry, stored, pax, sparse_name)
        self._write_data([header_map, *(chunk for _, chunk in entry.sparse)], stored)

    def add(self, entry: TarEntry) -> None:
        pax: dict[str, bytes] = {}
        for key in sorted(entry.xattrs):
            pax["SCHILY.xattr." + key] = entry.xattrs[key]
        content = hashlib.sha256()

        def hashed(chunks: Iterable[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                content.update(chunk)
                yield chunk

        if entry.kind != "file":
            self._header(entry, 0, pax, entry.path)
        elif entry.sparse and not self.expand_sparse:
            self._add_sparse(entry, pax)
            for chunk in _expanded_sparse(entry):
                content.update(chunk)
        else:
            size = entry.data_size
            self._header(entry, size, pax, entry.path)
            if entry.sparse:
                chunks: Iterable[bytes] = _expanded_sparse(entry)
            elif entry.source is not None:
                chunks = file_chunks(entry.source)
            else:
                chunks = [entry.data]
            self._write_data(hashed(chunks), size)
        self.records.append(_record(entry, content.hexdigest()))

    def close(self) -> None:
        self.out.write(b"\0" * (2 * BLOCK))
        self.out.flush()


def write_tar(
    path: Path, entries: Iterable[TarEntry], *, expand_sparse: bool = False, type_bits: bool = False
) -> TarWriter:
    with open(path, "wb") as out:
        writer = TarWriter(out, expand_sparse=expand_sparse, type_bits=type_bits)
        for entry in entries:
            writer.add(entry)
        writer.close()
    return writer
