"""The internal jbd2 journal's superblock: an empty, clean journal (s_start 0), as
mke2fs writes it (e2fsprogs lib/ext2fs/mkjournal.c, kernel include/linux/jbd2.h).

All jbd2 fields are big-endian. The header is magic 0xC03B3998 and block type 4
(superblock v2); s_first 1 is the first log block, s_sequence 1 the first transaction,
s_nr_users 1 for a journal inside the filesystem it serves, s_uuid the filesystem's UUID.
No journal features are set: the kernel adds the checksum feature it wants on mount.
"""

from __future__ import annotations

import struct
import uuid as uuidlib

from oci2vm.fs.ext4.layout import BLOCK_SIZE

JBD2_MAGIC = 0xC03B3998
JBD2_SUPERBLOCK_V2 = 4

# journal_superblock_t (jbd2.h): the 12-byte journal_header_t (h_magic, h_blocktype,
# h_sequence), then s_blocksize .. s_feature_ro_compat, then s_uuid at 0x30; s_nr_users is
# the be32 at 0x40, and what follows it (from s_dynsuper, 0x44) stays zero.
_JSB_HEAD = ">IIIIIIIIIIII"  # h_magic (0x0) .. s_feature_ro_compat (0x2C)
assert struct.calcsize(_JSB_HEAD) == 0x30  # s_uuid
_JSB_USED = 0x44  # bytes written: up to s_dynsuper


def journal_superblock(journal_blocks: int, fs_uuid: uuidlib.UUID) -> bytes:
    """The first block of the journal, trailing zeros stripped (they stay holes)."""
    sb = bytearray(_JSB_USED)
    struct.pack_into(
        _JSB_HEAD,
        sb,
        0x0,
        JBD2_MAGIC,  # h_magic
        JBD2_SUPERBLOCK_V2,  # h_blocktype
        0,  # h_sequence
        BLOCK_SIZE,  # s_blocksize
        journal_blocks,  # s_maxlen
        1,  # s_first
        1,  # s_sequence
        0,  # s_start: 0 = clean, nothing to replay
        0,  # s_errno
        0,  # s_feature_compat
        0,  # s_feature_incompat
        0,  # s_feature_ro_compat
    )
    sb[0x30:0x40] = fs_uuid.bytes  # s_uuid
    struct.pack_into(">I", sb, 0x40, 1)  # s_nr_users
    return bytes(sb)
