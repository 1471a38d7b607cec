"""Kernel packages installed in the guest later get oci2vm's initramfs too.

A Debian image without an initramfs generator (initramfs-tools, dracut, tiny-initramfs)
boots oci2vm's initramfs, which holds the modules of one kernel: a newer kernel package
installed in the guest (apt, dpkg -i) would boot with none of its own and not find its
root. So the build leaves in the tree a kernel hook (initramfs/kernel-hook.sh, run by the
package's maintainer scripts in the guest: guest code, never run on the host) in
/etc/kernel/postinst.d and postrm.d, the static busybox it unpacks and repacks the
initramfs with, and the module names the build chose. The hook's name sorts after the
generators' hooks (initramfs-tools, dracut) and before grub's zz-update-grub, which wants
the initrd made; it stands aside when a generator has been installed since.

Debian's hook conventions: /usr/share/doc/debian-kernel-handbook, "Kernel hooks"
(arguments VERSION IMAGE-PATH; DEB_MAINT_PARAMS holds the maintainer script's own).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from oci2vm.config import InitMode, InitrdChoice
from oci2vm.prepare.step import Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, resolve_link

HOOK_NAME = "zz-oci2vm-initramfs"
HOOK_DIRS = ("/etc/kernel/postinst.d", "/etc/kernel/postrm.d")
BUSYBOX = "/usr/lib/oci2vm/busybox"
MODULE_NAMES = "/usr/lib/oci2vm/initramfs-modules"
# The programs of the initramfs generators Debian's kernel packages accept
# (linux-initramfs-tool): initramfs-tools, dracut, tiny-initramfs; and Arch's mkinitcpio.
GENERATORS = ("update-initramfs", "mkinitramfs", "dracut", "update-tirfs", "mkinitcpio")
PROGRAM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEBIAN_MARKERS = ("/var/lib/dpkg/status", "/etc/debian_version")


def hook_script() -> bytes:
    return resources.files("oci2vm.initramfs").joinpath("kernel-hook.sh").read_bytes()


def _exists(edit: TreeEditor, path: str) -> bool:
    found = resolve_link(edit.tree.root, path)
    return found is not None and found[1].kind is not Kind.DIR


def generator(edit: TreeEditor) -> str | None:
    """The path of an initramfs generator the image has, or None."""
    for directory in PROGRAM_DIRS:
        for name in GENERATORS:
            if _exists(edit, f"{directory}/{name}"):
                return f"{directory}/{name}"
    return None


def wanted(edit: TreeEditor, target: Target) -> bool:
    """Whether the disk needs the hook: a system booted from its own /boot with oci2vm's
    initramfs, in a Debian-like tree (dpkg's, whose kernel packages run the hooks), with
    no generator of its own."""
    return (
        target.mode is InitMode.SYSTEM
        and target.boot_outputs is None
        and target.config.initrd is not InitrdChoice.IMAGE
        and any(_exists(edit, marker) for marker in DEBIAN_MARKERS)
        and generator(edit) is None
    )


def install(edit: TreeEditor, busybox: bytes, module_names: Sequence[str]) -> None:
    """The hook in both directories, the busybox it runs and the module names it carries
    over, one a line, as the build chose them (dependencies are the new kernel's)."""
    for directory in ("/usr/lib/oci2vm", *HOOK_DIRS):
        edit.mkdir(directory)
    edit.write(BUSYBOX, busybox, mode=0o755, uid=0, gid=0)
    names = "".join(name + "\n" for name in module_names)
    edit.write(MODULE_NAMES, names.encode(), mode=0o644, uid=0, gid=0)
    script = hook_script()
    for directory in HOOK_DIRS:
        edit.write(f"{directory}/{HOOK_NAME}", script, mode=0o755, uid=0, gid=0)
