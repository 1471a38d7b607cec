"""Helpers of the tests of blobs read while they download: a call in a thread of its
own, a hash that counts what it is given, and the files a cache holds."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from oci2vm.image.blobs import BlobStore

SETTLE = 0.2  # seconds a blocked read is given to show that it blocks


class Background:
    """`call` in a thread; its result or exception once it returns."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._call = call
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def wait(self) -> object:
        assert self.done.wait(10)
        return self.result


def files_in(store: BlobStore) -> list[str]:
    return sorted(p.name for p in store.root.rglob("*") if p.is_file())


class CountingHash:
    """A sha256 that records the size of every update."""

    def __init__(self, updates: list[int]) -> None:
        self._hash = hashlib.sha256()
        self._updates = updates

    def update(self, data: bytes) -> None:
        self._updates.append(len(data))
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
