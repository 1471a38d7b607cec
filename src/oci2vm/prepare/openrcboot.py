"""OpenRC installed in a container image starts nothing at boot: Alpine's openrc package
enables no service (setup-alpine, its installer, does), so an image made with `apk add
openrc` boots with empty sysinit and boot runlevels: /dev/pts and /dev/shm unmounted (no
terminal for an SSH login), no hostname, and nothing to remount / read-only at shutdown.

When both of those runlevels are empty and OpenRC's own boot scripts are installed, the
ones setup-alpine enables are, those the image has: sysinit devfs, dmesg; boot hwclock,
modules, sysctl, hostname, bootmisc, syslog; shutdown killprocs, savecache, mount-ro. A
device manager (mdev, udev) is not chosen for the image: the kernel's devtmpfs serves.
"""

from __future__ import annotations

from oci2vm.prepare import units
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor

RUNLEVELS = {
    "sysinit": ("devfs", "dmesg"),
    "boot": ("hwclock", "modules", "sysctl", "hostname", "bootmisc", "syslog"),
    "shutdown": ("killprocs", "savecache", "mount-ro"),
}


def applies(target: Target) -> bool:
    return system_mode(target) and target.os.openrc


def apply(edit: TreeEditor, _target: Target) -> list[str]:
    if not units.openrc_boot_scripts(edit):
        return []
    for level in ("sysinit", "boot"):
        node = edit.get(f"/etc/runlevels/{level}")
        if node is not None and node.children:
            return []
    enabled = []
    for level, scripts in RUNLEVELS.items():
        for script in scripts:
            if edit.get(f"/etc/init.d/{script}") is not None:
                units.enable_openrc(edit, script, runlevel=level)
                enabled.append(f"{script} ({level})")
    return [
        "OpenRC's boot runlevels were empty (an image with openrc installed, never set "
        f"up): enabled {', '.join(enabled)}, as setup-alpine does"
    ]


STEP = Step("openrcboot", apply, applies)
