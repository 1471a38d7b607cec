"""Filesystems written from the tree: ext4 for the root, FAT for the ESP."""

# ext4's superblock magic (s_magic) and where it lies from the filesystem's first byte: the
# superblock starts at 1024, s_magic at 0x38 in it. Here, not in fs/ext4, so that what only
# recognises a filesystem (vm.disk_format) does not load the writer.
EXT4_MAGIC = 0xEF53
EXT4_MAGIC_OFFSET = 1024 + 0x38
