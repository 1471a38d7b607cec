"""ext4 filesystem writer (see writer.py for the design, the other modules for the layout).

No library serves: mke2fs -d needs the tree extracted to disk first (writing every byte twice,
and as root to keep ownership), libext2fs has no maintained Python binding, and hcsshim's
compactext4 is Go and lacks metadata_csum, htree and a journal. So the on-disk structures are
written here, from the kernel's Documentation/filesystems/ext4/ and e2fsprogs' headers.
"""

from oci2vm.fs.ext4.layout import MAX_SIZE, default_size, required_size
from oci2vm.fs.ext4.writer import Ext4Result, Ext4Writer

__all__ = ["MAX_SIZE", "Ext4Result", "Ext4Writer", "default_size", "required_size"]
