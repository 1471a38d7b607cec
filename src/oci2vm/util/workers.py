"""How many threads a pool of CPU work (a C library that releases the GIL) should have."""

from __future__ import annotations

import os


def worker_count(most: int = 4) -> int:
    """The machine's CPUs, at least one and at most `most`."""
    return max(1, min(most, os.cpu_count() or 1))
