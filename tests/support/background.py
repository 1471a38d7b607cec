"""Helpers of the tests of blobs read while they download: a call in a thread of its
own, and the files a cache holds."""

from __future__ import annotations

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
