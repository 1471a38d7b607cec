"""A queue served by a thread of its own that must end even when its stop signal is lost."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from typing import Generic, TypeVar

POLL = 0.1  # seconds the serving thread waits for an item before it looks at `closing`

T = TypeVar("T")


class PolledQueue(Generic[T]):
    """put() items for a serving thread that takes them with items(); close() ends it once
    what is queued is served.

    The serving thread polls, and does not only wait for close()'s None: that None can be
    lost (a signal's exception in the putting thread may land inside Queue.put, losing its
    wake-up) or never queued (close() finds the queue full), and a thread waiting for it
    would leave whoever joins it waiting for ever (seen under SIGINT and SIGTERM)."""

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue[T | None] = queue.Queue(maxsize)
        self.closing = False

    def put(self, item: T) -> None:
        self._queue.put(item)

    def items(self) -> Iterator[T]:
        """For the serving thread: the items, until closed and served."""
        while True:
            try:  # once closing, what is left is taken without waiting
                item = self._queue.get_nowait() if self.closing else self._queue.get(timeout=POLL)
            except queue.Empty:
                if self.closing:
                    return
                continue
            if item is None:
                return
            yield item

    def close(self) -> None:
        """Let items() end once the queue is empty; never blocks."""
        self.closing = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
