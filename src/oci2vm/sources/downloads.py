"""Downloads that go on while the build reads them: a build from a registry hands its
layers to a few threads here and starts flattening at once (image/arrival.py), so a cold
build costs about the slower of the download and the build, not their sum.

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
from oci2vm.image.arrival import Arrival
from oci2vm.sources.linkprobe import LinkProbe, Step

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

PARALLEL_DOWNLOADS = 3  # Docker's default max-concurrent-downloads
GIVE_WAY_SLICE = 0.02  # seconds a download that gives way waits before looking again


class Downloads:
    """Blob downloads in `workers` threads, in the order they were started."""

    def __init__(self, workers: int = PARALLEL_DOWNLOADS, probe: LinkProbe | None = None) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None  # made on the first start(): most
        # builds read no registry, and concurrent.futures costs a little start-up
        self._lock = threading.Lock()
        self._arrivals: dict[str, Arrival] = {}  # by digest
        self._order: list[Arrival] = []  # as started: the order the build reads them in
        self._probe = probe or LinkProbe()
        self._futures: list[Future[None]] = []
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

    def _give_way(self, arrival: Arrival) -> None:
        """Wait while the build is close behind the download of a blob it reads before
        this one (Arrival.starved), where the downloads share one link (LinkProbe): the
        bytes of this one would come at the expense of those the build needs now (it
        reads the blobs one after the other, in start order). Where the downloads are
        far ahead of the build (a fast link), none waits; nor one the build waits for
        itself (the head and tail that size the filesystem are read before any layer)."""
        with self._lock:
            earlier = self._order[: self._order.index(arrival)]
        while not arrival.failed and not arrival.needed and self._must_wait(arrival, earlier):
            time.sleep(GIVE_WAY_SLICE)

    def _must_wait(self, arrival: Arrival, earlier: list[Arrival]) -> bool:
        with self._lock:
            step = self._probe.step(self._order, time.monotonic())
            first = next((a for a in self._order if not a.done), None)
        if step is Step.ALL:
            return False
        if step is Step.FIRST:
            return arrival is not first
        return bool(self._probe.shared) and any(a.starved for a in earlier)

    def _run(self, arrival: Arrival, work: Callable[[], object]) -> None:
        try:
            if self._error is None:
                work()
            if not arrival.committed:  # work() gave up on it; say why to its readers
                arrival.fail(self._error or Oci2vmError(f"download of {arrival.what} stopped"))
        except BaseException as e:
            arrival.fail(e)
            self._failed(e)
            raise

    def _failed(self, error: BaseException) -> None:
        """The first failure stops everything: every blob still on its way fails with it."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
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
