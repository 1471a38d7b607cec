"""App mode: the mount points oci2vm's init mounts over in the image's root (/proc, /sys,
/dev, /run, /tmp) and the files it binds its own over (/etc/hosts, /etc/resolv.conf,
/etc/hostname), created where the image has none, as a container runtime creates them
before it starts a container. The image's own files are left as they are."""

from __future__ import annotations

from oci2vm.prepare.step import Step, Target, app_mode
from oci2vm.tree.editor import TreeEditor

MOUNT_POINTS = (("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/run", 0o755),
                ("/tmp", 0o1777), ("/etc", 0o755))  # fmt: skip
BIND_TARGETS = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


def apply(edit: TreeEditor, _target: Target) -> list[str]:
    for path, mode in MOUNT_POINTS:
        if edit.get(path) is None:
            edit.mkdir(path, mode=mode)
    for path in BIND_TARGETS:
        if edit.get(path) is None:
            edit.write(path, b"", mode=0o644, uid=0, gid=0)
    return []


STEP = Step("appmode", apply, applies=app_mode)
