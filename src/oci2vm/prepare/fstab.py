"""/etc/fstab: the root filesystem mounted read-write by UUID, whatever the disk's bus.

Growing the root with its disk: oci2vm's initramfs grows the root partition, and the
filesystem with the image's resize2fs (initramfs/growroot.sh). Where systemd has
systemd-growfs, / also gets `x-systemd.growfs` (systemd.mount(5)): systemd grows the
mounted filesystem at boot when something else (the image's own initrd, a cloud's
growpart) grew the partition. An image with neither tool gets a note.
"""

from __future__ import annotations

from oci2vm.config import InitMode
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor

# Where Debian's e2fsprogs and systemd put them (merged /usr or not: the editor follows
# /sbin -> usr/sbin and /lib -> usr/lib inside the tree).
RESIZE2FS = ("/usr/sbin/resize2fs", "/sbin/resize2fs")
SYSTEMD_GROWFS = ("/usr/lib/systemd/systemd-growfs", "/lib/systemd/systemd-growfs")
NO_GROWTH_NOTE = (
    "the root filesystem will not grow with its disk: the image has neither resize2fs "
    "(e2fsprogs) nor systemd-growfs (the root partition still grows at boot)"
)


def fstab(root_uuid: str, *, growfs: bool = False) -> bytes:
    options = "rw,errors=remount-ro" + (",x-systemd.growfs" if growfs else "")
    return (
        "# Written by oci2vm.\n"
        "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>\n"
        f"UUID={root_uuid}  /  ext4  {options}  0  1\n"
    ).encode()


def _has(edit: TreeEditor, paths: tuple[str, ...]) -> bool:
    return any(edit.get(path) is not None for path in paths)


def apply(edit: TreeEditor, target: Target) -> list[str]:
    growfs = _has(edit, SYSTEMD_GROWFS)
    edit.write("/etc/fstab", fstab(target.root_uuid, growfs=growfs), mode=0o644, uid=0, gid=0)
    if growfs or _has(edit, RESIZE2FS) or not grows(target):
        return []
    return [NO_GROWTH_NOTE]


def grows(target: Target) -> bool:
    """Whether the filesystem is meant to grow at boot: a system's disk. `oci2vm run`
    boots a throwaway overlay of a cached root (no partition to grow), and app mode's init
    grows no filesystem, so the note would only be noise there."""
    return target.mode is InitMode.SYSTEM and target.boot_outputs is None


STEP = Step("fstab", apply)
