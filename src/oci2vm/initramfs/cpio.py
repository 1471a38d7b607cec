"""A deterministic cpio "newc" writer (and a name lister), for initramfs archives.

Written here because Python has no cpio module and the kernel reads only this one format:
the header layout and the rules followed are those of the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst ("070701", thirteen 8-digit
hex fields, the name NUL-terminated and padded so that the data starts on a 4-byte
boundary, the data padded likewise, "TRAILER!!!" last). Inode numbers are sequential and
every member gets the same mtime, uid and gid 0, so the bytes depend on the input alone.
Each member has nlink 1 (2 for a directory): the kernel treats files with nlink >= 2 as
hard links to join by inode number.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from typing import BinaryIO

from oci2vm.errors import Oci2vmError

MAGIC = b"070701"
HEADER_SIZE = 110  # the magic and 13 fields of 8 hex digits
TRAILER = "TRAILER!!!"
MAX_NAME = 4096  # PATH_MAX: the kernel refuses longer names


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    """Writes members one by one to `out`; close() writes the trailer. Parents must be
    added before their children, as the kernel creates each member as it reads it."""

    def __init__(self, out: BinaryIO, *, mtime: int = 0) -> None:
        self.out = out
        self.mtime = mtime
        self._next_inode = 1
        self._names: set[str] = set()
        self._closed = False

    def _member(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        *,
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        if self._closed:
            raise ValueError("the archive is closed")
        name = name.strip("/")
        encoded = name.encode("utf-8", "surrogateescape") + b"\0"
        if not name or name == TRAILER or len(encoded) > MAX_NAME or b"\0" in encoded[:-1]:
            raise Oci2vmError(f"cpio: unusable member name {name!r}")
        if name in self._names:
            raise Oci2vmError(f"cpio: {name!r} added twice")
        self._names.add(name)
        self._write_header(self._next_inode, mode, nlink, len(data), rdev, encoded)
        self._next_inode += 1
        self.out.write(data + _pad(len(data)))

    def _write_header(
        self, inode: int, mode: int, nlink: int, size: int, rdev: tuple[int, int], name: bytes
    ) -> None:
        # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
        # namesize check
        fields = (inode, mode, 0, 0, nlink, self.mtime, size, 0, 0, *rdev, len(name), 0)
        header = MAGIC + b"".join(b"%08X" % value for value in fields)
        self.out.write(header + name + _pad(HEADER_SIZE + len(name)))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._member(name, stat.S_IFDIR | mode, nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._member(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._member(name, stat.S_IFLNK | 0o777, target.encode("utf-8", "surrogateescape"))

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._member(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer (the output stream stays open: it is the caller's)."""
        if not self._closed:
            self._write_header(0, 0, 1, 0, (0, 0), TRAILER.encode() + b"\0")
            self._closed = True


def members(data: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(name, mode, data) of every member of `data`, one or more uncompressed newc archives
    one after the other (as the kernel reads an initramfs: NUL padding between them is
    skipped); the trailers are not listed."""
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding between concatenated archives
            pos += 1
            continue
        header = data[pos : pos + HEADER_SIZE]
        if len(header) < HEADER_SIZE or header[:6] != MAGIC:
            raise Oci2vmError(f"cpio: no newc header at byte {pos}")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise Oci2vmError(f"cpio: malformed newc header at byte {pos}") from None
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_end = pos + HEADER_SIZE + name_size
        name = data[pos + HEADER_SIZE : name_end - 1].decode("utf-8", "surrogateescape")
        start = name_end + (-name_end % 4)
        end = start + size
        if end > len(data):
            raise Oci2vmError(f"cpio: member {name!r} runs past the end")
        pos = end + (-end % 4)
        if name != TRAILER:
            yield name, mode, data[start:end]


def list_names(data: bytes) -> list[str]:
    """The member names of one or more concatenated uncompressed newc archives."""
    return [name for name, _, _ in members(data)]
