"""Reading a .deb in Python, nothing executed: deb(5)'s ar(5) container (debian-binary,
control.tar[.xz|.gz|.zst], data.tar[.xz|.gz|.zst]), the package's control fields, and the
members of data.tar as a stream for oci2vm's tar reader.

python-debian's debfile would add a dependency to parse a 60-byte ar header and hands back
a tarfile.TarFile, a second tar reader beside oci2vm.layers.tarstream, which streams
(a kernel package's data.tar inflates to ~400 MB) and keeps xattrs as bytes. So the ar
container is read here, following ar(5)'s common format and deb(5)'s member rules.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from oci2vm.debian.compression import compression_of, open_stream
from oci2vm.debian.control import parse_fields
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from oci2vm.layers.tarstream import TarReader

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60  # name[16] mtime[12] uid[6] gid[6] mode[8] size[10] fmag[2]
AR_FMAG = b"`\n"
MAX_MEMBERS = 16  # deb(5): three, plus optional ones after them; anything else is refused
MAX_CONTROL = 1 << 20  # the control file of a package


@dataclass(frozen=True, slots=True)
class ArMember:
    """One member of the ar container: `size` bytes at `offset` of the .deb."""

    name: str
    offset: int
    size: int


def ar_members(f: BinaryIO | _Window, total: int, what: str) -> list[ArMember]:
    """The members of an ar archive of `total` bytes, from their headers alone."""
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise Oci2vmError(f"{what}: not a Debian package (no ar header)")
    members: list[ArMember] = []
    pos = len(AR_MAGIC)
    while pos < total:
        f.seek(pos)
        header = f.read(AR_HEADER)
        if len(header) < AR_HEADER or header[58:60] != AR_FMAG or len(members) >= MAX_MEMBERS:
            raise Oci2vmError(f"{what}: malformed ar member header at byte {pos}")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise Oci2vmError(f"{what}: malformed ar member size at byte {pos}") from None
        start = pos + AR_HEADER
        if size < 0 or start + size > total:
            raise Oci2vmError(f"{what}: ar member at byte {pos} runs past the end (truncated)")
        name = header[:16].decode("ascii", "replace").rstrip(" ").removesuffix("/")
        members.append(ArMember(name, start, size))
        pos = start + size + (size & 1)  # members are padded to an even offset
    return members


class DebFile:
    """A .deb whose bytes `blob` holds (verified by the caller, see Archive.download)."""

    def __init__(self, blob: BlobRef, what: str | None = None) -> None:
        self.blob = blob
        self.what = what or str(blob.path)
        with open(blob.path, "rb") as f:
            f.seek(blob.offset)
            members = ar_members(_Window(f, blob.offset, blob.size), blob.size, self.what)
        self.members = {m.name: m for m in members}
        self._check_layout(members)

    def _check_layout(self, members: list[ArMember]) -> None:
        """deb(5): debian-binary first, saying 2.x; then control.tar*, then data.tar*."""
        if not members or members[0].name != "debian-binary" or members[0].size > 64:
            raise Oci2vmError(f"{self.what}: not a Debian binary package (no debian-binary)")
        with self._open_member(members[0]) as f:
            version = f.read(members[0].size)
        if not version.startswith(b"2."):
            raise Oci2vmError(f"{self.what}: Debian package format {version.strip()!r} is not 2.x")
        self.control_member = self._member("control.tar")
        self.data_member = self._member("data.tar")

    def _member(self, stem: str) -> ArMember:
        found = [m for m in self.members.values() if m.name.split(".")[:2] == stem.split(".")]
        if len(found) != 1:
            raise Oci2vmError(f"{self.what}: no single {stem}* member (a broken package)")
        if compression_of(found[0].name) is None:
            raise Oci2vmError(f"{self.what}: {found[0].name} is compressed in a way not read")
        return found[0]

    def _open_member(self, member: ArMember) -> _Window:
        f = open(self.blob.path, "rb")  # noqa: SIM115 - owned by the window
        return _Window(f, self.blob.offset + member.offset, member.size)

    @contextmanager
    def _tar(self, member: ArMember) -> Iterator[TarReader]:
        kind = compression_of(member.name)
        assert kind is not None
        what = f"{self.what}: {member.name}"
        stream = open_stream(self._open_member(member), kind, what, size=member.size)
        try:
            yield TarReader(stream, what=what)
            stream.finish()
        finally:
            stream.abort()

    def control(self) -> dict[str, str]:
        """The package's control fields (Package, Version, Depends, ...)."""
        with self._tar(self.control_member) as tar:
            for member in tar:
                if member.isfile() and member.name.removeprefix("./") == "control":
                    if member.size > MAX_CONTROL:
                        break
                    return parse_fields(tar.read_data(member.size), f"{self.what}: control")
        raise Oci2vmError(f"{self.what}: control.tar holds no control file (a broken package)")

    @contextmanager
    def data(self) -> Iterator[TarReader]:
        """data.tar, as a TarReader: iterate it for the members (names as stored, usually
        "./usr/..."); while at a regular file, the reader is that file's DataReader
        (TreeEditor.stream(path, reader, member.size)). Nothing is held in memory beyond a
        few chunks. Leaving the block normally reads on to the end, so a corrupt tail
        raises; leaving it by an exception stops at once."""
        with self._tar(self.data_member) as tar:
            yield tar


def open_deb(blob: BlobRef, what: str | None = None) -> DebFile:
    return DebFile(blob, what)


class _Window(io.RawIOBase):
    """`size` bytes of file `f` from `offset`, as a file of their own (an ar member)."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        super().__init__()
        self._f = f
        self._base = offset
        self._size = size
        self._pos = 0
        f.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0:
            raise ValueError("only absolute seeks")
        self._pos = min(max(pos, 0), self._size)
        self._f.seek(self._base + self._pos)
        return self._pos

    def read(self, size: int = -1, /) -> bytes:
        left = self._size - self._pos
        size = left if size < 0 else min(size, left)
        data = self._f.read(size) if size > 0 else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            super().close()

    def abort(self) -> None:
        self.close()
