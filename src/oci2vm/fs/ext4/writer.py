"""The ext4 writer: file data streams in as layers are read and lands in place at once;
inodes, directories, xattrs, the journal, bitmaps, descriptors and superblocks are written at
the end. Nothing is mounted and every byte is ours, so no root and no loop device are needed.

Placement: blocks are handed out in ascending order, skipping every sparse_super group's
superblock and descriptor-table copy (sized for the largest filesystem the size hint allows).
File data comes first, contiguous per file; then directories; then the journal, the bitmaps
and the inode tables (flex_bg lets them live outside their own groups); then xattr blocks, slow
symlinks and extent index blocks, allocated as each inode is packed and written into its table.
Holes are never written: the output must read as zeros where the filesystem goes (a new or
freshly truncated file), and it is extended to the final size. A file whose data was placed
and that left the tree before finish() (a later entry of its layer replaced it) leaves its
blocks free, emptied at the end: no old content stays readable in them.

Memory: the writer keeps, per file, only its extents, most as two numbers in flat arrays
(placements.py); finish() adds flat per-inode arrays (numbering.py), never all packed inodes
at once.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from oci2vm.errors import EntryError, Oci2vmError
from oci2vm.fs.blockio import BlockWriter
from oci2vm.fs.ext4.dirs import FILE_TYPES, DirEntry, build_dir, hash_seed_words
from oci2vm.fs.ext4.groups import (
    Placed,
    Tail,
    write_descriptors,
    write_inode_bitmaps,
    write_superblocks,
)
from oci2vm.fs.ext4.inode import (
    FL_EXTENTS,
    FL_INDEX,
    INLINE_LEAVES_SIZE,
    Extent,
    ExtentTree,
    InodeFields,
    build_extent_tree,
    encode_rdev,
    encode_time,
    encode_time_cached,
    extent_tree_blocks,
    inline_leaves,
    leaves_length,
    leaves_tree,
    pack_encoded_into,
    pack_inode,
    pack_inode_into,
    split_extents,
    unpack_leaves,
)
from oci2vm.fs.ext4.journal import journal_superblock
from oci2vm.fs.ext4.layout import (
    BLOCK_SIZE,
    BLOCKS_PER_GROUP,
    INODE_SIZE,
    JOURNAL_INO,
    MAX_BLOCKS,
    BlockAllocator,
    Geometry,
    Mark,
    SuperblockInfo,
    blocks_for_inodes,
    check_size,
    default_journal_blocks,
    default_size,
    fs_csum_seed,
    gdt_blocks_for,
    geometry,
    headroom_blocks,
    inode_csum_seed,
    round_blocks,
    size_text,
    wanted_inodes,
)
from oci2vm.fs.ext4.numbering import InodeNumbering
from oci2vm.fs.ext4.placements import Placements
from oci2vm.fs.ext4.xattr import Xattr, pack_block, pack_ibody, split_xattrs, to_ext4_xattrs
from oci2vm.tree.columns import GID, KIND, MODE, MTIME, NO_TIME, SIZE, UID
from oci2vm.tree.model import (
    KIND_CODES,
    KIND_IFMT,
    NO_ID,
    BytesData,
    BytesReader,
    DataReader,
    Inode,
    Kind,
    LayerData,
    StreamedData,
)
from oci2vm.util.gcpause import cycle_collection_paused
from oci2vm.util.units import ceil_div

_NO_XATTRS: tuple[list[Xattr], list[Xattr]] = ([], [])  # (in the inode, in a block); read only
_EMPTY_I_BLOCK = bytes(60)  # i_block of an inode with no blocks and no device number
MAX_LINKS = 65000  # EXT4_LINK_MAX
MAX_FILE_SIZE = (1 << 32) * BLOCK_SIZE - BLOCK_SIZE  # logical block numbers are 32 bits
MIN_LAST_GROUP = 64  # a shorter tail of the size is left out of the filesystem
TABLE_CHUNK = 1 << 20  # inode-table bytes packed before they are handed to the BlockWriter
_ZERO_INODE = bytes(INODE_SIZE)


class _InodeError(Oci2vmError):
    """A problem with one inode, raised without its path (Ext4Writer._inodes adds it)."""


@dataclass(frozen=True, slots=True)
class _Dir:
    """A directory whose blocks are written: what its inode needs."""

    i_block: bytes
    flags: int
    size: int
    blocks: int  # directory and extent index blocks


@dataclass(frozen=True, slots=True)
class _Identity:
    """What names the filesystem and seeds its hashes and checksums."""

    uuid: uuidlib.UUID
    hash_seed: uuidlib.UUID  # s_hash_seed, for directory name hashes
    fs_time: int  # seconds: creation, mount and check times, and every crtime
    label: bytes  # s_volume_name, at most 16 bytes
    fs_seed: int  # crc32c seed of the metadata checksums, from the uuid


@dataclass(frozen=True, slots=True)
class Ext4Result:
    size: int  # bytes the filesystem spans (blocks_count * 4096)
    blocks_count: int
    free_blocks: int
    inodes_count: int
    free_inodes: int
    uuid: uuidlib.UUID


def _logical_runs(regions: tuple[tuple[int, int], ...], size: int) -> list[tuple[int, int]]:
    """Block ranges [first, end) covered by the sparse map, merged where they touch."""
    if size > MAX_FILE_SIZE:
        raise EntryError(f"a file of {size} bytes exceeds ext4's 16 TiB limit with 4 KiB blocks")
    runs: list[tuple[int, int]] = []
    prev_end = 0
    for off, length in regions:
        if off < prev_end or length < 0 or off + length > size:
            raise EntryError(f"sparse map {regions[:4]}... does not fit a {size}-byte file")
        prev_end = off + length
        if length == 0:
            continue
        first, end = off // BLOCK_SIZE, ceil_div(off + length, BLOCK_SIZE)
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(end, runs[-1][1]))
        else:
            runs.append((first, end))
    return runs


def _journal_backup(i_block: bytes, size: int) -> tuple[int, ...]:
    """s_jnl_blocks: the journal inode's i_block words, then i_size_high and i_size."""
    words = i_block + (size >> 32).to_bytes(4, "little")
    words += (size & 0xFFFFFFFF).to_bytes(4, "little")
    return tuple(int.from_bytes(words[i : i + 4], "little") for i in range(0, 68, 4))


def _device_i_block(major: int, minor: int) -> bytes:
    """i_block of a character or block device, checked against Linux's numbers."""
    if not (0 <= major < 1 << 12 and 0 <= minor < 1 << 20):
        raise _InodeError(
            f"device {major}:{minor} is beyond Linux's 12-bit major and 20-bit minor numbers"
        )
    return encode_rdev(major, minor)


def _links(links: int, kind: Kind) -> int:
    """i_links_count: a directory with more links than ext4 counts gets 1 (dir_nlink:
    "many"); anything else is an error."""
    if links > MAX_LINKS:
        if kind is not Kind.DIR:
            raise _InodeError(f"{links} hard links, ext4 allows {MAX_LINKS}")
        return 1
    return links


def _allocator(size: int | None, data_size_hint: int, inode_count_hint: int) -> BlockAllocator:
    """The allocator for a filesystem of `size` bytes (its limit: whole blocks, less a last
    group too short to hold anything), or of the default size when `size` is None (its
    limit: the largest filesystem written). The blocks kept for the descriptor table fit
    the largest table the size hints allow, and never more than the largest size's."""
    if size is not None:
        check_size(size, data_size_hint, inode_count_hint)
        blocks = size // BLOCK_SIZE
        groups = ceil_div(blocks, BLOCKS_PER_GROUP)
        tail = blocks % BLOCKS_PER_GROUP
        if tail and tail < MIN_LAST_GROUP + 1 + gdt_blocks_for(groups):
            blocks -= tail
        reserve = gdt_blocks_for(ceil_div(blocks, BLOCKS_PER_GROUP))
        return BlockAllocator(reserve, blocks, given=True)
    estimate = min(default_size(data_size_hint, inode_count_hint) // BLOCK_SIZE, MAX_BLOCKS)
    reserve = max(2 * gdt_blocks_for(ceil_div(estimate, BLOCKS_PER_GROUP)), 16)
    most = gdt_blocks_for(ceil_div(MAX_BLOCKS, BLOCKS_PER_GROUP))
    return BlockAllocator(min(reserve, most), MAX_BLOCKS, given=False)


def _whole_last_group(blocks: int) -> int:
    """`blocks` (whole MiB), grown where needed so that a short last group holds more than
    its superblock copy and descriptor table."""
    short = blocks % BLOCKS_PER_GROUP
    least = MIN_LAST_GROUP + 1 + gdt_blocks_for(ceil_div(blocks, BLOCKS_PER_GROUP))
    return round_blocks(blocks - short + least) if 0 < short < least else blocks


class Ext4Writer:
    """Write an ext4 filesystem into `out` at byte `offset`.

    `size` None picks the default size at finish(); `data_size_hint` (an upper bound of the
    file bytes to come) and `inode_count_hint` size the descriptor-table reservations and
    let a too small `size` fail here, before anything is written. The bytes of `out` from
    `offset` on must read as zeros (a new file): holes are never written.
    Call write_file() once per regular-file inode as its data streams, then finish(root).
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        offset: int = 0,
        size: int | None = None,
        data_size_hint: int = 0,
        inode_count_hint: int = 0,
        uuid: uuidlib.UUID,
        hash_seed: uuidlib.UUID,
        fs_time: int,
        label: str = "",
    ) -> None:
        encoded_label = label.encode()
        if len(encoded_label) > 16:
            raise Oci2vmError(f"filesystem label {label!r} is longer than 16 bytes")
        self._id = _Identity(uuid, hash_seed, fs_time, encoded_label, fs_csum_seed(uuid))
        self._size = size
        self._alloc = _allocator(size, data_size_hint, inode_count_hint)
        # Where each file's data went, made while layers stream, ready for its inode.
        self._files = Placements()
        # Every write goes through here: positions count from the filesystem's start.
        self._io = BlockWriter(out, base=offset, block_size=BLOCK_SIZE, name="ext4-write")
        self._finished = False
        self._streamed = 0
        self._dropped: set[int] = set()  # placed files no longer in the tree (finish())

    def close(self) -> None:
        """Wait for the writes handed to the write-behind thread, and stop it (finish()
        does this; call it when giving up before finish())."""
        self._io.close()

    # -- file data ---------------------------------------------------------------------

    def write_file(self, inode: Inode, data: DataReader) -> None:
        """Place a regular file's stored bytes (its data regions back to back) now."""
        if inode.kind is not Kind.FILE:
            raise ValueError(f"write_file() got a {inode.kind} inode")
        if self._files.key(inode) is not None:
            raise ValueError("write_file() called twice for one inode")
        stored = inode.data
        if stored is None or isinstance(stored, StreamedData) or stored.sparse is None:
            self._write_dense(inode, data, stored.stored_size if stored is not None else 0)
            return
        regions = stored.regions
        pieces = [
            piece
            for first, end in _logical_runs(regions, inode.size)
            for piece in self._pieces(first, end - first)
        ]
        at = 0
        for off, length in regions:
            pos, remaining = off, length
            while remaining > 0:
                block = pos // BLOCK_SIZE
                while pieces[at][0] + pieces[at][2] <= block:
                    at += 1
                logical, physical, run = pieces[at]
                within = pos - logical * BLOCK_SIZE
                span = min(remaining, run * BLOCK_SIZE - within)
                self._io.copy(physical * BLOCK_SIZE + within, data, span)
                pos += span
                remaining -= span
        self._files.add(inode, pieces)

    def _write_dense(self, inode: Inode, data: DataReader, stored_size: int) -> None:
        """write_file() of a file without a sparse map (nearly every one): its bytes from
        offset 0, in the blocks that follow, the rest of its size (if any) a hole."""
        size = inode.size
        if size > MAX_FILE_SIZE or stored_size > size:
            _logical_runs(((0, stored_size),), size)  # raises, naming what is wrong
        pieces = self._pieces(0, ceil_div(stored_size, BLOCK_SIZE)) if stored_size else []
        pos = 0
        for _logical, physical, length in pieces:
            span = min(length * BLOCK_SIZE, stored_size - pos)
            self._io.copy(physical * BLOCK_SIZE, data, span)
            pos += span
        self._files.add(inode, pieces)

    def read_file(self, inode: Inode, limit: int) -> bytes | None:
        """The content of a regular file streamed so far (write_file), holes as zeros, or
        None for a file not streamed: for preparation steps that must look inside a file
        of the image (an initrd, a kernel module), at most `limit` bytes of it."""
        key = self._files.key(inode)
        if key is None:
            return None
        if inode.size > limit:
            raise Oci2vmError(
                f"a file of {inode.size} bytes is more than oci2vm reads back ({limit})"
            )
        out = bytearray(inode.size)
        for extent in unpack_leaves(self._files.packed(key)):
            start = extent.logical * BLOCK_SIZE
            length = min(extent.length * BLOCK_SIZE, inode.size - start)
            if length > 0:
                piece = self._io.read_at(extent.physical * BLOCK_SIZE, length)
                out[start : start + len(piece)] = piece
        return bytes(out)

    # -- metadata ----------------------------------------------------------------------

    def finish(self, root: Inode) -> Ext4Result:
        """Write everything but the streamed file data and return the filesystem's shape."""
        with cycle_collection_paused():
            return self._finish(root)

    def _finish(self, root: Inode) -> Ext4Result:
        if self._finished:
            raise ValueError("finish() called twice")
        self._finished = True
        if root.kind is not Kind.DIR or root.children is None:
            raise ValueError("the root must be a directory")
        # From here on the allocator lists what it hands out, for the block bitmaps (file
        # data is in self._files).
        self._alloc.recording = True
        self._streamed = len(self._files)  # files placed before recording began
        tree = InodeNumbering(root, self._id.fs_time, self._files)
        # Files whose data was placed but that are no longer in the tree (a later entry of
        # their layer replaced them): their blocks stay free, and are emptied at the end.
        files = self._files
        # (a key the numbering holds is in the tree: only the others need a look)
        maybe = set(range(self._streamed)).difference(tree.file_key)
        self._dropped = {k for k in maybe if tree.ino(files.inode(k)) is None}
        self._write_held_files(tree)
        # Directories first, then the inode tables (their place fixes the geometry), then
        # each inode packed and written into its table at once: packed inodes are never
        # held for the whole tree. The blocks the inodes still allocate (xattr blocks, slow
        # symlinks, extent index blocks) are counted beforehand, so the geometry has room.
        dirs = self._directories(tree)
        tail = self._place_tail(len(tree.inodes) - 1, self._blocks_to_come(tree))
        self._inodes(tree, dirs, tail)
        result = self._write_tail(tree, tail)
        if self._alloc.next > result.blocks_count:
            raise RuntimeError("ext4 metadata overran the filesystem's blocks")
        self._io.flush()
        self._io.close()
        for key in sorted(self._dropped):  # (no old bytes readable in free blocks)
            for start, length in self._files.runs(key):
                self._io.zero(start * BLOCK_SIZE, length * BLOCK_SIZE)
        self._io.extend_to(max(result.size, self._size or 0))
        return result

    def _write_held_files(self, tree: InodeNumbering) -> None:
        """Write the files whose data is held in memory (or empty) rather than streamed from
        a layer: those added to the tree after the layers, and files without data."""
        for ino, inode in tree.inodes.of_kind(Kind.FILE):
            if tree.file_key[ino] >= 0:
                continue
            if isinstance(inode.data, LayerData | StreamedData):
                raise RuntimeError(f"inode {ino}: its streamed data never reached write_file()")
            content = inode.data.content if isinstance(inode.data, BytesData) else b""
            self.write_file(inode, BytesReader(content))
            tree.file_key[ino] = inode.writer_key  # the inode's number goes back in its place
            inode.writer_key = ino

    def _pieces(self, logical: int, count: int) -> list[tuple[int, int, int]]:
        """Allocate `count` blocks for file blocks `logical` on: (logical block, physical
        block, length) pieces, as contiguous as the allocator could make them."""
        pieces = []
        for physical, length in self._alloc.alloc(count):
            pieces.append((logical, physical, length))
            logical += length
        return pieces

    def _alloc_blocks(self, count: int) -> list[Extent]:
        return split_extents(self._pieces(0, count))

    def _tree(self, extents: list[Extent], ino_seed: int) -> ExtentTree:
        tree = build_extent_tree(extents, self._alloc.alloc_one, ino_seed)
        self._write_tree_blocks(tree)
        return tree

    def _write_tree_blocks(self, tree: ExtentTree) -> None:
        for block, content in tree.blocks:
            self._io.write_at(block * BLOCK_SIZE, content)

    def _directories(self, tree: InodeNumbering) -> dict[int, _Dir]:
        """Build and write every directory's blocks (and extent tree)."""
        seed = hash_seed_words(self._id.hash_seed.bytes)
        file_types = {KIND_CODES[kind]: file_type for kind, file_type in FILE_TYPES.items()}
        out: dict[int, _Dir] = {}
        for ino, inode in tree.inodes.of_kind(Kind.DIR):
            ino_seed = inode_csum_seed(self._id.fs_seed, ino)
            entries = [
                DirEntry(name, ino_of, file_types[code])
                for name, ino_of, code in tree.numbered_entries(inode)
            ]
            try:
                built = build_dir(
                    entries,
                    ino,
                    tree.parent[ino],
                    seed,
                    ino_seed,
                    min_blocks=4 if ino == tree.lost_found else 1,
                )
            except EntryError as error:
                raise Oci2vmError(f"{tree.path(ino)}: {error}") from None
            extents = self._alloc_blocks(len(built.blocks))
            for e in extents:
                run = b"".join(built.blocks[e.logical : e.logical + e.length])
                self._io.write_at(e.physical * BLOCK_SIZE, run)
            extent_tree = self._tree(extents, ino_seed)
            out[ino] = _Dir(
                extent_tree.i_block,
                FL_EXTENTS | (FL_INDEX if built.indexed else 0),
                len(built.blocks) * BLOCK_SIZE,
                len(built.blocks) + len(extent_tree.blocks),
            )
        return out

    def _blocks_to_come(self, tree: InodeNumbering) -> int:
        """The blocks _inodes() will allocate: xattr blocks, slow symlinks' blocks and
        the index blocks of files' extent trees."""
        # Only files of several extents, inodes with xattrs and symlinks with a target kept
        # aside may: those are looked at, not every inode.
        files = self._files
        several = set(tree.file_key).intersection(files.several())
        count = sum(extent_tree_blocks(files.extent_count(key)) for key in several)
        store = tree.inodes.store
        kinds, symlink = store.cols[KIND], KIND_CODES[Kind.SYMLINK]
        with_xattrs = ((tree.ino(Inode.at(store, row)), row) for row in store.xattrs)
        for ino, row in sorted((ino, row) for ino, row in with_xattrs if ino is not None):
            if self._xattrs(Inode.at(store, row), tree, ino)[1]:  # (by number: the first
                count += 1  # error is the one the inodes' own order would meet)
        for row in store.other:
            if kinds[row] == symlink and tree.ino(Inode.at(store, row)) is not None:
                target = Inode.at(store, row).target
                count += 1 if target and len(target) >= 60 else 0
        return count

    def _xattrs(
        self, inode: Inode, tree: InodeNumbering, ino: int
    ) -> tuple[list[Xattr], list[Xattr]]:
        """The inode's xattrs in ext4's form: (in the inode body, in an xattr block)."""
        try:
            return split_xattrs(to_ext4_xattrs(inode.xattrs))
        except Oci2vmError as error:
            raise Oci2vmError(f"{tree.path(ino)}: {error}") from None

    def _inodes(self, tree: InodeNumbering, dirs: dict[int, _Dir], tail: Tail) -> None:
        """Pack every inode, writing its remaining blocks, into its table: the inodes of a
        run of consecutive numbers in one group are packed into one buffer, written at once
        (up to TABLE_CHUNK bytes), rather than one write per inode. Plain inodes are packed
        from the columns (_plain_packer), the others through _inode() and a view."""
        crtime_ns = self._id.fs_time * 1_000_000_000
        ipg = tail.geo.inodes_per_group
        fs_seed = self._id.fs_seed
        store = tree.inodes.store
        pack_plain = self._plain_packer(tree, dirs)
        table = bytearray()
        first = 0  # the inode number of table's first inode
        for ino, row in enumerate(tree.inodes.rows):
            if row < 0:
                continue
            at = (ino - first) * INODE_SIZE
            if at != len(table) or (ino - 1) % ipg == 0 or at >= TABLE_CHUNK:
                if table:
                    self._io.write_at(tail.inode_pos(first), memoryview(table))
                table, first, at = bytearray(), ino, 0
            table += _ZERO_INODE
            ino_seed = inode_csum_seed(fs_seed, ino)
            try:
                if pack_plain(table, at, ino, row, ino_seed):
                    continue
                fields = self._inode(tree, ino, Inode.at(store, row), dirs, crtime_ns, ino_seed)
            except _InodeError as error:
                raise Oci2vmError(f"{tree.path(ino)}: {error}") from None
            pack_inode_into(table, at, fields, ino_seed)
        if table:
            self._io.write_at(tail.inode_pos(first), memoryview(table))

    def _plain_packer(
        self, tree: InodeNumbering, dirs: dict[int, _Dir]
    ) -> Callable[[bytearray, int, int, int, int], bool]:
        """pack(table, at, ino, row, ino_seed): pack inode `ino` (row `row`) into the table
        and say True if it is plain: no xattrs, no value kept wide, and a file of at most
        four extents (its tree fits the inode), a directory, a fast symlink, a fifo or a
        socket: nearly every inode. It is read straight from the store's columns, which
        saves most of what a view and an InodeFields per inode cost on a large tree."""
        crtime = encode_time_cached(self._id.fs_time * 1_000_000_000)
        store = tree.inodes.store
        kinds, modes, uids, gids, mtimes, sizes = (
            store.cols[column] for column in (KIND, MODE, UID, GID, MTIME, SIZE)
        )
        atimes, ctimes = store.times
        other, xattrs = store.other, store.xattrs
        wide = {row for _column, row in store.wide}
        links, file_key = tree.links, tree.file_key
        packed_of, single = self._files.packed, self._files.single
        no_extent = inline_leaves(b"")
        ifmt = {code: KIND_IFMT[kind] for kind, code in KIND_CODES.items()}
        file_code, dir_code, link_code = (
            KIND_CODES[k] for k in (Kind.FILE, Kind.DIR, Kind.SYMLINK)
        )
        empty_codes = {KIND_CODES[Kind.FIFO], KIND_CODES[Kind.SOCKET]}

        def pack(table: bytearray, at: int, ino: int, row: int, ino_seed: int) -> bool:
            # An owner of NO_ID (the owner columns' sentinel) is in `wide` too: the general
            # path refuses it.
            if row in wide or row in xattrs or links[ino] > MAX_LINKS:
                return False
            kind = kinds[row]
            if kind == file_code:
                key = file_key[ino]
                one = single(key)  # nearly always: one extent (or none), its length known
                if one is not None and not one[1]:
                    i_block, blocks = no_extent, 0
                else:
                    packed = packed_of(key)
                    if len(packed) > INLINE_LEAVES_SIZE:
                        return False
                    i_block = inline_leaves(packed)
                    blocks = one[1] if one is not None else leaves_length(packed)
                flags, size = FL_EXTENTS, sizes[row]
            elif kind == dir_code:
                built = dirs[ino]
                i_block, flags, size, blocks = built.i_block, built.flags, built.size, built.blocks
            elif kind == link_code:
                target = other.get(row)
                if not (isinstance(target, bytes) and len(target) < 60):
                    return False  # a slow symlink: its block is the general path's
                i_block, flags, size, blocks = self._symlink(target, ino_seed)
            elif kind in empty_codes:
                i_block, flags, size, blocks = _EMPTY_I_BLOCK, 0, 0, 0
            else:
                return False
            mtime_ns = mtimes[row]
            atime = ctime = mtime = encode_time_cached(mtime_ns)
            if atimes is not None and atimes[row] not in (NO_TIME, mtime_ns):
                atime = encode_time(atimes[row])
            if ctimes is not None and ctimes[row] not in (NO_TIME, mtime_ns):
                ctime = encode_time(ctimes[row])
            pack_encoded_into(
                table, at, ino_seed, ifmt[kind] | (modes[row] & 0o7777), uids[row], gids[row],
                size, links[ino], blocks * (BLOCK_SIZE // 512), flags, i_block, atime, ctime,
                mtime, crtime,
            )  # fmt: skip
            return True

        return pack

    def _inode(
        self,
        tree: InodeNumbering,
        ino: int,
        inode: Inode,
        dirs: dict[int, _Dir],
        crtime_ns: int,
        ino_seed: int,
    ) -> InodeFields:
        """Write an inode's xattr, symlink and extent index blocks; return its fields.
        Errors about the inode itself are _InodeErrors, which the caller gives its path."""
        if not (0 <= inode.uid < NO_ID and 0 <= inode.gid < NO_ID):
            raise _InodeError(
                f"owner {inode.uid}:{inode.gid} is out of range: ids are 32-bit, and "
                f"{NO_ID} is (uid_t)-1, which Linux reads back as the overflow id"
            )
        ibody, in_block = self._xattrs(inode, tree, ino) if inode.xattrs else _NO_XATTRS
        file_acl = 0
        if in_block:
            file_acl = self._alloc.alloc_one()
            block = pack_block(in_block, file_acl, self._id.fs_seed)
            self._io.write_at(file_acl * BLOCK_SIZE, block)
        i_block, flags, size, blocks = self._contents(tree, ino, inode, dirs, ino_seed)
        return InodeFields(
            mode=inode.st_mode,
            uid=inode.uid,
            gid=inode.gid,
            size=size,
            links=_links(tree.links[ino], inode.kind),
            blocks_512=(blocks + (1 if file_acl else 0)) * (BLOCK_SIZE // 512),
            flags=flags,
            i_block=i_block,
            atime_ns=inode.mtime_ns if inode.atime_ns is None else inode.atime_ns,
            ctime_ns=inode.mtime_ns if inode.ctime_ns is None else inode.ctime_ns,
            mtime_ns=inode.mtime_ns,
            crtime_ns=crtime_ns,
            file_acl=file_acl,
            ibody_xattrs=pack_ibody(ibody),
        )

    def _contents(
        self, tree: InodeNumbering, ino: int, inode: Inode, dirs: dict[int, _Dir], ino_seed: int
    ) -> tuple[bytes, int, int, int]:
        """(i_block, i_flags, i_size, blocks owned besides an xattr block) for the inode's
        kind, writing a file's extent index blocks or a slow symlink's block."""
        kind = inode.kind
        if kind is Kind.FILE:
            packed = self._files.packed(tree.file_key[ino])
            extent_tree = leaves_tree(packed, self._alloc.alloc_one, ino_seed)
            self._write_tree_blocks(extent_tree)
            blocks = leaves_length(packed) + len(extent_tree.blocks)
            return extent_tree.i_block, FL_EXTENTS, inode.size, blocks
        if kind is Kind.DIR:
            built = dirs[ino]
            return built.i_block, built.flags, built.size, built.blocks
        if kind is Kind.SYMLINK:
            return self._symlink(inode.target or b"", ino_seed)
        if kind in (Kind.CHAR, Kind.BLOCK):
            return _device_i_block(inode.rdev_major, inode.rdev_minor), 0, 0, 0
        return _EMPTY_I_BLOCK, 0, 0, 0

    def _symlink(self, target: bytes, ino_seed: int) -> tuple[bytes, int, int, int]:
        """A symlink's (i_block, i_flags, i_size, blocks): the target in i_block when it is
        shorter than 60 bytes (a fast symlink), else written into a block of its own."""
        size = len(target)
        if not target or len(target) >= BLOCK_SIZE or b"\0" in target:
            raise _InodeError(f"symlink target of {size} bytes is not valid")
        if len(target) < 60:
            return target.ljust(60, b"\0"), 0, size, 0
        extents = self._alloc_blocks(1)
        self._io.write_at(extents[0].physical * BLOCK_SIZE, target)
        extent_tree = self._tree(extents, ino_seed)
        return extent_tree.i_block, FL_EXTENTS, size, 1

    def _place_tail(self, used_inodes: int, to_come: int) -> Tail:
        """Allocate the journal, bitmaps and inode tables for the final geometry: the given
        size (with one inode per 16 KiB if that fits, else just enough inodes plus room), or
        the default rule (grown until the headroom and inode room hold, counting `to_come`
        blocks that are allocated after the tail)."""
        alloc = self._alloc
        mark = alloc.mark()
        if alloc.given:
            try:
                return self._place_tail_in(geometry(alloc.limit, used_inodes), mark, to_come)
            except Oci2vmError:
                geo = geometry(alloc.limit, used_inodes, by_ratio=False)
                return self._place_tail_in(geo, mark, to_come)
        start = mark[0]
        total = round_blocks(start + to_come + headroom_blocks(start + to_come))
        total = max(total, blocks_for_inodes(wanted_inodes(0, used_inodes, by_ratio=False)))
        while True:
            total = _whole_last_group(total)
            if total > alloc.limit:
                raise alloc.too_big()
            tail = self._place_tail_in(geometry(total, used_inodes), mark, to_come)
            need = round_blocks(tail.end + headroom_blocks(tail.end))
            if need <= total:
                return tail
            total = need

    def _place_tail_in(self, geo: Geometry, mark: Mark, to_come: int) -> Tail:
        """Allocate the tail for `geo`, from `mark` (where allocation stood before any
        earlier try)."""
        alloc = self._alloc
        alloc.rewind(mark)
        if geo.gdt_blocks > alloc.reserved_gdt:
            need = size_text(geo.blocks_count * BLOCK_SIZE)
            raise Oci2vmError(
                f"this image needs {need} or more of ext4, beyond the room its layers' "
                f"sizes suggested: pass a --size larger than {need}"
            )
        journal = self._alloc_blocks(default_journal_blocks(geo.blocks_count))
        block_bitmaps, inode_bitmaps = Placed(1), Placed(1)
        left = geo.groups  # block bitmaps still to place; the inode bitmaps follow them
        for first, length in alloc.alloc(2 * geo.groups):
            take = min(left, length)
            block_bitmaps.add(first, take)
            inode_bitmaps.add(first + take, length - take)
            left -= take
        itables = Placed(geo.itable_blocks)
        for _ in range(geo.groups):
            itables.add(alloc.alloc_contiguous(geo.itable_blocks))
        # What inodes allocate later (and the journal's own index blocks) must fit too,
        # so that a given size falls back to fewer inodes here rather than fail later.
        end = alloc.end_after(to_come + extent_tree_blocks(len(journal)))
        alloc.check_fits(end)
        return Tail(geo, journal, block_bitmaps, inode_bitmaps, itables, end)

    def _write_tail(self, tree: InodeNumbering, tail: Tail) -> Ext4Result:
        """Write the journal, the bitmaps, the group descriptors and the superblocks."""
        geo = tail.geo
        journal_backup = self._write_journal(tail)
        write_inode_bitmaps(self._io, tail, len(tree.inodes) - 1)
        used = self._used_runs(tree)
        free_blocks = write_descriptors(
            self._io, tail, len(tree.inodes) - 1, tree.inodes.count_kind, used, self._id.fs_seed
        )
        info = SuperblockInfo(
            geometry=geo,
            free_blocks=free_blocks,
            free_inodes=geo.inodes_count - (len(tree.inodes) - 1),
            uuid=self._id.uuid,
            hash_seed=self._id.hash_seed,
            fs_time=self._id.fs_time,
            label=self._id.label,
            journal_blocks=journal_backup,
        )
        write_superblocks(self._io, info)
        return Ext4Result(
            size=geo.blocks_count * BLOCK_SIZE,
            blocks_count=geo.blocks_count,
            free_blocks=free_blocks,
            inodes_count=geo.inodes_count,
            free_inodes=info.free_inodes,
            uuid=self._id.uuid,
        )

    def _write_journal(self, tail: Tail) -> tuple[int, ...]:
        """Write the journal: inode 8, its superblock in its first block, the rest holes.
        Return the superblock's backup of the journal inode (s_jnl_blocks)."""
        journal = tail.journal
        jseed = inode_csum_seed(self._id.fs_seed, JOURNAL_INO)
        jtree = self._tree(journal, jseed)
        jblocks = sum(e.length for e in journal)
        self._io.write_at(
            journal[0].physical * BLOCK_SIZE, journal_superblock(jblocks, self._id.uuid)
        )
        jtime = self._id.fs_time * 1_000_000_000
        jsize = jblocks * BLOCK_SIZE
        journal_inode = pack_inode(
            InodeFields(
                mode=0o100600,
                uid=0,
                gid=0,
                size=jsize,
                links=1,
                blocks_512=(jblocks + len(jtree.blocks)) * (BLOCK_SIZE // 512),
                flags=FL_EXTENTS,
                i_block=jtree.i_block,
                atime_ns=jtime,
                ctime_ns=jtime,
                mtime_ns=jtime,
                crtime_ns=jtime,
            ),
            jseed,
        )
        self._io.write_at(tail.inode_pos(JOURNAL_INO), journal_inode)
        return _journal_backup(jtree.i_block, jsize)

    def _used_runs(self, tree: InodeNumbering) -> Iterator[tuple[int, int]]:
        """Every block in use but the superblock copies, as (start, length) runs in
        ascending order: those of the tree's files placed before finish() began (in the
        order they were, which is ascending; a file no longer in the tree leaves its blocks
        free), then what the allocator recorded since."""
        for key in range(self._streamed):
            if key not in self._dropped:
                yield from self._files.runs(key)
        yield from self._alloc.allocated
