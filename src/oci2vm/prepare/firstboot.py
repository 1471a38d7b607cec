"""Commands run once, early at a machine's first boot, for inits other than systemd
(whose images keep their own first-boot mechanisms): what makes each VM built from one
image distinct (a machine ID, SSH host keys) and cannot be made at build time.

Steps register shell fragments with add(); this step, running after them, writes the
runner and hooks it into whatever init the image has:
- sysvinit's init (Debian, with sysv-rc or openrc under it): an inittab `sysinit` entry
  after the image's own (rcS has mounted /proc and remounted / read-write by then; the
  runlevel's services, sshd and dbus among them, start after every sysinit entry).
- busybox init: a `::sysinit:` line after the image's own (Alpine's openrc boot included).
- openrc-init: a service in the boot runlevel, before the default runlevel's services.
- runit: Debian's stage 1 (/etc/runit/1) runs every /etc/rcS.d/S* script in order, so an
  LSB script linked last there; Void's sources /etc/runit/core-services/*.sh.
The runner deletes each fragment once it succeeded: a failed one runs again next boot.
"""

from __future__ import annotations

from oci2vm.prepare import inittab, units
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import InitSystem, OsInfo

DIRECTORY = "/etc/oci2vm"
FRAGMENTS = f"{DIRECTORY}/firstboot.d"
RUNNER = f"{DIRECTORY}/firstboot"
SERVICE = "oci2vm-firstboot"
INIT_SCRIPT = f"/etc/init.d/{SERVICE}"
RCS_LINK = f"/etc/rcS.d/S99{SERVICE}"
VOID_CORE_SERVICES = "/etc/runit/core-services"
DEBIAN_BOOT_RUN = "/etc/runit/boot-run"
INITTAB_ID = "fb"
SUPPORTED = (InitSystem.SYSVINIT, InitSystem.BUSYBOX, InitSystem.OPENRC, InitSystem.RUNIT)
RUNNER_SCRIPT = f"""\
#!/bin/sh
# Written by oci2vm: what makes this machine distinct, made at its first boot. Each part
# in {FRAGMENTS} is removed once it succeeded; a failed one runs again next boot.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
[ -r /proc/sys/kernel/random/uuid ] || mount -t proc proc /proc
for part in {FRAGMENTS}/*.sh; do
\t[ -f "$part" ] || continue
\tif /bin/sh "$part"; then
\t\trm -f "$part"
\telse
\t\techo "oci2vm firstboot: $part failed; it runs again at the next boot" >&2
\tfi
done
exit 0
""".encode()
LSB_SCRIPT = f"""\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          {SERVICE}
# Required-Start:    $local_fs
# Required-Stop:
# Default-Start:     S
# Default-Stop:
# Short-Description: oci2vm's first-boot commands (machine ID, SSH host keys)
### END INIT INFO
# Written by oci2vm.
case "$1" in
start) exec {RUNNER} ;;
esac
exit 0
""".encode()
OPENRC_SCRIPT = f"""\
#!/sbin/openrc-run
# Written by oci2vm.
description="oci2vm's first-boot commands (machine ID, SSH host keys)"

depend() {{
\tneed localmount
\tbefore net sshd dbus
}}

start() {{
\tebegin "Running oci2vm's first-boot commands"
\t{RUNNER}
\teend $?
}}
""".encode()


def supported(os: OsInfo) -> bool:
    """Whether this step can run commands at boot under the image's init."""
    return os.init in SUPPORTED


def add(edit: TreeEditor, name: str, script: str) -> None:
    """Register a fragment: `script` runs once at first boot (by /bin/sh, as root), in
    order of `name`; a non-zero exit status keeps it for the next boot."""
    for directory in (DIRECTORY, FRAGMENTS):
        edit.mkdir(directory)
    edit.write(f"{FRAGMENTS}/{name}.sh", script.encode(), mode=0o644, uid=0, gid=0)


def fragments(edit: TreeEditor) -> list[str]:
    node = edit.get(FRAGMENTS)
    return sorted(node.children or {}) if node is not None else []


def apply(edit: TreeEditor, target: Target) -> list[str]:
    if not fragments(edit):
        return []
    edit.write(RUNNER, RUNNER_SCRIPT, mode=0o755, uid=0, gid=0)
    init = target.os.init
    if init in (InitSystem.SYSVINIT, InitSystem.BUSYBOX):
        inittab_hook(edit, init)
    elif init is InitSystem.OPENRC:
        edit.write(INIT_SCRIPT, OPENRC_SCRIPT, mode=0o755, uid=0, gid=0)
        units.enable_openrc(edit, SERVICE, runlevel="boot")
    elif init is InitSystem.RUNIT:
        runit_hook(edit)
    return []


def inittab_hook(edit: TreeEditor, init: InitSystem) -> None:
    text, existed = inittab.current(edit, init)
    if inittab.runs(text, rf"^{RUNNER}$"):
        return
    ident = inittab.free_id(text, INITTAB_ID) if init is InitSystem.SYSVINIT else ""
    inittab.save(edit, inittab.after_sysinit(text, f"{ident}::sysinit:{RUNNER}\n"), existed)


def runit_hook(edit: TreeEditor) -> None:
    """Void's core services, else Debian's rcS.d (and its native boot-run directory,
    which stage 1 runs in place of rcS.d when /etc/runit/native.boot.run exists)."""
    hook = f"# Written by oci2vm.\n{RUNNER}\n".encode()
    if edit.get(VOID_CORE_SERVICES) is not None:
        edit.write(f"{VOID_CORE_SERVICES}/99-{SERVICE}.sh", hook, mode=0o644, uid=0, gid=0)
        return
    if edit.get(DEBIAN_BOOT_RUN) is not None:
        edit.write(f"{DEBIAN_BOOT_RUN}/99-{SERVICE}.sh", hook, mode=0o644, uid=0, gid=0)
    edit.mkdir("/etc/init.d")
    edit.write(INIT_SCRIPT, LSB_SCRIPT, mode=0o755, uid=0, gid=0)
    edit.mkdir("/etc/rcS.d")
    edit.symlink(RCS_LINK, f"../init.d/{SERVICE}")


def applies(target: Target) -> bool:
    return system_mode(target) and supported(target.os)


STEP = Step("firstboot", apply, applies=applies)
