"""A blob read while it downloads: the cache's temporary file of a blob being fetched,
read by the build as its bytes land, so that a layer is inflated while the rest of it is
still on the wire (a cold build then costs about the slower of the two, not their sum).

The download writes into the temporary file, by one connection or by several, each
fetching a span of the blob (Span: where a link limits each connection, an idle one
takes over the second half of what another has left, see split() and
sources/downloads.py). The bytes written from the start without a gap are the high-water
mark; a reader waits on a condition variable for bytes below it, from the file (the page
cache), so no layer is held in memory. The download hashes the bytes in order as the
mark passes them (what a connection writes at the mark, as it writes it; what landed
beyond a gap, read back from the file once the gap is filled), and commit() renames the
file into the cache only when every byte is there and the digest matched; the blob's last
byte is read only then: a reader cannot end on bytes that the download may yet refuse
(nor the build, which also waits for every download before its output appears:
Downloads.finish). A failure, or a stop, wakes every reader with the error and removes
the temporary file.

A reader does not hash what it reads again (a second pass over every compressed byte,
on a core the build needs): what it reads are bytes of the temporary file, which only
the download writes, and which hash to the digest once committed (ArrivingFile.prove).
The one way a reader could have read other bytes is a retry: a later attempt writes its
span from its start again. So a write over bytes that a reader may already have read, or
that were hashed, compares them first: where they differ, every reader that opened the
blob before its commit fails at its end, and the hash starts again from the file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.util.hashing import THREADED_HASH, HashThread

# A reader is woken at least this often to look again (a stop, a signal to the process).
WAIT_SLICE = 0.1
# read(n) returns once this much (or all of n, or the rest of the blob) is there: small
# enough to follow a slow download closely, large enough not to wake per network read.
LEAST_READ = 64 << 10
# A reader this close behind the download is held back by it (see Arrival.starved).
THIN_LEAD = 8 << 20
# Bytes landed beyond a gap are read back to be hashed in pieces of this size.
HASH_PIECE = 1 << 20
# A span is split at a multiple of this (the pieces a connection writes).
SPLIT_ALIGN = 1 << 20

# Fetches the last n bytes of the blob apart from the download (a registry's Range
# request), or returns None when it cannot.
TailSource = Callable[[int], bytes | None]


class Span:
    """Bytes [start, end) of a blob that one connection fetches; `at` is where its
    current attempt writes next. `end` moves down when another connection takes over
    the rest (Arrival.split)."""

    __slots__ = ("at", "end", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.at = start

    @property
    def left(self) -> int:
        return self.end - self.at

    def __repr__(self) -> str:
        return f"Span({self.start}, {self.end}, at={self.at})"


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
        # Called before each write, with the span written: where a download gives way
        # to one the build needs first (see Downloads).
        self.before_write: Callable[[Span], None] | None = None
        # Called with the number of bytes that landed for the first time (progress).
        self.on_landed: Callable[[int], None] | None = None
        # Fetches a span split off another (see split()), once `splittable()` says the
        # source can (a registry that answered a range request as asked).
        self.span_source: Callable[[Span], object] | None = None
        self.splittable: Callable[[], bool] = lambda: False
        self._fd: int | None = fd
        self._cond = threading.Condition()
        self._landed: list[list[int]] = []  # disjoint [start, end) written, in order
        self._received = 0  # bytes in _landed
        self._high = 0  # bytes [0, _high) are in the file
        self.first = Span(0, size)  # the first connection's: the whole blob until split
        self._spans: list[Span] = []  # those being fetched (from restart() to end_span())
        self._claimed = 0  # bytes [0, _claimed) belong to a span (claim(), restart())
        self._algorithm = digest.split(":", 1)[0]
        self._hash = hashlib.new(self._algorithm)
        self._hasher: HashThread | None = None
        self._hashed = 0  # bytes [0, _hashed) are hashed (or queued to be)
        # After a retry wrote other bytes over hashed ones: hash no further than what the
        # retry has written (beyond it lie the broken attempt's, which it will replace).
        self._hash_cap: int | None = None
        self._committed = False
        self._committing = False  # the last span ended: its connection commits
        self._error: BaseException | None = None
        self._tails: dict[int, bytes] = {}  # fetched apart: checked against the blob
        self._wanted = 0  # the furthest position a reader has asked for
        self._exposed = 0  # bytes [0, _exposed) may have been read (wait() let them)
        self._rewritten = False  # a retry wrote other bytes over some a reader may have read

    # -- the download's side ---------------------------------------------------------------

    def write_span(self, span: Span, data: bytes) -> bool:
        """Write the next bytes of `span`'s current attempt, as many of `data` as the span
        still holds (its end may have moved: split()); False once it is complete."""
        if self.before_write is not None:
            self.before_write(span)
        with self._cond:
            take = min(len(data), span.end - span.at)
            whole = data if take == len(data) else None
            landed = self._write(span.at, memoryview(data)[:take], whole) if take > 0 else 0
            span.at += max(take, 0)
            more = span.at < span.end
        self._report(landed)
        return more

    def restart(self, span: Span) -> None:
        """A (new) attempt at `span`: it writes from its start (again)."""
        with self._cond:
            span.at = span.start
            self._claimed = max(self._claimed, span.end)
            if span not in self._spans:
                self._spans.append(span)

    def claim(self, most: int) -> Span | None:
        """The next (up to) `most` bytes that no span holds yet, as a span for one more
        connection: a blob fetched in stripes, in order (sources/downloads.py). None once
        every byte has a span (the whole blob's first one holds them all)."""
        with self._cond:
            if self._committed or self._error is not None or self._claimed >= self.size:
                return None
            span = Span(self._claimed, min(self.size, self._claimed + most))
            self._claimed = span.end
            self._spans.append(span)
            return span

    @property
    def unclaimed(self) -> int:
        """Bytes that no span holds yet (claim())."""
        return 0 if self.done else self.size - self._claimed

    def has_part(self, least: int) -> bool:
        """Whether split(least) would find a part to give (it may not, by then)."""
        with self._cond:
            return not self.done and any(s.left >= 2 * least for s in self._spans)

    def split(self, least: int) -> Span | None:
        """A new span for another connection: the second half of what the span with the
        most bytes left still has to fetch, when that is at least 2 x `least`; the span
        it comes from now ends where the new one starts."""
        with self._cond:
            if self._committed or self._error is not None:
                return None
            spans = [s for s in self._spans if s.left >= 2 * least]
            if not spans:
                return None
            span = max(spans, key=lambda s: s.left)
            middle = span.at + span.left // 2
            middle -= middle % SPLIT_ALIGN
            if middle - span.at < least // 2 or span.end - middle < least // 2:
                return None
            new = Span(middle, span.end)
            span.end = middle
            self._spans.append(new)
            return new

    def end_span(self, span: Span) -> bool:
        """`span` is complete; True when it was the last one and every byte is there
        (the caller then commits)."""
        with self._cond:
            if span in self._spans:
                self._spans.remove(span)
            self._hash_cap = None  # (a retry it made is complete: the rest is hashed next)
            last = not self._spans and self._high == self.size and not self._committing
            self._committing |= last  # busy until committed (or failed)
            return last

    def ahead(self, span: Span) -> bool:
        """Whether bytes before `span` are still missing: the build reads other bytes of
        the blob before its."""
        return span.start > self._high

    @property
    def busy(self) -> bool:
        """Whether a connection still fetches a span of it, or bytes of a blob fetched in
        stripes wait for theirs."""
        with self._cond:
            pending = 0 < self._claimed < self.size
            return bool(self._spans) or pending or (self._committing and not self.done)

    def _write(self, position: int, view: memoryview, whole: bytes | None) -> int:
        """Under the lock: write `view` at `position`, merge it into what landed, hash
        what the high-water mark passes (`whole`: the bytes object `view` shows, which the
        hash may keep as it is). Returns how many bytes landed for the first time."""
        self._raise_if_failed()
        assert self._fd is not None
        end = position + len(view)
        if end > self.size:
            raise Oci2vmError(f"{self.what}: the registry sent more bytes than the blob's size")
        # Bytes a reader may have read or that were hashed: compare before overwriting.
        seen = min(max(self._exposed, self._hashed), end) - position
        if seen > 0:
            old = os.pread(self._fd, seen, position)
            if old != view[:seen]:
                reread = min(self._exposed, end) - position
                if reread > 0 and old[:reread] != view[:reread]:
                    self._rewritten = True
                hashed = min(self._hashed, end) - position
                if hashed > 0 and old[:hashed] != view[:hashed]:
                    self._restart_hash()
                    self._hash_cap = end
        written = position
        rest = view
        while rest:
            n = os.pwrite(self._fd, rest, written)
            written += n
            rest = rest[n:]
        if self._hash_cap is not None and position <= self._hash_cap:
            self._hash_cap = max(self._hash_cap, end)  # the retry goes on
        landed = self._merge(position, end)
        if self._hashed < self._high:
            self._hash_up(position, view, whole)
        return landed

    def _merge(self, start: int, end: int) -> int:
        """Add [start, end) to the landed spans; advance the high-water mark. Returns how
        many of its bytes are new."""
        if start >= end:
            return 0
        spans = self._landed
        merged = [start, end]
        kept: list[list[int]] = []
        covered = 0
        for s in spans:
            if s[1] < merged[0] or s[0] > merged[1]:
                kept.append(s)
                continue
            covered += max(0, min(s[1], end) - max(s[0], start))
            merged = [min(merged[0], s[0]), max(merged[1], s[1])]
        kept.append(merged)
        kept.sort()
        self._landed = kept
        new = (end - start) - covered
        self._received += new
        if kept[0][0] == 0 and kept[0][1] > self._high:
            self._high = kept[0][1]
            self._cond.notify_all()
        return new

    def _hash_up(self, position: int, view: memoryview, whole: bytes | None = None) -> None:
        """Hash up to the high-water mark: the bytes just written when they are next,
        then whatever landed beyond, read back from the file."""
        limit = self._high if self._hash_cap is None else min(self._high, self._hash_cap)
        if position == self._hashed and view and position + len(view) <= limit:
            self._feed(whole if whole is not None else view.tobytes())
            self._hashed += len(view)
        assert self._fd is not None
        while self._hashed < limit:
            n = min(HASH_PIECE, limit - self._hashed)
            self._feed(os.pread(self._fd, n, self._hashed))
            self._hashed += n

    def _feed(self, data: bytes) -> None:
        if self.size >= THREADED_HASH:
            if self._hasher is None:
                self._hasher = HashThread(self._hash, "blob-hash")
            self._hasher.feed(data)
        else:
            self._hash.update(data)

    def _restart_hash(self) -> None:
        """Other bytes were written over hashed ones: hash from the start again."""
        if self._hasher is not None:
            self._hasher.stop()
            self._hasher = None
        self._hash = hashlib.new(self._algorithm)
        self._hashed = 0

    def _report(self, landed: int) -> None:
        if landed and self.on_landed is not None:
            self.on_landed(landed)

    def commit(self) -> None:
        """Every byte is there: check the digest and what was fetched apart, then rename
        the file into the cache and let readers reach its end. Once is enough."""
        with self._cond:
            self._raise_if_failed()
            if self._committed:
                return
            assert self._fd is not None
            if self._high < self.size:
                missing = self.size - self._high
                raise Oci2vmError(f"{self.what}: truncated: {missing} bytes missing")
            self._hash_cap = None
            self._hash_up(self.size, memoryview(b""))
            hasher = self._hasher
            hexdigest = hasher.hexdigest() if hasher is not None else self._hash.hexdigest()
            got = f"{self._algorithm}:{hexdigest}"
            if got != self.digest:
                raise Oci2vmError(
                    f"{self.what}: digest mismatch: expected {self.digest}, got {got}"
                )
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
            if self._hasher is not None:
                self._hasher.stop()
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
        """Bytes written so far, each counted once (retries write some again)."""
        return self._received

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
    def wanted(self) -> int:
        """The furthest position its readers asked for."""
        return self._wanted

    @property
    def lead(self) -> int:
        """Bytes there, in order, that its readers have not asked for yet."""
        return 0 if self.done else max(0, self._high - self._wanted)

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
