"""A blob read while it downloads: the cache's temporary file of a blob being fetched,
read by the build as its bytes land, so that a layer is inflated while the rest of it is
still on the wire (a cold build then costs about the slower of the two, not their sum).

The download writes into the temporary file and advances a high-water mark; a reader
waits on a condition variable for bytes beyond what it has read, from the file (the page
cache), so no layer is held in memory. The file is renamed into the cache only after the
download verified the digest (BlobStore.fill), and the blob's last byte is read only
then: a reader cannot end on bytes that the download may yet refuse (nor the build, which
also waits for every download before its output appears: Downloads.finish).
A failure, or a stop, wakes every reader with the error and removes the temporary file.

A reader does not hash what it reads again (a second pass over every compressed byte,
on a core the build needs): what it reads are bytes of the temporary file, which only
the download writes, and which hash to the digest once committed (ArrivingFile.prove).
The one way a reader could have read other bytes is a retry: a later attempt writes from
the start again. So a write over bytes that a reader may already have read compares them
first, and where they differ, every reader that opened the blob before its commit fails
at its end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from oci2vm.errors import Oci2vmError

# A reader is woken at least this often to look again (a stop, a signal to the process).
WAIT_SLICE = 0.1
# read(n) returns once this much (or all of n, or the rest of the blob) is there: small
# enough to follow a slow download closely, large enough not to wake per network read.
LEAST_READ = 64 << 10
# A reader this close behind the download is held back by it (see Arrival.starved).
THIN_LEAD = 8 << 20

# Fetches the last n bytes of the blob apart from the download (a registry's Range
# request), or returns None when it cannot.
TailSource = Callable[[int], bytes | None]


class Arrival:
    """One blob on its way into the cache: `size` bytes into `tmp` (an open file `fd`),
    renamed to `final` once verified. `what` names it in messages."""

    def __init__(self, fd: int, tmp: Path, final: Path, size: int, what: str, digest: str) -> None:
        self.tmp = tmp
        self.final = final
        self.size = size
        self.what = what
        self.digest = digest  # what commit() says the bytes hash to
        self.tail_source: TailSource | None = None
        # Called before each write: where a download gives way to one the build needs
        # first (see Downloads).
        self.before_write: Callable[[], None] | None = None
        self._fd: int | None = fd
        self._cond = threading.Condition()
        self._high = 0  # bytes [0, _high) are in the file
        self._committed = False
        self._error: BaseException | None = None
        self._tails: dict[int, bytes] = {}  # fetched apart: checked against the blob
        self._wanted = 0  # the furthest position a reader has asked for
        self._exposed = 0  # bytes [0, _exposed) may have been read (wait() let them)
        self._rewritten = False  # a retry wrote other bytes over some a reader may have read

    # -- the download's side ---------------------------------------------------------------

    def write(self, position: int, data: bytes | memoryview) -> None:
        """Write bytes of the current attempt at `position`. An attempt after a broken one
        writes from 0 again, over bytes a reader may have read already: the download's
        digest check proves the new ones; those a reader may have read are compared
        with the new ones first (a registry that served other bytes the first time
        fails the readers, see prove())."""
        if self.before_write is not None:
            self.before_write()
        view = memoryview(data)
        # Under the lock: fail() from another thread must not close the file between
        # here and the write (its number could be another file's by then), and a reader
        # cannot be let at these bytes between the comparison and the write.
        with self._cond:
            self._raise_if_failed()
            assert self._fd is not None
            seen = min(self._exposed, self._high) - position
            if seen > 0 and not self._rewritten:
                seen = min(seen, len(view))
                if os.pread(self._fd, seen, position) != view[:seen]:
                    self._rewritten = True
            while view:
                n = os.pwrite(self._fd, view, position)
                position += n
                view = view[n:]
            if position > self._high:
                self._high = position
                self._cond.notify_all()

    def commit(self) -> None:
        """The download's bytes matched `digest`: check what was fetched apart, then
        rename the file into the cache and let readers reach its end."""
        with self._cond:
            self._raise_if_failed()
            assert self._fd is not None
            for n, fetched in self._tails.items():
                if os.pread(self._fd, n, self.size - n) != fetched:
                    raise Oci2vmError(
                        f"{self.what}: the registry answered a range request with other "
                        "bytes than the blob's own"
                    )
            os.replace(self.tmp, self.final)
            os.close(self._fd)
            self._fd = None
            self._committed = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Give up (the download failed, or the build stopped): remove the temporary file
        and wake the readers with `error`. Nothing to do once committed or failed."""
        with self._cond:
            if self._committed or self._error is not None:
                return
            self._error = error
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.tmp.unlink(missing_ok=True)
            self._cond.notify_all()

    # -- the readers' side -----------------------------------------------------------------

    @property
    def committed(self) -> bool:
        return self._committed

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def received(self) -> int:
        """Bytes written so far (the most of any attempt)."""
        return self._high

    @property
    def done(self) -> bool:
        return self._committed or self._error is not None

    @property
    def starved(self) -> bool:
        """Whether the download is less than THIN_LEAD ahead of its readers (or of the
        start, before any): more bytes of it now would let the build go faster."""
        if self._committed or self._error is not None:
            return False
        return self._high - self._wanted < THIN_LEAD

    @property
    def needed(self) -> bool:
        """Whether a reader waits for bytes of it now (the build cannot go on without)."""
        return self._wanted > self._high and not self._committed

    def _raise_if_failed(self) -> None:
        error = self._error
        if error is None:
            return
        # A new exception per raise: several threads may raise it at once.
        if isinstance(error, Oci2vmError):
            raise Oci2vmError(str(error)) from error
        raise Oci2vmError(f"download of {self.what} failed: {error or type(error).__name__}")

    def open(self) -> ArrivingFile:
        """A reader of the blob from its start (the final file, once it is there)."""
        with self._cond:
            self._raise_if_failed()
            path = self.final if self._committed else self.tmp
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            early = not self._committed
        return ArrivingFile(self, fd, early)

    def prove(self, digest: str, early: bool) -> None:
        """Raise unless a reader that read the whole blob (opened before the commit if
        `early`) read bytes that hash to `digest`: those the download verified, never
        changed by a retry while it could read them."""
        with self._cond:
            self._raise_if_failed()
            if not self._committed:
                raise Oci2vmError(f"{self.what}: read to its end before it was verified")
            if digest != self.digest:
                raise Oci2vmError(
                    f"{self.what}: digest mismatch: expected {digest}, got {self.digest}"
                )
            if early and self._rewritten:
                raise Oci2vmError(
                    f"{self.what}: the registry sent other bytes when the download was "
                    "retried than the build had read: run the build again (the blob is "
                    "cached now, verified)"
                )

    def wait(
        self,
        position: int,
        want: int,
        stop: threading.Event | None = None,
        most: int | None = None,
    ) -> int:
        """How many bytes from `position` the caller may read now, up to `most`: at least
        min(want, the rest), waiting for them (the last byte waits for the commit); 0
        only at the end of a verified blob. Raises the download's error, or Oci2vmError
        once `stop` is set (wake()). The caller reads no more than that."""
        want = min(want, self.size - position)
        with self._cond:
            self._wanted = max(self._wanted, position + want)
            while True:
                self._raise_if_failed()
                if stop is not None and stop.is_set():
                    raise Oci2vmError(f"{self.what}: reading stopped")
                if self._committed:
                    return self.size - position if most is None else min(most, self.size - position)
                # The last byte only once verified: a reader (which checks the digest
                # at the end) cannot finish on bytes the download may yet refuse.
                there = min(self._high, self.size - 1) - position
                if there >= min(want, self.size - 1 - position) > 0:
                    if most is not None:
                        there = min(there, most)
                    # Before the caller reads them: a retry compares what it writes here.
                    self._exposed = max(self._exposed, position + there)
                    return there
                self._cond.wait(WAIT_SLICE)

    def wake(self) -> None:
        """Have every waiting reader look again (one of them was told to stop)."""
        with self._cond:
            self._cond.notify_all()

    def head(self, n: int) -> bytes:
        """The first n bytes (fewer for a shorter blob), once they are there."""
        with self.open() as f:
            return f.read(n)

    def tail(self, n: int) -> bytes:
        """The last n bytes: fetched apart when the download is not done, so that the
        build can start now (they are checked against the blob before it is committed),
        else when the download is complete."""
        n = min(n, self.size)
        fetched = (
            self.tail_source(n) if self.tail_source is not None and not self.committed else None
        )
        with self._cond:
            self._raise_if_failed()
            if fetched is not None and len(fetched) == n and not self._committed:
                self._tails[n] = fetched
                return fetched
        self.wait(self.size, 1)
        with self.open() as f:
            f.seek(self.size - n)
            return f.read(n)


class ArrivingFile:
    """A file-like reader of an Arrival: reads block until their bytes are written."""

    def __init__(self, arrival: Arrival, fd: int, early: bool) -> None:
        self._arrival = arrival
        self._fd: int | None = fd
        self._early = early  # opened before the commit: may have read a broken attempt
        self._position = 0
        self._stop = threading.Event()

    def prove(self, digest: str) -> None:
        """At the end of the blob: raise unless the bytes read hash to `digest` (they are
        the download's, verified: Arrival.prove)."""
        self._arrival.prove(digest, self._early)

    def seek(self, position: int) -> int:
        self._position = position
        return position

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (at least LEAST_READ of them, or the rest), in one copy."""
        if self._fd is None:
            raise ValueError("read of a closed file")
        if size < 0:
            size = self._arrival.size - self._position
        if size == 0:
            return b""
        there = self._arrival.wait(self._position, min(size, LEAST_READ), self._stop, size)
        data = os.pread(self._fd, there, self._position) if there else b""
        self._position += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        if self._fd is None:
            raise ValueError("read of a closed file")
        view = memoryview(buffer)
        if not view:
            return 0
        there = self._arrival.wait(
            self._position, min(len(view), LEAST_READ), self._stop, len(view)
        )
        view = view[:there]
        n = os.preadv(self._fd, [view], self._position) if view else 0
        self._position += n
        return n

    def interrupt(self) -> None:
        """From another thread: a read waiting for bytes raises instead (the reading
        thread is told to stop, and would otherwise wait for the download)."""
        self._stop.set()
        self._arrival.wake()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ArrivingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
