"""Where a tree's inodes and directory entries live: one row each in typed arrays, not one
Python object per entry (tree.model.Inode is a view of a row).

An image of a million files is a million rows: a Python object, its name as a str and a
dict slot cost ~260 bytes per entry, a row of these arrays ~90 (benchmarks/bench_tree.py).
Inode rows hold kind, mode, owner, times, size, layer and the writer's key in columns of
fixed width; what few inodes have (xattrs, a symlink's target, a device's numbers, data
kept in memory or in a layer) is in dicts by row. Directory entries are rows of their own
(a hardlinked inode has several), chained per directory in insertion order and found by
(directory, name) through one open-addressing table; names are bytes in one arena.

A value a column cannot hold (an owner past 32 bits, a time past 2**63 ns) is kept exactly
in `wide`, the column holding its sentinel. Rows are never freed: an entry a later layer
replaces keeps its row until the store goes, with the tree.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterator, Mapping
from typing import Any

from oci2vm.errors import Oci2vmError
from oci2vm.util.malloc import map_large_allocations

# Inode columns, by number (Store.cols); the times are Store.times[column - ATIME].
KIND, PAYLOAD, MODE, UID, GID, MTIME, SIZE, LAYER, WRITER_KEY, FIRST, LAST, ATIME, CTIME = range(13)
_TYPECODES = "BBHIIqqhiii"
# The value each column keeps in `wide` instead (its largest unsigned, its least signed).
_LIMITS: dict[str, tuple[int, int]] = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "h": (-(1 << 15), (1 << 15) - 1),
    "I": (0, 0xFFFFFFFF),
    "i": (-(1 << 31), (1 << 31) - 1),
    "q": (-(1 << 63), (1 << 63) - 1),
}
SENTINEL = tuple(_LIMITS[code][1] if code in "BHI" else _LIMITS[code][0] for code in _TYPECODES)
NO_TIME = -(1 << 63)  # in a times column: None (or a time kept in `wide`)

# What an inode's payload slot holds (PAYLOAD column).
NONE, CHILDREN, STREAMED, OTHER = 0, 1, 2, 3

_EMPTY = -1  # an empty slot of the lookup table
_DEAD = -1  # d_inode of a removed entry
_MAX_LOAD = 0.5
_NAMES_LIMIT = 1 << 32
LARGE_TABLE = 1 << 16  # a lookup table this large (32,768 entries or more): a large tree


class Store:
    """The rows of one tree (and of inodes made for it)."""

    def __init__(self) -> None:
        self.cols: list[array[int]] = [array(code) for code in _TYPECODES]
        # atime and ctime: made when a row first has one (most images have none).
        self.times: list[array[int] | None] = [None, None]
        self.wide: dict[tuple[int, int], int] = {}  # (column, row) -> value
        self.xattrs: dict[int, Mapping[str, bytes]] = {}
        self.other: dict[int, Any] = {}  # payload OTHER: bytes, DataRef or (major, minor)
        # Directory entries: the directory's row, the inode's row (_DEAD once removed),
        # the name's offset and length in `names`, the directory's next entry (-1: last).
        self.d_parent = array("i")
        self.d_inode = array("i")
        self.d_name = array("I")
        self.d_len = array("I")
        self.d_next = array("i")
        self.names = bytearray()
        self.table = array("i", [_EMPTY]) * 16
        self.live = 0  # entries in the table
        # Rows copied into another store (an inode placed in another tree): row -> there.
        self.moved: dict[int, tuple[Store, int]] = {}

    def __len__(self) -> int:
        return len(self.d_parent)

    @property
    def rows(self) -> int:
        return len(self.cols[KIND])

    # --- inode rows ------------------------------------------------------------------

    def add_row(self, values: tuple[int, ...]) -> int:
        """A new inode row with the values of the columns before the times (times: none)."""
        cols = self.cols
        row = len(cols[KIND])
        if not any(map(operator.eq, values, SENTINEL)):
            kind, payload, mode, uid, gid, mtime, size, layer, key, first, last = cols
            try:
                kind.append(values[KIND])
                payload.append(values[PAYLOAD])
                mode.append(values[MODE])
                uid.append(values[UID])
                gid.append(values[GID])
                mtime.append(values[MTIME])
                size.append(values[SIZE])
                layer.append(values[LAYER])
                key.append(values[WRITER_KEY])
                first.append(values[FIRST])
                last.append(values[LAST])
            except OverflowError:  # a value the column cannot hold: the careful way
                for col in cols:
                    del col[row:]
            else:
                self._times_row()
                return row
        for column, col in enumerate(cols):
            value = values[column]
            if value != SENTINEL[column]:
                try:
                    col.append(value)
                    continue
                except OverflowError:
                    pass
            self.wide[(column, row)] = value
            col.append(SENTINEL[column])
        self._times_row()
        return row

    def _times_row(self) -> None:
        for times in self.times:
            if times is not None:
                times.append(NO_TIME)

    def get(self, column: int, row: int) -> int:
        value = self.cols[column][row]
        if value == SENTINEL[column]:
            return self.wide[(column, row)]
        return value

    def set(self, column: int, row: int, value: int) -> None:
        col = self.cols[column]
        sentinel = SENTINEL[column]
        if col[row] == sentinel:
            self.wide.pop((column, row), None)
        if value != sentinel:
            try:
                col[row] = value
                return
            except OverflowError:
                pass
        self.wide[(column, row)] = value
        col[row] = sentinel

    def get_time(self, column: int, row: int) -> int | None:
        times = self.times[column - ATIME]
        if times is None:
            return None
        value = times[row]
        if value == NO_TIME:
            return self.wide.get((column, row))
        return value

    def set_time(self, column: int, row: int, value: int | None) -> None:
        times = self.times[column - ATIME]
        if times is None:
            if value is None:
                return
            times = self.times[column - ATIME] = array("q", [NO_TIME]) * self.rows
        self.wide.pop((column, row), None)
        times[row] = NO_TIME
        if value is not None:
            if value != NO_TIME and -(1 << 63) < value < (1 << 63):
                times[row] = value
            else:
                self.wide[(column, row)] = value

    # --- directory entries -------------------------------------------------------------

    def _home(self, parent: int, name: bytes) -> int:
        return (hash(name) + parent * 0x9E3779B1) & (len(self.table) - 1)

    def name_of(self, entry: int) -> bytes:
        """The name of directory entry `entry`."""
        offset = self.d_name[entry]
        return bytes(self.names[offset : offset + self.d_len[entry]])

    def find(self, parent: int, name: bytes) -> int:
        """The live entry `name` of directory `parent`, or -1."""
        table = self.table
        mask = len(table) - 1
        slot = (hash(name) + parent * 0x9E3779B1) & mask  # as _home()
        while True:
            entry = table[slot]
            if entry == _EMPTY:
                return -1
            if self.d_parent[entry] == parent:
                offset = self.d_name[entry]
                if (
                    self.d_len[entry] == len(name)
                    and self.names[offset : offset + len(name)] == name
                ):
                    return entry
            slot = (slot + 1) & mask

    def link(self, parent: int, name: bytes, inode: int) -> None:
        """Make `name` in directory `parent` refer to row `inode`: an entry already there
        keeps its place in the directory's order, a new one comes last."""
        if self.live + 1 > len(self.table) * _MAX_LOAD:
            self._grow()
        table, d_parent, d_name, d_len, names = (
            self.table,
            self.d_parent,
            self.d_name,
            self.d_len,
            self.names,
        )
        mask = len(table) - 1
        size = len(name)
        slot = (hash(name) + parent * 0x9E3779B1) & mask  # as _home(), then as find()
        while (entry := table[slot]) != _EMPTY:
            if d_parent[entry] == parent and d_len[entry] == size:
                offset = d_name[entry]
                if names[offset : offset + size] == name:
                    self.d_inode[entry] = inode
                    return
            slot = (slot + 1) & mask
        offset = len(names)
        if offset + size >= _NAMES_LIMIT:
            raise Oci2vmError("the image's file names exceed 4 GiB")
        entry = len(d_parent)
        names += name
        d_parent.append(parent)
        self.d_inode.append(inode)
        d_name.append(offset)
        d_len.append(size)
        self.d_next.append(-1)
        first, last = self.cols[FIRST], self.cols[LAST]
        if first[parent] < 0:
            first[parent] = entry
        else:
            self.d_next[last[parent]] = entry
        last[parent] = entry
        table[slot] = entry
        self.live += 1

    def _grow(self) -> None:
        if len(self.table) >= LARGE_TABLE:
            map_large_allocations()  # growing arrays must not leave holes in the heap
        old = self.table
        table = self.table = array("i", [_EMPTY]) * (len(old) * 2)
        mask = len(table) - 1
        d_parent, d_name, d_len, names = self.d_parent, self.d_name, self.d_len, self.names
        for entry in old:
            if entry != _EMPTY:
                offset = d_name[entry]
                name = bytes(names[offset : offset + d_len[entry]])
                slot = (hash(name) + d_parent[entry] * 0x9E3779B1) & mask  # as _home()
                while table[slot] != _EMPTY:
                    slot = (slot + 1) & mask
                table[slot] = entry

    def unlink(self, parent: int, name: bytes) -> bool:
        """Remove the entry `name` of directory `parent`; False if there is none."""
        entry = self.find(parent, name)
        if entry < 0:
            return False
        self._drop(entry)
        return True

    def _drop(self, entry: int) -> None:
        """Take an entry out of the lookup table (linear probing: later entries of the
        same run move back into the gap) and mark it removed in its directory's chain."""
        table = self.table
        mask = len(table) - 1
        gap = self._home(self.d_parent[entry], self.name_of(entry))
        while table[gap] != entry:
            gap = (gap + 1) & mask
        slot = gap
        while True:
            slot = (slot + 1) & mask
            other = table[slot]
            if other == _EMPTY:
                break
            home = self._home(self.d_parent[other], self.name_of(other))
            # Move `other` back into the gap unless its home lies after the gap and at
            # or before its slot (cyclically): then it is already as near home as can be.
            if (slot > gap and (home <= gap or home > slot)) or (
                slot < gap and home <= gap and home > slot
            ):
                table[gap] = other
                gap = slot
        table[gap] = _EMPTY
        self.d_inode[entry] = _DEAD
        self.live -= 1
        # A directory's first entry is kept live (or -1), so that asking whether it has
        # any costs one look however many of its entries went: removed entries at the head
        # are passed once, here.
        parent = self.d_parent[entry]
        first = self.cols[FIRST]
        if first[parent] == entry:
            following = self.d_next[entry]
            while following >= 0 and self.d_inode[following] == _DEAD:
                following = self.d_next[following]
            first[parent] = following
            if following < 0:
                self.cols[LAST][parent] = -1

    def clear(self, parent: int) -> None:
        """Remove every entry of directory `parent`."""
        first, last = self.cols[FIRST], self.cols[LAST]
        entry = first[parent]
        while entry >= 0:
            if self.d_inode[entry] != _DEAD:
                self._drop(entry)
            entry = self.d_next[entry]
        first[parent] = last[parent] = -1

    def entries(self, parent: int) -> Iterator[int]:
        """The live entries of directory `parent`, in insertion order."""
        first = self.cols[FIRST]
        entry = first[parent]
        d_inode, d_next = self.d_inode, self.d_next
        while entry >= 0:
            if d_inode[entry] != _DEAD:
                yield entry
            entry = d_next[entry]

    def has_entries(self, parent: int) -> bool:
        return self.cols[FIRST][parent] >= 0  # live or -1 (see _drop)

    # --- rows from another store ---------------------------------------------------------

    def copy_from(self, source: Store, row: int) -> int:
        """Copy row `row` of `source` (with, for a directory, everything below it) into this
        store; return its row here. A row copied before is not copied again (hardlinks stay
        one inode), and `source.moved` records where each went."""
        done = source.moved.get(row)
        if done is not None and done[0] is self:
            return done[1]
        top = self._copy_row(source, row)
        stack = [(row, top)]
        while stack:
            old, new = stack.pop()
            if source.get(PAYLOAD, old) != CHILDREN:
                continue
            for entry in list(source.entries(old)):
                child = source.d_inode[entry]
                done = source.moved.get(child)
                if done is not None and done[0] is self:
                    self.link(new, source.name_of(entry), done[1])
                    continue
                copied = self._copy_row(source, child)
                self.link(new, source.name_of(entry), copied)
                stack.append((child, copied))
        return top

    def _copy_row(self, source: Store, row: int) -> int:
        values = tuple(source.get(column, row) for column in range(FIRST))
        new = self.add_row((*values, -1, -1))
        for column in (ATIME, CTIME):
            self.set_time(column, new, source.get_time(column, row))
        if row in source.xattrs:
            self.xattrs[new] = source.xattrs[row]
        if row in source.other:
            self.other[new] = source.other[row]
        source.moved[row] = (self, new)
        return new

    def resolve(self, row: int) -> tuple[Store, int]:
        """Where row `row` of this store is now: itself, or where it was copied to last."""
        store = self
        while (moved := store.moved.get(row)) is not None:
            store, row = moved
        return store, row
