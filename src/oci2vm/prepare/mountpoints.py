"""The directories an init mounts the kernel's filesystems over (/proc, /sys, /dev, /run)
and /tmp, created where the image has none. A container runtime makes them before a
container starts, so images often lack them (built FROM scratch, distroless, exported
without them); systemd would make them itself, but busybox's, sysvinit's and OpenRC's boot
scripts mount over them and stop without a /dev. What the image has there is left as it
is (a /run that is a file stays one)."""

from __future__ import annotations

from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor

MOUNT_POINTS = (("/proc", 0o555), ("/sys", 0o555), ("/dev", 0o755), ("/run", 0o755),
                ("/tmp", 0o1777))  # fmt: skip


def apply(edit: TreeEditor, _target: Target) -> list[str]:
    for path, mode in MOUNT_POINTS:
        if edit.get(path) is None:
            edit.mkdir(path, mode=mode)
    return []


STEP = Step("mountpoints", apply)
