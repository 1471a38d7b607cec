"""Cyclic garbage collection paused while a tree of millions of objects is built or written.

CPython's collector runs a full pass whenever the objects allocated since the last one
reach a quarter of those that survived it: while flattening adds one long-lived object per
entry, those passes walk the whole growing tree again and again, and at a million entries
they were a third of the build's time (measured with benchmarks/bench_tree.py). The tree
and the writers' state hold no reference cycles, so nothing is lost by not looking for
them until the bulk work is done; reference counting still frees everything else at once.
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
