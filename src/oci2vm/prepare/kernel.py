"""The kernel the disk boots: the image's own. An image without one is refused with the
fix named (injecting a verified kernel is the next step's work)."""

from __future__ import annotations

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor


def apply(_edit: TreeEditor, target: Target) -> list[str]:
    if not target.os.kernels:
        raise Oci2vmError(
            f"{target.source}: the image has no kernel (looked for /boot/vmlinuz-*, "
            "/lib/modules/*/vmlinuz, /vmlinuz): install one in the image, e.g. "
            f"{target.arch.facts.debian_kernel} on Debian"
        )
    return []


STEP = Step("kernel", apply)
