"""A login prompt on the first serial port, the way each init system starts one, and a
note when the image has no init for the kernel to run."""

from __future__ import annotations

import re

from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import InitSystem

BAUD = 115200
# What busybox init does when there is no /etc/inittab (init.c, parse_inittab), less its
# password-less askfirst shells: an inittab we create ends those defaults, so it restates
# them, above all unmounting at shutdown.
BUSYBOX_DEFAULT_INITTAB = (
    "::sysinit:/etc/init.d/rcS\n"
    "::ctrlaltdel:reboot\n"
    "::shutdown:umount -a -r\n"
    "::shutdown:swapoff -a\n"
    "::restart:init\n"
)
INITTAB_SYSTEMS = (InitSystem.SYSVINIT, InitSystem.BUSYBOX, InitSystem.OPENRC)


def apply(edit: TreeEditor, target: Target) -> list[str]:
    init = target.os.init
    if init is InitSystem.NONE:
        return ["no init system found (/sbin/init): the kernel will have nothing to run"]
    if init is InitSystem.SYSTEMD:
        systemd_getty(edit, target.serial_console)
    elif init in INITTAB_SYSTEMS:
        inittab_getty(edit, init, target.serial_console)
    return []


def systemd_getty(edit: TreeEditor, serial: str) -> None:
    unit = systemd_unit(edit, "serial-getty@.service")
    if unit is None:
        return
    edit.mkdir("/etc/systemd")
    edit.mkdir("/etc/systemd/system")
    edit.mkdir("/etc/systemd/system/getty.target.wants")
    edit.symlink(f"/etc/systemd/system/getty.target.wants/serial-getty@{serial}.service", unit)
    if systemd_unit(edit, "systemd-udevd.service") is None:
        without_udev(edit, unit, serial)


def without_udev(edit: TreeEditor, template: str, serial: str) -> None:
    """Without udev (a minbase image with systemd-sysv alone), the serial port's device
    unit never appears, and the template's getty, bound to it, never starts: the instance
    gets a unit of its own, the template less its device dependencies."""
    text = edit.read_file(template, 1 << 20)
    if text is None:
        return
    lines = []
    for line in text.decode("utf-8", "replace").splitlines():
        if line.startswith("BindsTo=dev-%i.device"):
            continue
        if line.startswith("After="):
            words = [w for w in line.removeprefix("After=").split() if w != "dev-%i.device"]
            if not words:
                continue
            line = "After=" + " ".join(words)
        lines.append(line)
    unit = "\n".join(lines) + "\n"
    edit.write(f"/etc/systemd/system/serial-getty@{serial}.service", unit.encode(), mode=0o644)


def inittab_getty(edit: TreeEditor, init: InitSystem, serial: str) -> None:
    inittab = (edit.read("/etc/inittab") or b"").decode("utf-8", "replace")
    if re.search(rf"^[^#].*\b{re.escape(serial)}\b", inittab, re.M):
        return
    getty = getty_command(edit)
    if init is InitSystem.SYSVINIT:
        line = f"T0:23:respawn:{getty} -L {serial} {BAUD} vt100\n"
    else:
        line = f"{serial}::respawn:{getty} -L {BAUD} {serial} vt100\n"
    if inittab and not inittab.endswith("\n"):
        inittab += "\n"
    if init is InitSystem.BUSYBOX and edit.get("/etc/inittab") is None:
        inittab = BUSYBOX_DEFAULT_INITTAB
    edit.write("/etc/inittab", (inittab + line).encode())


def systemd_unit(edit: TreeEditor, name: str) -> str | None:
    for base in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        if edit.get(f"{base}/{name}") is not None:
            return f"{base}/{name}"
    return None


def getty_command(edit: TreeEditor) -> str:
    for path in ("/sbin/agetty", "/sbin/getty", "/bin/getty", "/usr/sbin/getty"):
        if edit.get(path) is not None:
            return path
    return "/sbin/getty"


STEP = Step("console", apply, applies=system_mode)
