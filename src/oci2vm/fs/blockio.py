"""Block output for filesystem writers: positional writes, gathered, and written behind.

A filesystem writer that places every byte itself (ext4 here; the same need arises for any
image writer that streams file data to its final place) hands its writes to a BlockWriter:

    io = BlockWriter(out, base=offset, block_size=4096)
    io.write_at(pos, data)        # bytes at `pos`, counted from `base`
    io.copy(pos, reader, length)  # `length` bytes of a DataReader, all-zero pieces left out
    io.flush()                    # hand what is gathered to the kernel (or the thread)
    io.close()                    # wait for every write handed on; raise its first error
    io.extend_to(size)            # make the output span `size` bytes from `base`
    io.zero(pos, length)          # written bytes no longer wanted read as zeros again

The contract:

- The output must read as zeros wherever nothing is written (a new or freshly truncated
  file): holes are never written, copy() skips all-zero pieces, and the gap between two
  gathered writes inside one block is filled from a zero buffer.
- Writes that follow on from the pending ones, or start later in their last block, are
  gathered and issued as one pwritev() of the pieces as they are, never copied, up to
  GATHER_LIMIT bytes or IOV_LIMIT pieces. A piece must therefore not change once handed
  over (bytes, or a memoryview of memory that is never written again, as DataReader
  promises).
- With a real file descriptor the gathered writes are issued by a thread of its own, so
  the kernel's copy into the page cache overlaps with the caller's work; at most
  WRITES_AHEAD of them wait, which bounds the memory their pieces pin. An error of that
  thread is raised in the caller, by the next flush() that hands on a write (write_at()
  and copy() flush as they go) or by close(). Without a descriptor (an in-memory file)
  flush() writes at once through seek() and write().
- close() does not flush: after flush() it completes the output; alone it gives up what
  is still gathered (the path for an error). It may be called more than once.
- One thread calls a BlockWriter; positions are counted from `base` and block boundaries
  from `base` too.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import BinaryIO

from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import DataReader
from oci2vm.util.polling import PolledQueue
from oci2vm.util.units import MIB, align_up

COPY_CHUNK = MIB  # the largest piece copy() asks a DataReader for
GATHER_LIMIT = MIB  # bytes gathered into one pwritev()
WRITES_AHEAD = 8  # gathered writes queued for the write-behind thread
IOV_LIMIT = 1000  # pieces per pwritev(), below IOV_MAX (1024)
_ZERO_CHUNK = bytes(COPY_CHUNK)
_ZERO_VIEW = memoryview(_ZERO_CHUNK)

Piece = bytes | memoryview


_PUNCH_HOLE = 0x03  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, <linux/falloc.h>


def punch_hole(fd: int, pos: int, length: int) -> bool:
    """Deallocate `length` bytes of `fd` at `pos`, which then read as zeros (fallocate(2));
    False where the system or the filesystem cannot (then write zeros)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = getattr(libc, "fallocate64", None) or libc.fallocate  # (musl: the latter)
    except (OSError, AttributeError):
        return False
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate.restype = ctypes.c_int
    if fallocate(fd, _PUNCH_HOLE, pos, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.ESPIPE):
        return False
    raise OSError(code, os.strerror(code))


def pwritev_all(fd: int, pieces: list[Piece], pos: int) -> None:
    """Write every piece, back to back, at `pos` of `fd`, going on after a short write."""
    total = sum(len(piece) for piece in pieces)
    written = os.pwritev(fd, pieces, pos)
    if written < total:  # a short write: go on plainly
        rest = memoryview(b"".join(pieces))[written:]
        pos += written
        while rest:
            n = os.pwrite(fd, rest, pos)
            rest, pos = rest[n:], pos + n


class _WriteBehind:
    """Positional writes made by a thread of their own, so that the kernel's copy into the
    page cache overlaps with the submitting thread's work. At most WRITES_AHEAD writes
    wait, which bounds the memory their pieces pin. After an error the thread drops the
    writes that follow (so the submitter never blocks on a full queue); the error is
    raised by the next submit() or by close()."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._work: PolledQueue[tuple[list[Piece], int]] = PolledQueue(WRITES_AHEAD)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for item in self._work.items():
            if self._error is None:
                try:
                    pwritev_all(self._fd, *item)
                except BaseException as e:  # raised in the submitting thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, pieces: list[Piece], pos: int) -> None:
        self._raise()
        self._work.put((pieces, pos))

    def close(self) -> None:
        """Wait for the writes submitted so far, then raise the thread's error if any."""
        self._work.close()  # the thread ends once the queue is empty
        self._thread.join()
        self._raise()


class BlockWriter:
    """Gathered, written-behind positional writes into `out` from byte `base` on (see the
    module's docstring for the contract). `block_size` is the unit within which a gap
    between two writes is known to read as zeros; `name` names the write-behind thread."""

    def __init__(
        self, out: BinaryIO, *, base: int = 0, block_size: int, name: str = "block-write"
    ) -> None:
        if not 0 < block_size <= COPY_CHUNK:
            raise ValueError(f"block size {block_size} is not within 1..{COPY_CHUNK}")
        self._out = out
        self._base = base
        self._block_size = block_size
        self._name = name
        self._fd: int | None = None
        try:
            self._fd = out.fileno()
            out.flush()  # from here on we write with pwrite(), past the buffer
        except (AttributeError, OSError):
            self._fd = None
        self._behind: _WriteBehind | None = None
        self._pending: list[Piece] = []  # gathered writes, from _pending_at
        self._pending_at = 0
        self._pending_end = 0

    def write_at(self, pos: int, data: Piece) -> None:
        """Write `data` at `pos` (bytes from `base`). Writes that follow on from the
        pending ones, or start later in their last block (the rest of that block is slack
        or a hole inside it, so zeros), are gathered into one pwritev() of the pieces as
        they are, never copied: small writes then cost one system call per few MiB instead
        of one each, and data from a DataReader goes to the kernel untouched. `data` must
        not change afterwards."""
        end = self._pending_end
        if self._pending and end <= pos <= align_up(end, self._block_size):
            if pos > end:
                self._pending.append(_ZERO_VIEW[: pos - end])
        else:
            self.flush()
            self._pending_at = pos
        self._pending.append(data)
        self._pending_end = pos + len(data)
        if self._pending_end - self._pending_at >= GATHER_LIMIT or len(self._pending) >= IOV_LIMIT:
            self.flush()

    def copy(self, pos: int, data: DataReader, length: int) -> None:
        """Write the next `length` bytes of `data` at `pos`, leaving all-zero pieces out
        (the output reads as zeros there already). Raises if `data` ends first."""
        while length > 0:
            piece = data.view(min(length, COPY_CHUNK))
            n = len(piece)
            if not n:
                raise Oci2vmError("a file's data ended before its recorded size")
            if piece[0] or piece[n - 1] or not _ZERO_CHUNK.startswith(piece):
                self.write_at(pos, piece)
            pos += n
            length -= n

    def flush(self) -> None:
        """Hand the gathered writes on: to the write-behind thread (started on first use),
        or, without a file descriptor, to `out` at once."""
        if not self._pending:
            return
        pos = self._base + self._pending_at
        pieces, self._pending = self._pending, []
        if self._fd is None:
            self._out.seek(pos)
            for piece in pieces:
                self._out.write(piece)
        else:
            if self._behind is None:
                self._behind = _WriteBehind(self._fd, self._name)
            self._behind.submit(pieces, pos)

    def read_at(self, pos: int, size: int) -> bytes:
        """`size` bytes at `pos` (from `base`) as written so far: what is gathered or
        behind is written first. Short only past the end of `out`."""
        self.flush()
        self.close()  # a later write starts the write-behind thread anew
        if self._fd is not None:
            return os.pread(self._fd, size, self._base + pos)
        self._out.seek(self._base + pos)
        return self._out.read(size)

    def close(self) -> None:
        """Wait for the writes handed to the write-behind thread, stop it, and raise its
        first error. What is still gathered is not written: flush() first to keep it."""
        behind, self._behind = self._behind, None
        if behind is not None:
            behind.close()

    def zero(self, pos: int, length: int) -> None:
        """Make `length` bytes at `pos` read as zeros again (bytes written there that are
        no longer wanted: a hole where the filesystem can punch one, else zeros written).
        Call after flush() and close()."""
        at = self._base + pos
        if self._fd is not None and punch_hole(self._fd, at, length):
            return
        while length > 0:
            piece = _ZERO_VIEW[: min(length, COPY_CHUNK)]
            if self._fd is not None:
                os.pwrite(self._fd, piece, at)
            else:
                self._out.seek(at)
                self._out.write(piece)
            at += len(piece)
            length -= len(piece)

    def extend_to(self, size: int) -> None:
        """Make `out` span at least `size` bytes from `base`, growing it by a hole, and
        flush its buffer. Call after flush() and close()."""
        end = self._base + size
        self._out.seek(0, 2)
        if self._out.tell() < end:
            self._out.truncate(end)
        self._out.flush()
