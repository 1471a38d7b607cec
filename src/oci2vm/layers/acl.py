"""POSIX ACLs of a layer's entries, settled against their modes as Linux settles them when a
runtime unpacks the layer.

containerd sets an entry's xattrs and then its mode. The kernel (fs/posix_acl.c) takes an
access ACL that only restates the mode bits as no ACL at all, and chmod() then writes the
owner, group and other bits into the ACL: the owner's and other's entries, and the mask,
which bounds every named entry (the owning group's entry when there is no mask). So the
mode a layer gives is the mode the file has, and an ACL never grants what `ls -l` hides.
A default ACL exists on directories only; symlinks take no ACLs. An ACL the kernel would
refuse (EINVAL: a base entry missing or twice, named entries without a mask, entries out
of their tags' order, permissions beyond rwx, a named entry for id -1) is an error,
as it fails containerd's unpack. Facts from acl(5) and include/uapi/linux/posix_acl*.h.
"""

from __future__ import annotations

import struct
from collections import Counter

from oci2vm.errors import Oci2vmError

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
VFS_VERSION = 2  # the xattr form's a_version
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
TAGS = frozenset((USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER))
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")  # e_tag, e_perm, e_id
NO_ID = 0xFFFFFFFF  # (uid_t)-1: no user or group


def entries(value: bytes, what: str) -> list[tuple[int, int, int]]:
    """The (tag, perm, id) entries of an ACL in the xattr form, checked as the kernel
    checks one it is given."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise Oci2vmError(f"{what}: malformed POSIX ACL ({len(value)} bytes)")
    (version,) = _HEADER.unpack_from(value)
    if version != VFS_VERSION:
        raise Oci2vmError(f"{what}: POSIX ACL version {version}, expected {VFS_VERSION}")
    found = [t for t in _ENTRY.iter_unpack(value[_HEADER.size :])]
    unknown = next((tag for tag, _perm, _id in found if tag not in TAGS), None)
    if unknown is not None:
        raise Oci2vmError(f"{what}: unknown POSIX ACL tag {unknown:#x}")
    count = Counter(tag for tag, _perm, _id in found)
    named = count[USER] + count[GROUP]
    if any(count[tag] != 1 for tag in (USER_OBJ, GROUP_OBJ, OTHER)) or count[MASK] > 1:
        raise Oci2vmError(f"{what}: invalid POSIX ACL: needs one owner, group and other entry")
    if named and not count[MASK]:
        raise Oci2vmError(f"{what}: invalid POSIX ACL: named entries without a mask")
    # The rest of posix_acl_valid() and posix_acl_from_xattr(): entries in the order of
    # their tags, permissions of rwx alone, and no named entry for uid or gid -1.
    if [tag for tag, _perm, _id in found] != sorted(tag for tag, _perm, _id in found):
        raise Oci2vmError(f"{what}: invalid POSIX ACL: its entries are out of order")
    if any(perm & ~7 for _tag, perm, _id in found):
        raise Oci2vmError(f"{what}: invalid POSIX ACL: permissions beyond rwx")
    if any(tag in (USER, GROUP) and ident == NO_ID for tag, _perm, ident in found):
        raise Oci2vmError(f"{what}: invalid POSIX ACL: a named entry for id {NO_ID}")
    return found


def settle(xattrs: dict[str, bytes], mode: int, *, directory: bool, what: str) -> None:
    """Settle the ACLs among `xattrs` (changed in place) against the entry's `mode`."""
    if DEFAULT in xattrs:
        if directory:
            entries(xattrs[DEFAULT], f"{what}: {DEFAULT}")
        else:
            del xattrs[DEFAULT]
    if ACCESS not in xattrs:
        return
    found = entries(xattrs[ACCESS], f"{what}: {ACCESS}")
    if all(tag in (USER_OBJ, GROUP_OBJ, OTHER) for tag, _perm, _id in found):
        del xattrs[ACCESS]  # the mode says it all
        return
    bits = {USER_OBJ: (mode >> 6) & 7, MASK: (mode >> 3) & 7, OTHER: mode & 7}
    settled = [(tag, bits.get(tag, perm), ident) for tag, perm, ident in found]
    xattrs[ACCESS] = _HEADER.pack(VFS_VERSION) + b"".join(_ENTRY.pack(*e) for e in settled)
