"""ext4 directories: linear blocks and hashed (htree) indexes.

Facts used (kernel Documentation/filesystems/ext4/directory.rst, e2fsprogs lib/ext2fs/dirhash.c):
a directory entry is inode, rec_len, name_len, file_type and the name, padded to 4 bytes; with
metadata_csum every leaf block ends in a 12-byte fake entry (inode 0, rec_len 12, type 0xDE)
holding crc32c of the block. A directory that outgrows one block gets an htree: block 0 keeps
'.' and '..' (whose rec_len covers the block) followed by dx_root_info and the dx entries
(hash, block) sorted by hash, the first entry's hash replaced by limit/count; one level of
interior nodes (a fake empty entry, then limit/count/entries) when the root is full. Index
blocks end in an 8-byte dx_tail with crc32c over the used entries and the zeroed tail. Names are
hashed with half-MD4 seeded by s_hash_seed, as unsigned chars (s_flags), low bit cleared; the
low bit of an index hash marks a leaf that continues its predecessor's hash.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from oci2vm.errors import EntryError
from oci2vm.fs.ext4.layout import BLOCK_SIZE, HASH_HALF_MD4, MASK32, crc32c
from oci2vm.tree.model import Kind
from oci2vm.util.units import ceil_div

FILE_TYPES: dict[Kind, int] = {
    Kind.FILE: 1,
    Kind.DIR: 2,
    Kind.CHAR: 3,
    Kind.BLOCK: 4,
    Kind.FIFO: 5,
    Kind.SOCKET: 6,
    Kind.SYMLINK: 7,
}

TAIL_SIZE = 12
LEAF_SPACE = BLOCK_SIZE - TAIL_SIZE
DX_TAIL_SIZE = 8

# The records of directory.rst, with the sizes it gives.
_DIRENT_HEAD = "<IHBB"  # ext4_dir_entry_2 before the name: inode, rec_len, name_len, file_type
assert struct.calcsize(_DIRENT_HEAD) == 8
# ext4_dir_entry_tail: det_reserved_zero1, det_rec_len, det_reserved_zero2, det_reserved_ft,
# det_checksum
_DIRENT_TAIL = "<IHBBI"
assert struct.calcsize(_DIRENT_TAIL) == TAIL_SIZE == 12
# dx_root_info: reserved_zero, hash_version, info_length, indirect_levels, unused_flags
_DX_ROOT_INFO = "<IBBBB"
assert struct.calcsize(_DX_ROOT_INFO) == 8
# dx_countlimit (limit, count) in the place of the first dx_entry's hash, then its block
_DX_COUNTLIMIT = "<HHI"
assert struct.calcsize(_DX_COUNTLIMIT) == 8
_DX_ENTRY = "<II"  # dx_entry: hash, block
assert struct.calcsize(_DX_ENTRY) == 8
_DX_TAIL = "<II"  # dx_tail: dt_reserved, dt_checksum
assert struct.calcsize(_DX_TAIL) == DX_TAIL_SIZE == 8
_HASH_SEED = "<4I"  # s_hash_seed: four le32 words (super.rst)
assert struct.calcsize(_HASH_SEED) == 16
ROOT_LIMIT = (BLOCK_SIZE - 12 - 12 - 8 - DX_TAIL_SIZE) // 8  # 507
NODE_LIMIT = (BLOCK_SIZE - 8 - DX_TAIL_SIZE) // 8  # 510

_DEFAULT_SEED = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_K2 = 0o13240474631
_K3 = 0o15666365641


def _half_md4(buf: list[int], w: list[int]) -> None:
    """The half-MD4 transform of eight words into buf (three rounds of eight steps),
    unrolled: this runs once per 32 name bytes of every name in a hashed directory."""
    m = MASK32
    a, b, c, d = buf
    # Round 1: F(x, y, z) = z ^ (x & (y ^ z)), shifts 3 7 11 19
    a = (a + (d ^ (b & (c ^ d))) + w[0]) & m
    a = ((a << 3) | (a >> 29)) & m
    d = (d + (c ^ (a & (b ^ c))) + w[1]) & m
    d = ((d << 7) | (d >> 25)) & m
    c = (c + (b ^ (d & (a ^ b))) + w[2]) & m
    c = ((c << 11) | (c >> 21)) & m
    b = (b + (a ^ (c & (d ^ a))) + w[3]) & m
    b = ((b << 19) | (b >> 13)) & m
    a = (a + (d ^ (b & (c ^ d))) + w[4]) & m
    a = ((a << 3) | (a >> 29)) & m
    d = (d + (c ^ (a & (b ^ c))) + w[5]) & m
    d = ((d << 7) | (d >> 25)) & m
    c = (c + (b ^ (d & (a ^ b))) + w[6]) & m
    c = ((c << 11) | (c >> 21)) & m
    b = (b + (a ^ (c & (d ^ a))) + w[7]) & m
    b = ((b << 19) | (b >> 13)) & m
    # Round 2: G(x, y, z) = (x & y) + ((x ^ y) & z) + K2, shifts 3 5 9 13
    a = (a + (b & c) + ((b ^ c) & d) + w[1] + _K2) & m
    a = ((a << 3) | (a >> 29)) & m
    d = (d + (a & b) + ((a ^ b) & c) + w[3] + _K2) & m
    d = ((d << 5) | (d >> 27)) & m
    c = (c + (d & a) + ((d ^ a) & b) + w[5] + _K2) & m
    c = ((c << 9) | (c >> 23)) & m
    b = (b + (c & d) + ((c ^ d) & a) + w[7] + _K2) & m
    b = ((b << 13) | (b >> 19)) & m
    a = (a + (b & c) + ((b ^ c) & d) + w[0] + _K2) & m
    a = ((a << 3) | (a >> 29)) & m
    d = (d + (a & b) + ((a ^ b) & c) + w[2] + _K2) & m
    d = ((d << 5) | (d >> 27)) & m
    c = (c + (d & a) + ((d ^ a) & b) + w[4] + _K2) & m
    c = ((c << 9) | (c >> 23)) & m
    b = (b + (c & d) + ((c ^ d) & a) + w[6] + _K2) & m
    b = ((b << 13) | (b >> 19)) & m
    # Round 3: H(x, y, z) = x ^ y ^ z + K3, shifts 3 9 11 15
    a = (a + (b ^ c ^ d) + w[3] + _K3) & m
    a = ((a << 3) | (a >> 29)) & m
    d = (d + (a ^ b ^ c) + w[7] + _K3) & m
    d = ((d << 9) | (d >> 23)) & m
    c = (c + (d ^ a ^ b) + w[2] + _K3) & m
    c = ((c << 11) | (c >> 21)) & m
    b = (b + (c ^ d ^ a) + w[6] + _K3) & m
    b = ((b << 15) | (b >> 17)) & m
    a = (a + (b ^ c ^ d) + w[1] + _K3) & m
    a = ((a << 3) | (a >> 29)) & m
    d = (d + (a ^ b ^ c) + w[5] + _K3) & m
    d = ((d << 9) | (d >> 23)) & m
    c = (c + (d ^ a ^ b) + w[0] + _K3) & m
    c = ((c << 11) | (c >> 21)) & m
    b = (b + (c ^ d ^ a) + w[4] + _K3) & m
    b = ((b << 15) | (b >> 17)) & m
    buf[0] = (buf[0] + a) & m
    buf[1] = (buf[1] + b) & m
    buf[2] = (buf[2] + c) & m
    buf[3] = (buf[3] + d) & m


def _hash_words(chunk: bytes, length: int, count: int) -> list[int]:
    """Pack up to 4*count name bytes into big-endian words; a partial last word is
    prefixed, and missing words are filled, with a pattern of the remaining length."""
    pad = length | (length << 8)
    pad = (pad | (pad << 16)) & MASK32
    data = chunk[: count * 4]
    full = len(data) // 4
    words = list(struct.unpack(f">{full}I", data[: full * 4]))
    if full < count:
        rest = data[full * 4 :]
        words.append(((pad << (8 * len(rest))) + int.from_bytes(rest, "big")) & MASK32)
        words.extend([pad] * (count - full - 1))
    return words


_HTREE_EOF = 0x7FFFFFFF  # EXT4_HTREE_EOF_32BIT
_HALF_MD4_UNSIGNED = 4  # EXT2_HASH_HALF_MD4_UNSIGNED, ext2fs_dirhash()'s version number
HashFn = Callable[[bytes, tuple[int, int, int, int]], tuple[int, int]]


def name_hash_py(name: bytes, seed: tuple[int, int, int, int]) -> tuple[int, int]:
    """(major, minor) half-MD4 hash of a name, unsigned-char variant."""
    buf = list(seed) if any(seed) else list(_DEFAULT_SEED)
    length = len(name)
    pos = 0
    while length > 0:
        _half_md4(buf, _hash_words(name[pos:], length, 8))
        length -= 32
        pos += 32
    major = buf[1] & ~1
    if major == _HTREE_EOF << 1:  # reserved for the end of a readdir: one below, as Linux
        major = (_HTREE_EOF - 1) << 1
    return major, buf[2]


def _libext2fs_hash() -> HashFn | None:
    """name_hash_py() as e2fsprogs computes it, ext2fs_dirhash() of the system's libext2fs
    (part of e2fsprogs), through ctypes: five times faster (3 µs a name against 15), and a
    hashed directory hashes every name it holds, a million of them in a large image.
    None where the library is missing or lacks the function: name_hash_py() then."""
    try:
        function = ctypes.CDLL("libext2fs.so.2").ext2fs_dirhash
    except (OSError, AttributeError):
        return None
    u32 = ctypes.c_uint32
    function.argtypes = (
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(u32),
        ctypes.POINTER(u32), ctypes.POINTER(u32),
    )  # fmt: skip
    function.restype = ctypes.c_long  # errcode_t
    seeds: dict[tuple[int, int, int, int], ctypes.Array[ctypes.c_uint32]] = {}

    def name_hash(name: bytes, seed: tuple[int, int, int, int]) -> tuple[int, int]:
        words = seeds.get(seed)
        if words is None:
            words = seeds[seed] = (u32 * 4)(*seed)  # all zero: the default seed, as ours
        major, minor = u32(), u32()
        if function(
            _HALF_MD4_UNSIGNED, name, len(name), words, ctypes.byref(major), ctypes.byref(minor)
        ):  # an error: a version it does not know, so use ours
            return name_hash_py(name, seed)
        return major.value, minor.value

    if name_hash(b"lost+found", (1, 2, 3, 4)) != name_hash_py(b"lost+found", (1, 2, 3, 4)):
        return None  # not the hash this module writes: keep to ours
    return name_hash


name_hash: HashFn = _libext2fs_hash() or name_hash_py


def hash_seed_words(seed: bytes) -> tuple[int, int, int, int]:
    a, b, c, d = struct.unpack(_HASH_SEED, seed)
    return a, b, c, d


class DirEntry(NamedTuple):  # a tuple: a directory's worth are made at once, cheaply
    name: bytes
    ino: int
    file_type: int


def _rec_len(name_len: int) -> int:
    return (8 + name_len + 3) & ~3


def _dirent(ino: int, rec_len: int, name: bytes, file_type: int) -> bytes:
    head = struct.pack(_DIRENT_HEAD, ino, rec_len, len(name), file_type)
    return (head + name).ljust(_rec_len(len(name)), b"\0")


def _seal_leaf(body: bytearray, ino_seed: int) -> bytes:
    """Append the checksum tail (ext4_dir_entry_tail) to a leaf of LEAF_SPACE bytes."""
    csum = crc32c(ino_seed, bytes(body))
    return bytes(body) + struct.pack(_DIRENT_TAIL, 0, TAIL_SIZE, 0, 0xDE, csum)


def _pack_leaves(entries: list[DirEntry], first: bytes = b"") -> list[bytearray]:
    """Fill leaf block bodies in order (after `first`, the '.' and '..' entries); each
    block's last entry stretches to LEAF_SPACE."""
    blocks: list[bytearray] = []
    cur = bytearray(first)
    last_at = -1
    if first:
        last_at = len(first) - _rec_len(2)
    for e in entries:
        need = _rec_len(len(e.name))
        if len(cur) + need > LEAF_SPACE and (cur or blocks):
            blocks.append(_stretch(cur, last_at))
            cur = bytearray()
            last_at = -1
        last_at = len(cur)
        cur += _dirent(e.ino, need, e.name, e.file_type)
    blocks.append(_stretch(cur, last_at))
    return blocks


def _stretch(body: bytearray, last_at: int) -> bytearray:
    """Make the last entry's rec_len reach the tail; an empty block gets one unused entry."""
    if last_at < 0:
        return bytearray(struct.pack(_DIRENT_HEAD, 0, LEAF_SPACE, 0, 0).ljust(LEAF_SPACE, b"\0"))
    rec = LEAF_SPACE - last_at
    struct.pack_into("<H", body, last_at + 4, rec)
    return body.ljust(LEAF_SPACE, b"\0")


@dataclass(slots=True)
class DirBlocks:
    blocks: list[bytes]  # logical order
    indexed: bool  # htree: set EXT4_INDEX_FL


def build_dir(
    entries: list[DirEntry],
    self_ino: int,
    parent_ino: int,
    seed: tuple[int, int, int, int],
    ino_seed: int,
    min_blocks: int = 1,
) -> DirBlocks:
    """Directory blocks for `entries` (sorted by name): one linear block when everything
    fits (padded with empty blocks up to min_blocks), an htree otherwise."""
    dots = _dirent(self_ino, 12, b".", 2) + _dirent(parent_ino, 12, b"..", 2)
    total = len(dots) + sum(_rec_len(len(e.name)) for e in entries)
    if total <= LEAF_SPACE:
        bodies = _pack_leaves(entries, dots)
        while len(bodies) < min_blocks:
            bodies.append(_stretch(bytearray(), -1))
        return DirBlocks([_seal_leaf(b, ino_seed) for b in bodies], False)
    return _build_htree(entries, self_ino, parent_ino, seed, ino_seed)


def _build_htree(
    entries: list[DirEntry],
    self_ino: int,
    parent_ino: int,
    seed: tuple[int, int, int, int],
    ino_seed: int,
) -> DirBlocks:
    hashed = sorted(
        ((*name_hash(e.name, seed), e) for e in entries), key=lambda t: (t[0], t[1], t[2].name)
    )
    # Pack leaves, remembering each leaf's first hash and whether it continues a hash.
    leaves: list[bytearray] = []
    leaf_hashes: list[int] = []
    cur = bytearray()
    last_at = -1
    prev_hash = -1
    for major, _minor, e in hashed:
        need = _rec_len(len(e.name))
        if not cur or len(cur) + need > LEAF_SPACE:
            if cur:
                leaves.append(_stretch(cur, last_at))
                cur = bytearray()
            leaf_hashes.append(major | (1 if major == prev_hash else 0))
        last_at = len(cur)
        cur += _dirent(e.ino, need, e.name, e.file_type)
        prev_hash = major
    leaves.append(_stretch(cur, last_at))
    leaf_hashes[0] = 0  # the first index entry covers every hash below the second

    if len(leaves) <= ROOT_LIMIT:
        levels = 0
        first_leaf = 1
        root_targets = [(h, first_leaf + i) for i, h in enumerate(leaf_hashes)]
        nodes: list[bytes] = []
    else:
        levels = 1
        node_count = ceil_div(len(leaves), NODE_LIMIT)
        if node_count > ROOT_LIMIT:
            raise EntryError(
                f"a directory of {len(entries)} entries is more than ext4's two-level hash "
                "tree holds"
            )
        first_leaf = 1 + node_count
        root_targets = []
        nodes = []
        for n in range(node_count):
            lo, hi = n * NODE_LIMIT, min(len(leaves), (n + 1) * NODE_LIMIT)
            targets = [(leaf_hashes[i], first_leaf + i) for i in range(lo, hi)]
            root_targets.append((leaf_hashes[lo], 1 + n))
            head = struct.pack(_DIRENT_HEAD, 0, BLOCK_SIZE, 0, 0)  # fake empty entry
            nodes.append(_dx_block(head, NODE_LIMIT, targets, ino_seed))

    root_head = (
        _dirent(self_ino, 12, b".", 2)
        + struct.pack(_DIRENT_HEAD, parent_ino, BLOCK_SIZE - 12, 2, 2)
        + b"..\0\0"
        # dx_root_info: reserved_zero, hash_version, info_length, indirect_levels, flags
        + struct.pack(_DX_ROOT_INFO, 0, HASH_HALF_MD4, 8, levels, 0)
    )
    root = _dx_block(root_head, ROOT_LIMIT, root_targets, ino_seed)
    sealed = [_seal_leaf(leaf, ino_seed) for leaf in leaves]
    return DirBlocks([root, *nodes, *sealed], True)


def _dx_block(head: bytes, limit: int, targets: list[tuple[int, int]], ino_seed: int) -> bytes:
    """An index block: `head`, then limit/count/first block, then (hash, block) entries,
    then the dx_tail checksum."""
    block = bytearray(BLOCK_SIZE)
    block[: len(head)] = head
    at = len(head)
    struct.pack_into(_DX_COUNTLIMIT, block, at, limit, len(targets), targets[0][1])
    for i, (h, blk) in enumerate(targets[1:], start=1):
        struct.pack_into(_DX_ENTRY, block, at + 8 * i, h, blk)
    used = at + 8 * len(targets)
    csum = crc32c(ino_seed, bytes(block[:used]))
    csum = crc32c(csum, bytes(DX_TAIL_SIZE))  # dt_reserved, then dt_checksum as zero
    tail_at = at + 8 * limit
    struct.pack_into(_DX_TAIL, block, tail_at, 0, csum)
    return bytes(block)
