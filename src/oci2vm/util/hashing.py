"""A digest computed in a thread of its own, beside the thread that reads the stream.

hashlib releases the GIL over large updates, so a layer's hash (of its compressed blob, and
on a first build of its uncompressed stream) costs the reading thread one queue put per
chunk: on a build, the inflating thread is the critical path, and the hashes run on the
core that waits for it.
"""

from __future__ import annotations

import hashlib
import threading

from oci2vm.util.polling import PolledQueue

QUEUE_CHUNKS = 4  # chunks waiting to be hashed: bounds the memory they pin
THREADED_HASH = 1 << 20  # blobs this large are hashed in a thread of their own


class HashThread:
    """feed() chunks of bytes, then hexdigest() waits for them and returns the digest.
    stop() gives up."""

    def __init__(self, hash_object: hashlib._Hash, name: str = "hash") -> None:
        self._hash = hash_object
        self._work: PolledQueue[bytes] = PolledQueue(QUEUE_CHUNKS)
        self._digest: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for chunk in self._work.items():
            self._hash.update(chunk)

    def feed(self, chunk: bytes) -> None:
        if self._work.closing:
            raise RuntimeError("HashThread fed after hexdigest() or stop()")
        self._work.put(chunk)

    def hexdigest(self) -> str:
        """Wait for every chunk fed so far; the digest in hex."""
        if self._digest is None:
            self._work.close()
            self._thread.join()
            self._digest = self._hash.hexdigest()
        return self._digest

    def stop(self) -> None:
        """Give up: the thread ends once what is queued is hashed."""
        self._work.close()
