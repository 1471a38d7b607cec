"""Cyclic garbage collection paused while a tree is built or written.

CPython's collector runs a full pass whenever the objects allocated since the last one
reach a quarter of those that survived it. When the tree held one object per entry, those
passes walked the whole growing tree again and again (a third of the build's time at a
million entries, benchmarks/bench_tree.py); the tree is rows of arrays now
(tree/columns.py), but flattening and the writers still make objects by the million, and
neither they nor the tree form reference cycles, so nothing is lost by not looking for
them until the bulk work is done; reference counting still frees everything at once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cycle_collection_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, restoring its state after it (nested
    blocks leave it as the outermost found it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
