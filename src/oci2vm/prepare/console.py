"""A login prompt on the first serial port, the way the init that really runs as
/sbin/init starts one, and a note when the image has no init for the kernel to run.

systemd: serial-getty@PORT enabled. sysvinit's init (Debian's openrc runs under it too):
an inittab line in its syntax. busybox init: a line in busybox's. runit: a service in
its runsvdir. openrc-init: OpenRC's agetty service linked for the port.
"""

from __future__ import annotations

import re

from oci2vm.prepare import inittab, units
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import InitSystem

BAUD = 115200
INITTAB_SYSTEMS = (InitSystem.SYSVINIT, InitSystem.BUSYBOX)
# Debian's runit (2.1.2-54): runsvdir watches /etc/service, a link to
# /etc/runit/runsvdir/current, which stage 2 points at runsvdir/default; a service is a
# directory in /etc/sv linked from there (runit-helper's `ln -sf /etc/sv/NAME`). Void
# lays it out the same way.
RUNSVDIR, SV = units.RUNSVDIR, units.SV
OPENRC_AGETTY = "/etc/init.d/agetty"


def apply(edit: TreeEditor, target: Target) -> list[str]:
    init = target.os.init
    serial = target.serial_console
    if init is InitSystem.NONE:
        return ["no init system found (/sbin/init): the kernel will have nothing to run"]
    if init is InitSystem.SYSTEMD:
        systemd_getty(edit, serial)
    elif init in INITTAB_SYSTEMS:
        inittab_getty(edit, init, serial)
    elif init is InitSystem.RUNIT:
        runit_getty(edit, serial)
    elif init is InitSystem.OPENRC:
        return openrc_getty(edit, serial)
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
    """A respawned getty in /etc/inittab, in the syntax of the init that reads it."""
    text, existed = inittab.current(edit, init)
    if inittab.runs(text, rf"\b{re.escape(serial)}\b"):
        return
    getty = getty_command(edit)
    if init is InitSystem.SYSVINIT:
        # The id names the line's tty, as Debian's template asks (the part after "tty").
        ident = inittab.free_id(text, serial.removeprefix("tty"))
        line = f"{ident}:2345:respawn:{getty} -L {serial} {BAUD} vt100\n"
    else:
        line = f"{serial}::respawn:{getty} -L {BAUD} {serial} vt100\n"
    inittab.save(edit, text + line, existed)


def runit_getty(edit: TreeEditor, serial: str) -> None:
    """A runit service running a getty on the serial port, enabled in the default
    runsvdir, unless one is enabled already (getty-run's getty-PORT, Void's agetty-PORT);
    one the image has but does not enable is enabled."""
    enabled = edit.get(RUNSVDIR)
    names = set(enabled.children or {}) if enabled is not None else set()
    own = (f"getty-{serial}", f"agetty-{serial}")
    if names & set(own):
        return
    service = next((name for name in own if edit.get(f"{SV}/{name}/run") is not None), None)
    if service is None:
        service = f"oci2vm-getty-{serial}"
        # runsv does not make the service a session leader, so a getty started as is
        # gets no controlling terminal (the shell has no job control, Ctrl-C does not
        # reach it): chpst -P runs it in a new session, as getty-run's tty services do.
        chpst = next(
            (f"{d}/chpst" for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
             if edit.get(f"{d}/chpst") is not None),
            None,
        )  # fmt: skip
        session = f"{chpst} -P " if chpst else ""
        run = (
            "#!/bin/sh\n# Written by oci2vm: a login on the serial console.\n"
            f"exec {session}{getty_command(edit)} -L {serial} {BAUD} vt100\n"
        )
        for directory in ("/etc/sv", f"{SV}/{service}"):
            edit.mkdir(directory)
        edit.write(f"{SV}/{service}/run", run.encode(), mode=0o755, uid=0, gid=0)
    units.enable_runit(edit, service)


def openrc_getty(edit: TreeEditor, serial: str) -> list[str]:
    """Under openrc-init (no inittab), OpenRC's agetty service multiplexed by a link's
    name, as Alpine's and Gentoo's docs set up consoles: /etc/init.d/agetty.PORT -> agetty
    in the default runlevel, its speed and terminal in /etc/conf.d/agetty.PORT."""
    if edit.get(OPENRC_AGETTY) is None:
        return [
            f"openrc-init without OpenRC's agetty service ({OPENRC_AGETTY}): "
            f"no login on {serial} was set up"
        ]
    name = f"agetty.{serial}"
    if edit.get(f"/etc/init.d/{name}") is None:
        edit.symlink(f"/etc/init.d/{name}", "agetty")
    if edit.get(f"/etc/conf.d/{name}") is None:
        edit.mkdir("/etc/conf.d")
        conf = f'# Written by oci2vm.\nbaud="{BAUD}"\nterm_type="vt100"\nagetty_options="-L"\n'
        edit.write(f"/etc/conf.d/{name}", conf.encode(), mode=0o644, uid=0, gid=0)
    units.enable_openrc(edit, name)
    return []


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
