"""ext4 extended attributes: in the inode body and in one xattr block.

Facts used (kernel Documentation/filesystems/ext4/attributes.rst, fs/ext4/acl.h): entries
are e_name_len, e_name_index, e_value_offs, e_value_inum, e_value_size, e_hash and the name
without its prefix (index 1 user., 2 POSIX ACL access, 3 ACL default, 4 trusted., 6 security.,
7 system.), padded to 4 bytes; values are packed from the end of the space, 4-byte padded.
In the inode they follow the magic 0xEA020000 after i_extra_isize and value offsets count from
the first entry; a block starts with a 32-byte header (magic, refcount, blocks, hash, crc32c)
and its entries must be sorted by (index, name length, name). POSIX ACLs are stored in ext4's
compact form: version 1 header, 4-byte entries for USER_OBJ/GROUP_OBJ/MASK/OTHER and 8-byte
entries (with the id) for USER/GROUP, converted from the VFS form (version 2, all 8 bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4.layout import BLOCK_SIZE, EXTRA_ISIZE, INODE_SIZE, MASK32, crc32c
from oci2vm.layers import acl

XATTR_MAGIC = 0xEA020000
IBODY_SPACE = INODE_SIZE - 128 - EXTRA_ISIZE  # 96 bytes, magic included
BLOCK_HEADER = 32

# The records of attributes.rst, with the sizes it gives.
_IBODY_HEADER = "<I"  # ext4_xattr_ibody_header: h_magic
assert struct.calcsize(_IBODY_HEADER) == 4
_BLOCK_HEADER = "<IIIII"  # ext4_xattr_header: h_magic, h_refcount, h_blocks, h_hash, h_checksum
assert struct.calcsize(_BLOCK_HEADER) == 0x14  # h_reserved[3] follows, up to BLOCK_HEADER
assert BLOCK_HEADER == 0x20
# ext4_xattr_entry before e_name: e_name_len, e_name_index, e_value_offs, e_value_inum,
# e_value_size, e_hash
_ENTRY_HEAD = "<BBHIII"
assert struct.calcsize(_ENTRY_HEAD) == 0x10  # e_name
# POSIX ACLs in ext4's form (fs/ext4/acl.h; the xattr form is layers/acl.py's): a 4-byte
# a_version header; entries of e_tag, e_perm and e_id (8 bytes, ext4_acl_entry) or of
# e_tag and e_perm alone (4 bytes, ext4_acl_entry_short).
_ACL_HEADER = "<I"
assert struct.calcsize(_ACL_HEADER) == 4
_ACL_ENTRY = "<HHI"
assert struct.calcsize(_ACL_ENTRY) == 8
_ACL_ENTRY_SHORT = "<HH"
assert struct.calcsize(_ACL_ENTRY_SHORT) == 4

_PREFIXES = (
    (acl.ACCESS, 2),
    (acl.DEFAULT, 3),
    ("user.", 1),
    ("trusted.", 4),
    ("security.", 6),
)  # system. (7) holds nothing else Linux would show: flattening leaves such names out

ACL_EXT4_VERSION = 1


@dataclass(frozen=True, slots=True)
class Xattr:
    index: int
    name: bytes
    value: bytes

    @property
    def entry_size(self) -> int:
        return (16 + len(self.name) + 3) & ~3

    @property
    def value_size(self) -> int:
        return (len(self.value) + 3) & ~3


def acl_to_ext4(value: bytes, what: str) -> bytes:
    """Convert a POSIX ACL from the VFS xattr form to ext4's on-disk form."""
    out = bytearray(struct.pack(_ACL_HEADER, ACL_EXT4_VERSION))
    for tag, perm, ident in acl.entries(value, what):
        if tag in (acl.USER, acl.GROUP):
            out += struct.pack(_ACL_ENTRY, tag, perm, ident)
        else:
            out += struct.pack(_ACL_ENTRY_SHORT, tag, perm)
    return bytes(out)


def to_ext4_xattrs(xattrs: Mapping[str, bytes]) -> list[Xattr]:
    """Map VFS names to (index, suffix), convert ACLs, sort as ext4 sorts a block.
    Errors name the xattr; the caller adds the file's path."""
    out: list[Xattr] = []
    for name, value in xattrs.items():
        for prefix, index in _PREFIXES:
            if index in (2, 3):
                if name == prefix:
                    out.append(Xattr(index, b"", acl_to_ext4(value, name)))
                    break
            elif name.startswith(prefix):
                suffix = name[len(prefix) :].encode("utf-8", "surrogateescape")
                if not suffix or len(suffix) > 255:
                    raise Oci2vmError(f"xattr name {name!r} is not valid on ext4")
                out.append(Xattr(index, suffix, value))
                break
        else:
            raise Oci2vmError(f"xattr {name!r} has a namespace ext4 cannot store")
    out.sort(key=lambda x: (x.index, len(x.name), x.name))
    return out


def entry_hash(x: Xattr) -> int:
    """ext4_xattr_hash_entry: name bytes (unsigned), then the value as le32 words."""
    h = 0
    for byte in x.name:
        h = ((h << 5) ^ (h >> 27) ^ byte) & MASK32
    padded = x.value.ljust(x.value_size, b"\0")
    for (word,) in struct.iter_unpack("<I", padded):
        h = ((h << 16) ^ (h >> 16) ^ word) & MASK32
    return h


def _entry(x: Xattr, value_offs: int, with_hash: bool = True) -> bytes:
    head = struct.pack(
        _ENTRY_HEAD,
        len(x.name),  # e_name_len
        x.index,  # e_name_index
        value_offs if x.value else 0,  # e_value_offs
        0,  # e_value_inum
        len(x.value),  # e_value_size
        entry_hash(x) if with_hash else 0,  # e_hash
    )
    return (head + x.name).ljust(x.entry_size, b"\0")


def split_xattrs(attrs: list[Xattr]) -> tuple[list[Xattr], list[Xattr]]:
    """Put each attribute (in sorted order) in the inode body if it still fits there, else
    in the block, as the kernel tries the body first. Raises when the block overflows."""
    ibody: list[Xattr] = []
    block: list[Xattr] = []
    used = 4 + 4  # magic and the terminating zero word
    for x in attrs:
        need = x.entry_size + x.value_size
        if used + need <= IBODY_SPACE:
            ibody.append(x)
            used += need
        else:
            block.append(x)
    space = BLOCK_HEADER + 4 + sum(x.entry_size + x.value_size for x in block)
    if space > BLOCK_SIZE:
        raise Oci2vmError(
            f"extended attributes need {space} bytes; ext4 without ea_inode stores at most "
            f"{BLOCK_SIZE - BLOCK_HEADER - 4} bytes per file outside the inode"
        )
    return ibody, block


def pack_ibody(attrs: list[Xattr]) -> bytes:
    """The in-inode xattr area (IBODY_SPACE bytes), empty bytes when there are none."""
    if not attrs:
        return b""
    area = bytearray(IBODY_SPACE)
    struct.pack_into(_IBODY_HEADER, area, 0, XATTR_MAGIC)
    entries_at = 4
    value_end = IBODY_SPACE
    for x in attrs:
        value_end -= x.value_size
        area[value_end : value_end + len(x.value)] = x.value
        entry = _entry(x, value_end - 4)  # offsets count from the first entry
        area[entries_at : entries_at + len(entry)] = entry
        entries_at += len(entry)
    return bytes(area)


def pack_block(attrs: list[Xattr], block_nr: int, fs_seed: int) -> bytes:
    """An xattr block holding `attrs` (sorted), with its hash and crc32c."""
    block = bytearray(BLOCK_SIZE)
    entries_at = BLOCK_HEADER
    value_end = BLOCK_SIZE
    block_hash = 0
    zero_hash = False
    for x in attrs:
        value_end -= x.value_size
        block[value_end : value_end + len(x.value)] = x.value
        entry = _entry(x, value_end)
        block[entries_at : entries_at + len(entry)] = entry
        entries_at += len(entry)
        e_hash = entry_hash(x)
        if e_hash == 0:
            zero_hash = True  # ext4_xattr_rehash: such a block is never shared
        block_hash = ((block_hash << 16) ^ (block_hash >> 16) ^ e_hash) & MASK32
    if zero_hash:
        block_hash = 0
    # h_magic, h_refcount, h_blocks, h_hash, h_checksum (below, computed as zero)
    struct.pack_into(_BLOCK_HEADER, block, 0, XATTR_MAGIC, 1, 1, block_hash, 0)
    csum = crc32c(crc32c(fs_seed, struct.pack("<Q", block_nr)), bytes(block))
    struct.pack_into("<I", block, 16, csum)
    return bytes(block)
