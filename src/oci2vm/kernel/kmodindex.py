"""kmod's binary index (modules.dep.bin, modules.alias.bin, ...), the only files libkmod
looks modules up in, written byte for byte as depmod writes them, and the string hash
whose bucket order decides the order of depmod's modules.symbols.

No library writes this format; it follows kmod's tools/depmod.c (index_insert,
index_write__node; kmod 30 and 34 agree) and the layout libkmod/libkmod-index.c reads:
a header (magic 0xB007F457, version 2.1, offset of the root node), then a trie written
children first. A node is [prefix NUL] [first last child-offset*(last-first+1)]
[count (priority value NUL)*count]; which parts are present is told by flag bits in the
high nibble of the offset that points at the node. Numbers are big-endian u32."""

from __future__ import annotations

import struct
from bisect import bisect_left
from dataclasses import dataclass, field

from oci2vm.errors import Oci2vmError

INDEX_MAGIC = 0xB007F457
INDEX_VERSION = 0x00020001
NODE_PREFIX = 0x80000000
NODE_VALUES = 0x40000000
NODE_CHILDS = 0x20000000
NODE_MASK = 0x0FFFFFFF
HEADER = struct.Struct(">III")  # magic, version, root offset
U32 = struct.Struct(">I")
MASK32 = 0xFFFFFFFF


class IndexBuilder:
    """Keys and their values with priorities, written as depmod's index_write writes the
    trie index_insert builds: a key's values by rising priority, the later inserted
    first among equal ones, and a value inserted twice kept twice."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._values: dict[bytes, list[tuple[int, bytes]]] = {}

    def insert(self, key: str, value: str, priority: int) -> None:
        raw_key, raw_value = self._ascii(key), self._ascii(value)
        self._values.setdefault(raw_key, []).append((priority, raw_value))

    def _ascii(self, text: str) -> bytes:
        """depmod stops on a character past 7 bits (index__checkstring), so do we."""
        raw = text.encode("utf-8", "surrogateescape")
        if not raw.isascii():
            raise Oci2vmError(
                f"{self.what}: {text!r} is not 7-bit ASCII, which kmod's index cannot hold "
                "(depmod refuses it too)"
            )
        return raw

    def build(self) -> bytes:
        out = bytearray(HEADER.size)
        keys = sorted(self._values)
        root = _write_trie(keys, self._values, out) if keys else 0
        HEADER.pack_into(out, 0, INDEX_MAGIC, INDEX_VERSION, root)
        return bytes(out)


@dataclass(slots=True)
class _Node:
    """A node being written: keys[lo:hi] share its path; its prefix is [start:end]."""

    lo: int
    hi: int
    start: int
    end: int
    children: list[tuple[int, int, int]]  # (character, lo, hi) of each child
    offsets: dict[int, int] = field(default_factory=dict)  # character -> written offset


def _node(keys: list[bytes], lo: int, hi: int, start: int, root: bool) -> _Node:
    """The node over keys[lo:hi] whose prefix starts at `start`: the keys' common prefix
    (none for the root, which depmod never compresses), then one child per next
    character (the key ending there, if any, comes first in sorted order)."""
    end = start if root else start + _common(keys[lo], keys[hi - 1], start)
    i = lo + 1 if len(keys[lo]) == end else lo
    children = []
    while i < hi:
        char = keys[i][end]
        j = bisect_left(keys, keys[i][:end] + bytes([char + 1]), i, hi)
        children.append((char, i, j))
        i = j
    return _Node(lo, hi, start, end, children)


def _common(a: bytes, b: bytes, start: int) -> int:
    """How many bytes a and b share from `start` on."""
    low, high = 0, min(len(a), len(b)) - start
    while low < high:
        mid = (low + high + 1) // 2
        if a[start : start + mid] == b[start : start + mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _write_trie(
    keys: list[bytes], values: dict[bytes, list[tuple[int, bytes]]], out: bytearray
) -> int:
    """Writes the trie over the sorted `keys` children first (depmod's post-order) with
    an explicit stack, as keys may be thousands of characters long; returns the root's
    offset with its flags."""
    stack = [_node(keys, 0, len(keys), 0, root=True)]
    pending: list[int] = [-1]  # the character each node on the stack hangs from
    while True:
        node = stack[-1]
        if len(node.offsets) < len(node.children):
            char, lo, hi = node.children[len(node.offsets)]
            stack.append(_node(keys, lo, hi, node.end + 1, root=False))
            pending.append(char)
            node.offsets[char] = 0  # a placeholder, filled once the child is written
            continue
        offset = _emit(node, keys, values, out)
        stack.pop()
        char = pending.pop()
        if not stack:
            return offset
        stack[-1].offsets[char] = offset


def _emit(
    node: _Node, keys: list[bytes], values: dict[bytes, list[tuple[int, bytes]]], out: bytearray
) -> int:
    offset = len(out)
    if offset > NODE_MASK:
        raise Oci2vmError("a kmod index over 256 MiB, which its offsets cannot address")
    prefix = keys[node.lo][node.start : node.end]
    if prefix:
        out += prefix + b"\0"
        offset |= NODE_PREFIX
    if node.children:
        first, last = node.children[0][0], node.children[-1][0]
        out += bytes((first, last))
        for char in range(first, last + 1):
            out += U32.pack(node.offsets.get(char, 0))
        offset |= NODE_CHILDS
    key = keys[node.lo]
    if len(key) == node.end:
        # index_add_value: sorted by priority, a new value before older equal ones
        entries = sorted(reversed(values[key]), key=lambda entry: entry[0])
        out += U32.pack(len(entries))
        for priority, value in entries:
            out += U32.pack(priority) + value + b"\0"
        offset |= NODE_VALUES
    return offset


def superfast_hash(key: bytes) -> int:
    """kmod's hash_superfast (Paul Hsieh's SuperFastHash) as a little-endian machine
    computes it, `char` being signed as on x86."""
    length = len(key)
    h = length
    i = 0
    for _ in range(length >> 2):
        h = (h + (key[i] | key[i + 1] << 8)) & MASK32
        tmp = (((key[i + 2] | key[i + 3] << 8) << 11) ^ h) & MASK32
        h = ((h << 16) ^ tmp) & MASK32
        h = (h + (h >> 11)) & MASK32
        i += 4
    rem = length & 3
    if rem == 3:
        h = (h + (key[i] | key[i + 1] << 8)) & MASK32
        h ^= (h << 16) & MASK32
        h ^= (_signed(key[i + 2]) << 18) & MASK32
        h = (h + (h >> 11)) & MASK32
    elif rem == 2:
        h = (h + (key[i] | key[i + 1] << 8)) & MASK32
        h ^= (h << 11) & MASK32
        h = (h + (h >> 17)) & MASK32
    elif rem == 1:
        h = (h + _signed(key[i])) & MASK32
        h ^= (h << 10) & MASK32
        h = (h + (h >> 1)) & MASK32
    h ^= (h << 3) & MASK32
    h = (h + (h >> 5)) & MASK32
    h ^= (h << 4) & MASK32
    h = (h + (h >> 17)) & MASK32
    h ^= (h << 25) & MASK32
    h = (h + (h >> 6)) & MASK32
    return h


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def hash_order(keys: list[str], buckets: int) -> list[str]:
    """The order kmod's hash_iter visits `keys` in a table of `buckets` (a power of two)
    buckets: bucket by bucket, each bucket sorted by strcmp."""
    encoded = [(k.encode("utf-8", "surrogateescape"), k) for k in keys]
    encoded.sort(key=lambda pair: (superfast_hash(pair[0]) & (buckets - 1), pair[0]))
    return [k for _, k in encoded]
