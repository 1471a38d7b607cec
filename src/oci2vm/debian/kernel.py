"""Debian's kernel for an architecture: the flavour's metapackage (linux-image-FLAVOUR, by
default Arch's debian_kernel) resolved to the versioned package that holds the kernel and
its modules, and the flavours a suite has, for the message when one is unknown.

Since Debian 14 (forky) a kernel is split: linux-image-V holds only documentation and
pins, version for version, linux-base-V (config, modules.builtin, modules.order),
linux-binary-V (/usr/lib/modules/V/vmlinuz, signed) and linux-modules-V (the modules).
kernel_packages() names every part, in the order dpkg unpacks them."""

from __future__ import annotations

from oci2vm.debian.archive import Archive
from oci2vm.debian.packages import Package
from oci2vm.errors import Oci2vmError

PREFIX = "linux-image-"
# Metapackages beside the flavours' own: debug symbols, and the template linux-signed-*
# builds from.
NOT_FLAVOURS = ("-dbg", "-template", "-unsigned")
# The parts of a split kernel, each named PART + V: expected by the index's first pass.
SPLIT_PARTS = ("linux-base-", "linux-binary-", "linux-modules-")


def flavours(archive: Archive) -> list[str]:
    """The kernel flavours the suite has for the archive's architecture (the metapackages'
    names without linux-image-)."""
    return [
        name.removeprefix(PREFIX)
        for name in archive.index().names(PREFIX)
        if not name.removeprefix(PREFIX)[:1].isdigit() and not name.endswith(NOT_FLAVOURS)
    ]


def kernel_package(archive: Archive, flavour: str | None = None) -> Package:
    """The package holding the kernel of `flavour` (the architecture's default without)."""
    name = f"{PREFIX}{flavour}" if flavour else archive.arch.facts.debian_kernel
    archive.index().expect(PREFIX, *SPLIT_PARTS)  # the metapackage and its pins: one pass
    if not archive.index().lookup([name]):
        known = ", ".join(flavours(archive)) or "none"
        raise Oci2vmError(
            f"unknown kernel flavour {name.removeprefix(PREFIX)!r} in {archive.suite} for "
            f"{archive.arch_name}: name one of {known}"
        )
    return archive.resolve(name)


def kernel_packages(archive: Archive, flavour: str | None = None) -> list[Package]:
    """The packages that together hold the kernel of `flavour`: one for a kernel in one
    package; for a split kernel, linux-image-V's pinned parts (linux-*-V of its own
    version, the metapackage linux-base-FLAVOUR left out) and linux-image-V itself, whether
    the metapackage's chain ends at linux-image-V or at the part of its own source."""
    holder = kernel_package(archive, flavour)
    release = holder.name.split("-", 2)[2] if holder.name.count("-") >= 2 else ""
    image = archive.index().lookup([PREFIX + release]).get(PREFIX + release)
    if not release or image is None or image.version != holder.version:
        return [holder]
    pinned = [c[0] for c in image.depends if len(c) == 1 and c[0].op == "="]
    names = [r.name for r in pinned if r.name.startswith("linux-") and r.name.endswith(release)]
    found = archive.index().lookup(names)
    parts = [found[n] for n in names if n in found and found[n].version == image.version]
    if not parts or (holder != image and holder not in parts):
        return [holder]
    return [*parts, image]
