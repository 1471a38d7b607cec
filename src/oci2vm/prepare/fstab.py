"""/etc/fstab: the root filesystem mounted read-write by UUID, whatever the disk's bus."""

from __future__ import annotations

from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor


def fstab(root_uuid: str) -> bytes:
    return (
        "# Written by oci2vm.\n"
        "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>\n"
        f"UUID={root_uuid}  /  ext4  rw,errors=remount-ro  0  1\n"
    ).encode()


def apply(edit: TreeEditor, target: Target) -> list[str]:
    edit.write("/etc/fstab", fstab(target.root_uuid), mode=0o644, uid=0, gid=0)
    return []


STEP = Step("fstab", apply)
