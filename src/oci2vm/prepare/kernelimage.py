"""A kernel from an image source (--kernel SOURCE): kernels shipped as OCI images, as
Firecracker and KubeVirt users keep them. The image is read with the same transports and
flattened into a tree of its own whose file data streams to the same filesystem writer;
its kernel (/boot/vmlinuz-VERSION, or /lib/modules/VERSION/vmlinuz), its initrd and its
modules directory are then grafted into the system's tree, and boot as an image's own
kernel does (prepare/kernel.py: its initrd if it mounts the root, else oci2vm's)."""

from __future__ import annotations

from oci2vm.errors import Oci2vmError
from oci2vm.layers.flatten import flatten
from oci2vm.prepare.step import Target
from oci2vm.sources import resolve
from oci2vm.sources.base import fetch_from
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, resolve_link
from oci2vm.tree.osinfo import Kernel, find_kernels


def graft_kernel(edit: TreeEditor, target: Target, location: str) -> Kernel:
    """Flatten the kernel image `location` into the build's filesystem and graft its
    newest kernel into the tree; returns where it now is."""
    image = resolve(location, fetch_from(target.config, target.store))
    theirs = flatten(image, sink=edit.sink, store=target.store)
    kernels = find_kernels(theirs)
    if not kernels:
        raise Oci2vmError(
            f"--kernel {location}: the image holds no kernel (looked for /boot/vmlinuz-*, "
            "/lib/modules/*/vmlinuz, /vmlinuz)"
        )
    kernel = kernels[0]
    version = kernel.version
    # (where it is in the kernel image, where it goes: modules where the system's kmod
    # looks, /lib/modules, through its own /lib -> usr/lib where it has one)
    wanted = [(kernel.path, kernel.path), (kernel.initrd, kernel.initrd),
              (f"/boot/config-{version}", None), (f"/boot/System.map-{version}", None),
              (f"/lib/modules/{version}", f"/lib/modules/{version}"),
              (f"/usr/lib/modules/{version}", f"/lib/modules/{version}")]  # fmt: skip
    placed: set[str] = set()
    for path, there in wanted:
        found = resolve_link(theirs.root, path) if path else None
        if found is None or found[0] in placed or found[1].kind not in (Kind.DIR, Kind.FILE):
            continue
        placed.add(found[0])
        edit.graft(there or found[0], found[1])
    return kernel
