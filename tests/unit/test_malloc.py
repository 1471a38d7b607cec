"""The fixed mmap threshold (util/malloc.py) is taken where the C library is glibc, as on
Debian: without it the tree's growing arrays left as many megabytes of holes in the heap
as they held (benchmarks/bench_tree.py)."""

from __future__ import annotations

import platform

import pytest

from oci2vm.util.malloc import map_large_allocations


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_threshold() -> None:
    assert map_large_allocations()


def test_a_large_tree_asks_for_it() -> None:
    from oci2vm.tree.columns import LARGE_TABLE, Store
    from oci2vm.util import malloc

    store = Store()
    store.add_row((0,) * 9 + (-1, -1))  # a directory with no entries yet
    for i in range(LARGE_TABLE // 2 + 1):
        store.link(0, b"%d" % i, 0)
    assert malloc._done
