"""Downloads that go on while the build reads them: a build from a registry hands its
layers to a few threads here and starts flattening at once (image/arrival.py), so a cold
build costs about the slower of the download and the build, not their sum.

Where the link limits each connection rather than all of them together (a long path, a
throttling server or CDN: LinkProbe tells), one connection per blob leaves the build
waiting for the first blob at the speed of one connection. So threads without a blob of
their own take over half of what another still has to fetch (a Range request: the
registry's answer to one is checked first), for the first blob the build reads that has
enough left: its bytes then come several connections at a time, as aria2 or containerd's
multipart layer fetch do. On one shared link, that would only share the link; there,
the bytes of a part beyond those the build reads next give way to them.

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
from oci2vm.image.arrival import Arrival, Span
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
            earlier = self._order[: self._order.index(arrival)]
        while not arrival.failed and self._must_wait(arrival, earlier, span):
            time.sleep(GIVE_WAY_SLICE)

    def _must_wait(self, arrival: Arrival, earlier: list[Arrival], span: Span) -> bool:
        ahead = arrival.ahead(span)
        if arrival.needed and not ahead:
            return False
        with self._lock:
            step = self._probe.step(self._order, time.monotonic())
            first = next((a for a in self._order if not a.done), None)
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
        self._guarded(arrival, work)
        self._help()

    def _guarded(self, arrival: Arrival, work: Callable[[], object], *, part: bool = False) -> None:
        """Run `work` for `arrival`, unless a download failed meanwhile (a part split off a
        blob under way still runs: with keep_going that blob is worth finishing)."""
        try:
            if part or self._error is None:
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
        """With no blob left to start, a connection that is done (or had none) takes over
        half of what another still has to fetch of the first blob the build reads that
        has enough left, again until none has; where the link limits each connection,
        as many connections as there are threads then bring the blob the build waits
        for. On one shared link they would only share it, while the build reads each
        blob from its start: there (LinkProbe), blobs are not split. queued_first: blobs
        not started yet come first (this thread returns to the pool, which runs them)."""
        while True:
            with self._lock:
                if self._error is not None or self._closed or (queued_first and self._waiting):
                    return
                order = list(self._order)
            undone = [a for a in order if not a.done]
            if not undone:
                return
            taken = self._split(undone) if self._may_split() else None
            if taken is None:
                time.sleep(HELP_SLICE)
                continue
            arrival, span = taken
            source = arrival.span_source
            assert source is not None
            log.debug(
                "%s: another connection fetches bytes %d-%d", arrival.what, span.start, span.end
            )
            self._guarded(arrival, functools.partial(source, span), part=True)

    @staticmethod
    def _split(undone: list[Arrival]) -> tuple[Arrival, Span] | None:
        for arrival in undone:
            if (
                arrival.span_source is not None
                and arrival.has_part(SPLIT_LEAST)
                and arrival.splittable()
            ):
                span = arrival.split(SPLIT_LEAST)
                if span is not None:
                    return arrival, span
        return None

    def _may_split(self) -> bool:
        """Whether splitting may speed the build: unless the probe found one shared link,
        and not while it measures (a blob split between its two phases would look like
        one whose connections share a link). Before a verdict, or without one (a single
        blob: nothing to measure it against), blobs are split: where each connection is
        limited, the build would wait for the first blob at one connection's speed; on
        a shared link, the bytes the build reads next then come at a share of it, which
        costs the build the end of the blob at its own speed."""
        with self._lock:
            return self._probe.shared is not True and not self._probe.measuring

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
