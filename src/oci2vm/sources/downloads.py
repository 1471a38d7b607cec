"""Downloads that go on while the build reads them: a build from a registry hands its
layers to a few threads here and starts flattening at once (image/arrival.py), so a cold
build costs about the slower of the download and the build, not their sum.

The build reads the blobs one after the other, each from its start. Where the registry
answers range requests (its answer to the build's request for a layer's last bytes, or to
one of a single byte, tells), every connection takes the next stripe of the first blob
that has bytes without a connection yet (Range requests, as aria2 or containerd's
multipart layer fetch do): the bytes arrive in about the order the build reads them,
all connections at a time, whether the link limits each connection (a long path, a
throttling server or CDN) or all of them together. Stripes are small while the build
waits for them, longer where a request takes long to answer or while the build is behind
the download (each costs a request). Once a blob's stripes are all taken, idle
connections take over half of what a stripe still has to fetch (Arrival.split).

Without range requests each blob comes whole by a connection of its own, at once: where
the downloads share one link (LinkProbe tells), the later ones give way while the build
waits for bytes of an earlier one.

The build owns the downloads for its whole length (a context manager): the first failure
fails every blob not yet complete with the same one-line error, so that the build, which
may be reading another layer, stops with it; leaving the context (at the end, on an error,
or on a signal) stops what still runs, removes the temporary files and closes the
registry's connections. Blobs completed before a failure stay cached: they are verified.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from oci2vm.errors import Oci2vmError
from oci2vm.image.arrival import SPLIT_ALIGN, Arrival, Span
from oci2vm.sources.linkprobe import LinkProbe, Step

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

PARALLEL_DOWNLOADS = 3  # Docker's default max-concurrent-downloads
GIVE_WAY_SLICE = 0.02  # seconds a download that gives way waits before looking again
# An idle connection takes over half of what another has left of a blob when that is at
# least twice this (Arrival.split).
SPLIT_LEAST = 8 << 20
HELP_SLICE = 0.05  # seconds an idle connection waits before looking for a part to take
# Stripes: the first ones small (the build waits for the first bytes), later ones long
# enough that a connection spends at most about 1/STRIPE_COST of its time waiting for the
# answers to their requests (a round trip, or two where the registry redirects to a CDN,
# measured on those before), up to STRIPE_MOST. A blob smaller than STRIPE_LEAST comes
# whole.
STRIPE_LEAST = 4 << 20
STRIPE_MOST = 64 << 20
STRIPE_COST = 8
READ_WINDOW = 0.2  # seconds over which the build's reading speed is measured


class Downloads:
    """Blob downloads in `workers` threads, in the order they were started."""

    def __init__(
        self,
        workers: int = PARALLEL_DOWNLOADS,
        probe: LinkProbe | None = None,
        *,
        keep_going: bool = False,
    ) -> None:
        """keep_going: a failure stops only the downloads not started yet (no build waits:
        those under way are worth caching)."""
        self._workers = workers
        self._keep_going = keep_going
        self._pool: ThreadPoolExecutor | None = None  # made on the first start(): most
        # builds read no registry, and concurrent.futures costs a little start-up
        self._lock = threading.Lock()
        self._arrivals: dict[str, Arrival] = {}  # by digest
        self._order: list[Arrival] = []  # as started: the order the build reads them in
        self._stripes: dict[Arrival, bool] = {}  # whether each is fetched in stripes
        self._deciding = threading.Lock()  # held while one is decided (_in_stripes)
        self._leaving = 0  # threads that left _help for a download not yet running
        self._queued: set[Arrival] = set()  # started, not yet running
        self._under_way: set[Arrival] = set()  # running before any download failed
        self._asked: dict[Span, float] = {}  # when each stripe was asked for
        self._answered: dict[Span, float] = {}  # when its first bytes came
        # Per connection, of the stripes done so far: seconds from a stripe's request to
        # its first bytes, and bytes per second from there (moving averages).
        self._latency: float | None = None
        self._rate: float | None = None
        self._reads: tuple[float, int] | None = None  # when the build had read how much
        self._read: float | None = None  # bytes per second the build reads (average)
        self._probe = probe or LinkProbe()
        self._futures: list[Future[None]] = []
        self._waiting = 0  # downloads started but not yet running
        self._error: BaseException | None = None
        self._interrupts: list[Callable[[], None]] = []
        self._closers: list[Callable[[], None]] = []
        self._closed = False

    def __enter__(self) -> Downloads:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def arrival(self, digest: str) -> Arrival | None:
        """The download under way of a blob, if one was started."""
        with self._lock:
            return self._arrivals.get(digest)

    def start(self, digest: str, arrival: Arrival, work: Callable[[], object]) -> None:
        """Run `work` (which fills `arrival`) in a download thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("Downloads.start() after close()")
            self._arrivals[digest] = arrival
            self._order.append(arrival)
            self._queued.add(arrival)
            arrival.before_write = functools.partial(self._give_way, arrival)
            self._waiting += 1
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="download")
            self._futures.append(self._pool.submit(self._run, arrival, work))

    def on_interrupt(self, interrupt: Callable[[], None]) -> None:
        """Called to cut the connections under way short when the downloads stop."""
        self._interrupts.append(interrupt)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Called once every download thread has ended (a session's close)."""
        self._closers.append(closer)

    def _give_way(self, arrival: Arrival, span: Span) -> None:
        """Wait while the build is close behind the download of bytes it reads before
        these (Arrival.starved), where the downloads share one link (LinkProbe): they
        would come at the expense of those the build needs now (it reads the blobs one
        after the other, in start order, each from its start): bytes of a later blob,
        or of a span of this one beyond bytes still missing. Where the downloads are
        far ahead of the build (a fast link), none waits; nor bytes the build waits for
        itself (the head and tail that size the filesystem are read before any layer)."""
        with self._lock:
            if self._stripes.get(arrival):
                if span in self._asked:
                    self._answered.setdefault(span, time.monotonic())
                return  # its bytes come in the order the build reads them
            # (not to a blob in stripes: the threads bring it, a wait would not)
            earlier = [
                a for a in self._order[: self._order.index(arrival)] if not self._stripes.get(a)
            ]
        while not arrival.failed and self._must_wait(arrival, earlier, span):
            time.sleep(GIVE_WAY_SLICE)

    def _must_wait(self, arrival: Arrival, earlier: list[Arrival], span: Span) -> bool:
        ahead = arrival.ahead(span)
        if arrival.needed and not ahead:
            return False
        with self._lock:
            whole = [a for a in self._order if not self._stripes.get(a)]
            step = self._probe.step(whole, time.monotonic())
            first = next((a for a in whole if not a.done), None)
        if step is Step.ALL:
            return False
        if step is Step.FIRST:
            return arrival is not first
        if not self._probe.shared:
            return False
        return any(a.starved for a in earlier) or (ahead and arrival.starved)

    def _run(self, arrival: Arrival, work: Callable[[], object]) -> None:
        with self._lock:
            self._waiting -= 1
            self._leaving = max(0, self._leaving - 1)
            self._queued.discard(arrival)
            if self._error is None:  # under way from here, whatever fails meanwhile
                self._under_way.add(arrival)  # (deciding on stripes may take a request)
        if not self._in_stripes(arrival):
            self._guarded(arrival, work)
        self._help()

    def _in_stripes(self, arrival: Arrival) -> bool:
        """Whether `arrival` comes in stripes (decided once, by whoever asks first, the
        others waiting for the answer): when it is large enough and its registry answers
        range requests as asked (which may take a request to find out)."""
        with self._lock:
            decided = self._stripes.get(arrival)
            if decided is None and (arrival.size < STRIPE_LEAST or arrival.span_source is None):
                decided = self._stripes[arrival] = False  # (no wait for another's request)
        if decided is not None:
            return decided
        with self._deciding:
            with self._lock:
                decided = self._stripes.get(arrival)
            if decided is not None:
                return decided
            try:
                can = arrival.splittable()
            except Exception as e:  # (a failed probe of range requests: it comes whole)
                log.debug("%s: no range requests: %s", arrival.what, e)
                can = False
            with self._lock:
                self._stripes[arrival] = can
            return can

    def _guarded(self, arrival: Arrival, work: Callable[[], object]) -> None:
        """Run `work` for `arrival`, unless a download failed meanwhile and `arrival` was
        not under way by then (with keep_going, a blob under way is worth finishing; without,
        _failed failed it: work() sees that and stops)."""
        try:
            with self._lock:
                go = self._error is None or arrival in self._under_way
            if go:
                work()
            if not arrival.committed and not arrival.busy:
                # work() gave up on it (and no other connection fetches a part): say why
                arrival.fail(self._error or Oci2vmError(f"download of {arrival.what} stopped"))
        except BaseException as e:
            arrival.fail(e)
            self._failed(e)
            raise

    def started_all(self) -> None:
        """Every blob of the build was start()ed: the threads they leave idle help with
        them (see _help)."""
        with self._lock:
            if self._closed or self._pool is None:
                return
            idle = self._workers - len(self._futures)
            for _ in range(idle):  # (each blob has a thread: nothing waits for these)
                self._futures.append(self._pool.submit(self._help, queued_first=False))

    def _help(self, *, queued_first: bool = True) -> None:
        """With no blob left to start, a connection that is done (or had none) fetches
        the next stripe (_claim), or else takes over half of what another still has to
        fetch of the first blob the build reads that has enough left, again until none
        has. queued_first: blobs not started yet come first (this thread returns to the
        pool, which runs them), after the stripes of those the build reads before them."""
        while True:
            with self._lock:
                if self._closed or (self._error is not None and not self._keep_going):
                    return
                if queued_first and self._waiting > self._leaving and not self._stripes_first():
                    self._leaving += 1  # (as many leave as there are downloads to run)
                    return
                failed = self._error is not None
                # (keep_going after a failure: only blobs under way are finished, to be cached)
                order = [a for a in self._order if not failed or a in self._under_way]
            undone = [a for a in order if not a.done]
            if not undone:
                return
            try:
                taken = self._claim(undone)
                if taken is None and not failed:
                    taken = self._split(undone)
            except BaseException as e:
                self._failed(e)
                raise
            if taken is None:
                time.sleep(HELP_SLICE)
                continue
            arrival, span = taken
            source = arrival.span_source
            assert source is not None
            log.debug("%s: bytes %d-%d by a connection of their own", arrival.what,
                      span.start, span.end)  # fmt: skip
            with self._lock:
                self._asked[span] = time.monotonic()
            try:
                self._guarded(arrival, functools.partial(source, span))
            finally:
                self._timed(span)

    def _stripes_first(self) -> bool:
        """Under the lock: whether a blob in stripes that the build reads before those
        not running yet still has bytes without a connection (they come first)."""
        for arrival in self._order:
            if arrival in self._queued:
                return False
            if self._stripes.get(arrival) and arrival.unclaimed:
                return True
        return False

    def _timed(self, span: Span) -> None:
        """Take the times of a stripe that is over into the averages _claim sizes by."""
        now = time.monotonic()
        with self._lock:
            asked = self._asked.pop(span, None)
            answered = self._answered.pop(span, None)
            if asked is None or answered is None or span.at < span.end or now <= answered:
                return  # (failed, or not a stripe: no measure of the link)
            latency, rate = answered - asked, (span.end - span.start) / (now - answered)
            if self._latency is None or self._rate is None:
                self._latency, self._rate = latency, rate
            else:
                self._latency += (latency - self._latency) / 4
                self._rate += (rate - self._rate) / 4

    def _read_rate(self, order: list[Arrival]) -> float | None:
        """Under the lock: how fast the build reads the blobs (bytes per second, an
        average over READ_WINDOW or more), once known."""
        now, read = time.monotonic(), sum(a.wanted for a in order)
        if self._reads is None:
            self._reads = (now, read)
        elif now - self._reads[0] >= READ_WINDOW:
            rate = (read - self._reads[1]) / (now - self._reads[0])
            self._read = rate if self._read is None else (self._read + rate) / 2
            self._reads = (now, read)
        return self._read

    def _claim(self, undone: list[Arrival]) -> tuple[Arrival, Span] | None:
        """The next stripe of the first blob fetched in stripes that has bytes without a
        connection yet (where the registry stopped answering range requests as asked,
        all of them: one whole answer, read past what comes before). A blob the build
        waits for comes first while none of its bytes has a connection: the build reads
        the first bytes of each layer before it flattens any (they tell how large the
        filesystem must be)."""
        # Decided first (that may ask the registry); then chosen and claimed at once,
        # under the lock, so that the stripes are claimed in order.
        striped = [a for a in undone if a.unclaimed and self._in_stripes(a)]
        ranged = {a: a.splittable() for a in striped}  # (known by now: no request)
        with self._lock:
            first = [a for a in striped if a.needed and a.unclaimed == a.size]
            for arrival in [*first, *(a for a in striped if a not in first)]:
                if self._error is not None and arrival not in self._under_way:
                    continue  # (keep_going: only blobs under way are finished)
                size = self._stripe_size(striped)
                if not ranged[arrival] or arrival.unclaimed - size < STRIPE_LEAST:
                    size = arrival.size  # all that is left: no request for a few bytes
                span = arrival.claim(size)
                if span is not None:
                    self._under_way.add(arrival)
                    return arrival, span
        return None

    def _stripe_size(self, striped: list[Arrival]) -> int:
        """Under the lock: how long the next stripe is."""
        size = STRIPE_LEAST
        if self._latency is not None and self._rate is not None:
            size = max(size, int(min(STRIPE_COST * self._latency * self._rate, STRIPE_MOST)))
        # While the build is behind the download (a fast link), longer: a stripe may take,
        # at one connection's speed, half the time the build needs to read the bytes
        # there before it (few requests, bytes mostly in order); while the build waits,
        # short, so that all connections bring what it reads next.
        read = self._read_rate(self._order)
        if read is not None and read >= 1.0 and self._rate is not None:
            longer = sum(a.lead for a in striped) * self._rate / read / 2
            size = max(size, int(min(longer, STRIPE_MOST)))
        # ...and no longer than the connections' share of what is left, so that they end
        # about together.
        left = sum(a.unclaimed for a in striped)
        size = min(size, STRIPE_MOST, max(left // self._workers, STRIPE_LEAST))
        return size - size % SPLIT_ALIGN

    def _split(self, undone: list[Arrival]) -> tuple[Arrival, Span] | None:
        """Half of what a stripe still has to fetch, of the first blob in stripes that has
        one long enough: the stripes are all taken, and a connection slower than the
        others would leave the build waiting for its end."""
        with self._lock:
            striped = [a for a in undone if self._stripes.get(a)]
        for arrival in striped:
            if arrival.has_part(SPLIT_LEAST) and arrival.splittable():
                span = arrival.split(SPLIT_LEAST)
                if span is not None:
                    return arrival, span
        return None

    def _failed(self, error: BaseException) -> None:
        """The first failure stops everything: every blob still on its way fails with it
        (with keep_going, those under way go on to their end, to be cached)."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            if self._keep_going:
                return
            pending = [a for a in self._arrivals.values() if not a.committed]
        log.debug("a download failed (%s): stopping the others", error)
        for arrival in pending:
            arrival.fail(error)
        self._interrupt()

    def _interrupt(self) -> None:
        for interrupt in self._interrupts:
            try:
                interrupt()
            except Exception as e:  # a connection that will not shut down ends on its own
                log.debug("interrupting the downloads: %s", e)

    def finish(self) -> None:
        """Wait for every download; raise the first failure."""
        with self._lock:
            futures = list(self._futures)
        if not futures:
            return
        from concurrent.futures import wait

        wait(futures)
        if self._error is not None:  # the cause, not what stopping the others raised
            raise self._error
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def close(self) -> None:
        """Stop what still runs (its blobs fail and their temporary files go), wait for
        the threads, then run the closers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = [a for a in self._arrivals.values() if not a.committed]
        stop = Oci2vmError("the build stopped before the download was complete")
        for arrival in pending:
            arrival.fail(stop)
        if pending:
            self._interrupt()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for arrival in pending:
            arrival.fail(stop)  # those cancelled before they ran
        for closer in self._closers:
            closer()
