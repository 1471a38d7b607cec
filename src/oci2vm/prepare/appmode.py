"""App mode: the files oci2vm's init binds its own over (/etc/hosts, /etc/resolv.conf,
/etc/hostname), created where the image has none, as a container runtime creates them
before it starts a container (the mount points it mounts over are mountpoints.py's). The
image's own files are left as they are."""

from __future__ import annotations

from oci2vm.prepare.step import Step, Target, app_mode
from oci2vm.tree.editor import TreeEditor

BIND_TARGETS = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


def apply(edit: TreeEditor, _target: Target) -> list[str]:
    if edit.get("/etc") is None:
        edit.mkdir("/etc", mode=0o755)
    for path in BIND_TARGETS:
        if edit.get(path) is None:
            edit.write(path, b"", mode=0o644, uid=0, gid=0)
    return []


STEP = Step("appmode", apply, applies=app_mode)
