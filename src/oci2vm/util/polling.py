"""Serving a queue from a thread that must end even when its stop signal is lost."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import TypeVar

POLL = 0.1  # seconds a serving thread waits for an item before it looks at closing()

T = TypeVar("T")


def polled(items: queue.Queue[T | None], closing: Callable[[], bool]) -> Iterator[T]:
    """The items of `items` until a None, or until closing() says so while it is empty.

    The queue is polled, not waited on: the None meant to stop the thread can be lost (a
    signal's exception in the putting thread may land inside Queue.put, losing its wake-up)
    or never queued (a stop that finds the queue full), and a thread waiting for it would
    leave whoever joins it waiting for ever (seen under SIGINT and SIGTERM)."""
    while True:
        try:
            item = items.get(timeout=POLL)
        except queue.Empty:
            if closing():
                return
            continue
        if item is None:
            return
        yield item
