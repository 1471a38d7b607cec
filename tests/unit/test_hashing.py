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
    hasher._queue.maxsize = QUEUE_CHUNKS
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
