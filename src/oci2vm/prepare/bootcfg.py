"""/boot/grub/grub.cfg: an entry per kernel the image holds, newest first, with the root
found by UUID and the console on screen and on the architecture's first serial port."""

from __future__ import annotations

from oci2vm.boot import grub
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor


def apply(edit: TreeEditor, target: Target) -> list[str]:
    edit.mkdir("/boot")
    edit.mkdir("/boot/grub")
    entries = [grub.BootEntry(k.version, k.path, k.initrd) for k in target.os.kernels]
    cfg = grub.grub_cfg(
        entries, target.root_uuid, serial_console=target.serial_console, read_only=False
    )
    edit.write("/boot/grub/grub.cfg", cfg.encode(), mode=0o644, uid=0, gid=0)
    return []


def applies(target: Target) -> bool:
    """Not when the kernel is booted directly (oci2vm run): no boot loader reads it."""
    return target.boot_outputs is None


STEP = Step("bootcfg", apply, applies)
