"""util/hashing.py: a digest computed in a thread of its own."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from oci2vm.util.hashing import QUEUE_CHUNKS, HashThread


def test_the_digest_is_of_every_chunk_fed_in_order() -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    hasher = HashThread(hashlib.sha256())
    for chunk in chunks:
        hasher.feed(chunk)
    assert hasher.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert hasher.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()  # kept
    with pytest.raises(RuntimeError):
        hasher.feed(b"late")


def test_stop_ends_the_thread_even_with_a_full_queue() -> None:
    hasher = HashThread(hashlib.sha256())
    release = threading.Event()
    real = hasher._hash

    class Slow:  # holds the thread on its first chunk until the queue has filled
        def update(self, data: bytes) -> None:
            release.wait(5)
            real.update(data)

    hasher._hash = Slow()  # type: ignore[assignment]
    for _ in range(QUEUE_CHUNKS + 1):
        hasher.feed(b"x" * 100)
    hasher.stop()  # the queue is full: its None is not queued
    release.set()
    deadline = time.monotonic() + 5
    while hasher._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not hasher._thread.is_alive()


def test_a_polled_queue_ends_its_thread_without_its_none() -> None:
    """A close() whose None was lost still ends the serving thread (after what is queued)."""
    from oci2vm.util.polling import PolledQueue

    work: PolledQueue[int] = PolledQueue(2)
    served: list[int] = []
    thread = threading.Thread(target=lambda: served.extend(work.items()))
    thread.start()
    work.put(1)
    work.put(2)
    work.closing = True  # as close() does, its None lost
    thread.join(5)
    assert not thread.is_alive() and served == [1, 2]
