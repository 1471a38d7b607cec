"""Where the ext4 writer put each regular file's data, kept compactly until its inode is
packed: the writer holds this for every file of the image at once.

Nearly every file is one extent from its first block (or none at all), so a file is a
number in two flat arrays (its first disk block and its length in blocks, 12 bytes), found
through Inode.writer_key; only the others keep their extent leaf entries (pack_leaves) in a
dict. A writer_key is an index into this store's rows of placed inodes, and counts only
when the row at that index is the inode's (or was copied to it: a file another tree
streamed, grafted into this one): a key another writer gave (the same tree written twice)
or a number InodeNumbering gave is never mistaken for this store's.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from oci2vm.fs.ext4.inode import LEAF, MAX_EXTENT_LEN, pack_leaves
from oci2vm.fs.ext4.layout import MASK32
from oci2vm.tree.columns import Store
from oci2vm.tree.model import Inode

_SEVERAL = -1  # in _first: the file's leaf entries are in _packed


class Placements:
    """Each placed file's extents, in the order the files were placed."""

    def __init__(self) -> None:
        # By key: the placed inodes (their store's number in _stores, and row), in placement
        # order; nearly always one store, the tree's.
        self._stores: list[Store] = []
        self._store_of = array("I")
        self._rows = array("i")
        self._first = array("q")  # by key: first disk block, or _SEVERAL
        self._length = array("I")  # by key: blocks of the one extent
        self._packed: dict[int, bytes] = {}  # by key: leaf entries, for _SEVERAL

    def __len__(self) -> int:
        return len(self._rows)

    def inode(self, key: int) -> Inode:
        """The inode placed under `key` (where its row is now)."""
        store, row = self._stores[self._store_of[key]].resolve(self._rows[key])
        return Inode.at(store, row)

    def key(self, inode: Inode) -> int | None:
        """The key of a placed inode, None for one this store has not placed."""
        return self.key_at(inode.store, inode.row, inode.writer_key)

    def key_at(self, store: Store, row: int, key: int) -> int | None:
        """key() of the inode at `row` of `store`, whose writer_key is `key`."""
        if not 0 <= key < len(self._rows):
            return None
        placed, placed_row = self._stores[self._store_of[key]], self._rows[key]
        if placed_row != row or placed is not store:
            placed, placed_row = placed.resolve(placed_row)
            if placed_row != row or placed is not store:
                return None
        return key

    def add(self, inode: Inode, pieces: list[tuple[int, int, int]]) -> int:
        """Record an inode's (logical block, disk block, length) pieces; return its key."""
        key = len(self._rows)
        self._store_of.append(self._store_index(inode.store))
        self._rows.append(inode.row)
        if not pieces:
            self._first.append(0)
            self._length.append(0)
        elif len(pieces) == 1 and pieces[0][0] == 0 and pieces[0][2] <= MAX_EXTENT_LEN:
            self._first.append(pieces[0][1])
            self._length.append(pieces[0][2])
        else:
            self._first.append(_SEVERAL)
            self._length.append(0)
            self._packed[key] = pack_leaves(pieces)
        inode.writer_key = key
        return key

    def _store_index(self, store: Store) -> int:
        stores = self._stores
        for index in range(len(stores) - 1, -1, -1):
            if stores[index] is store:
                return index
        stores.append(store)
        return len(stores) - 1

    def packed(self, key: int) -> bytes:
        """The file's extents as on-disk leaf entries (what pack_leaves() made of them)."""
        first = self._first[key]
        if first == _SEVERAL:
            return self._packed[key]
        length = self._length[key]
        return LEAF.pack(0, length, first >> 32, first & MASK32) if length else b""

    def single(self, key: int) -> tuple[int, int] | None:
        """(first disk block, length) of a file placed as one extent from its first block
        or none at all (length 0): nearly every file; None for the others (packed())."""
        first = self._first[key]
        return None if first == _SEVERAL else (first, self._length[key])

    def several(self) -> Iterator[int]:
        """The keys of the files placed in more than one extent (or not from block 0)."""
        return iter(self._packed)

    def extent_count(self, key: int) -> int:
        if self._first[key] == _SEVERAL:
            return len(self._packed[key]) // LEAF.size
        return 1 if self._length[key] else 0

    def runs(self, key: int) -> Iterator[tuple[int, int]]:
        """The file's (first disk block, length) runs, in logical order."""
        first = self._first[key]
        if first != _SEVERAL:
            if self._length[key]:
                yield first, self._length[key]
            return
        for _logical, length, hi, lo in LEAF.iter_unpack(self._packed[key]):
            yield (hi << 32) | lo, length
