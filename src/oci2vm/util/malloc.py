"""Large allocations in mappings of their own, where the C library allows it (glibc).

The tree's columns (tree/columns.py) and the writer's placements are arrays that grow by
reallocation as entries arrive. glibc serves blocks under its mmap threshold from the heap,
and raises that threshold by itself each time a mapped block is freed (the decompressor's
4 MiB chunks do that at once), so the growing arrays end up in the heap, where every
reallocation that cannot extend in place leaves the old block behind as a hole: at 400,000
entries the heap held 45 MB of such holes beside 38 MB of arrays (benchmarks/bench_tree.py).
A fixed threshold keeps blocks above it in mappings of their own, which a reallocation
moves with mremap(2): no copy, no hole.

It has a price: every 4 MiB inflate chunk is then a fresh mapping the kernel must zero,
~15 % more time for the Debian fixture (13,000 entries, 711 MB of tar). So the tree asks
for it only once it is large (Store, past 32,768 entries), where the holes would cost more.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt(3)'s parameter number in glibc's <malloc.h>
THRESHOLD = 256 << 10


_done: list[bool] = []


def map_large_allocations(threshold: int = THRESHOLD) -> bool:
    """Set a fixed mmap threshold for this process (once: later calls return the first
    one's answer); False where the C library has no mallopt (musl, other systems), which
    changes nothing else."""
    if _done:
        return _done[0]
    _done.append(_mallopt(threshold))
    return _done[0]


def _mallopt(threshold: int) -> bool:
    """Set the threshold, then give the holes made so far back to the system."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, threshold):
        return False
    malloc_trim(0)
    return True
