"""/etc/fstab: the root filesystem mounted read-write by UUID, whatever the disk's bus.

Growing the root with its disk: oci2vm's initramfs grows the root partition, and the
filesystem with the image's resize2fs (initramfs/growroot.sh). Where systemd has
systemd-growfs, / also gets `x-systemd.growfs` (systemd.mount(5)): systemd grows the
mounted filesystem at boot when something else (the image's own initrd, a cloud's
growpart) grew the partition. Where systemd also has systemd-repart, a repart.d file names
the root partition (repart.d(5): `Type=root`, the Discoverable Partitions type oci2vm gives
it), so that systemd grows the partition too, in the booted system, when the disk boots
with an initrd other than oci2vm's (systemd-growfs-root runs after systemd-repart). An
image with neither resize2fs nor systemd-growfs gets a note.
"""

from __future__ import annotations

from oci2vm.config import InitMode, OutputFormat, PartitionTable
from oci2vm.prepare import units
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor

# Where Debian's e2fsprogs and systemd put them (merged /usr or not: the editor follows
# /sbin -> usr/sbin and /lib -> usr/lib inside the tree).
RESIZE2FS = ("/usr/sbin/resize2fs", "/sbin/resize2fs")
SYSTEMD_GROWFS = ("/usr/lib/systemd/systemd-growfs", "/lib/systemd/systemd-growfs")
REPART = ("/usr/bin/systemd-repart", "/bin/systemd-repart")
REPART_UNIT = "systemd-repart.service"
REPART_DIRS = ("/etc/repart.d", "/usr/lib/repart.d", "/lib/repart.d", "/run/repart.d")
REPART_FILE = "/etc/repart.d/50-oci2vm-root.conf"
REPART_CONF = b"""\
# Written by oci2vm: grow the root partition into room added at the disk's end (its
# filesystem follows by x-systemd.growfs in /etc/fstab).
[Partition]
Type=root
"""
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
    if growfs and repart_applies(edit, target):
        repart(edit)
    if growfs or _has(edit, RESIZE2FS) or not grows(target):
        return []
    return [NO_GROWTH_NOTE]


def grows(target: Target) -> bool:
    """Whether the filesystem is meant to grow at boot: a system's disk. `oci2vm run`
    boots a throwaway overlay of a cached root (no partition to grow), and app mode's init
    grows no filesystem, so the note would only be noise there."""
    return target.mode is InitMode.SYSTEM and target.boot_outputs is None


def repart_applies(edit: TreeEditor, target: Target) -> bool:
    """systemd-repart grows a GPT disk's root: a system disk with a GPT (repart refuses
    others), an image with repart and its unit, and no repart.d plan of its own."""
    if not grows(target) or target.config.table is not PartitionTable.GPT:
        return False
    if target.config.output_format() is OutputFormat.EXT4:  # a filesystem, no disk
        return False
    if not _has(edit, REPART) or units.unit_path(edit, REPART_UNIT) is None:
        return False
    return not any(_entries(edit, directory) for directory in REPART_DIRS)


def _entries(edit: TreeEditor, directory: str) -> bool:
    node = edit.directory(directory)
    return node is not None and bool(node.children)


def repart(edit: TreeEditor) -> None:
    """The root's repart.d file, and the unit wanted by sysinit.target as Debian's systemd
    links it statically (added when the image lacks that link)."""
    edit.mkdir("/etc/repart.d")
    edit.write(REPART_FILE, REPART_CONF, mode=0o644, uid=0, gid=0)
    static = [f"{base}/sysinit.target.wants/{REPART_UNIT}" for base in units.UNIT_DIRS]
    if not _has(edit, tuple(static)) and not units.enabled(edit, REPART_UNIT):
        path = units.unit_path(edit, REPART_UNIT)
        assert path is not None
        edit.mkdir("/etc/systemd")
        edit.mkdir(units.ETC_UNITS)
        edit.mkdir(f"{units.ETC_UNITS}/sysinit.target.wants")
        edit.symlink(f"{units.ETC_UNITS}/sysinit.target.wants/{REPART_UNIT}", path)


STEP = Step("fstab", apply)
