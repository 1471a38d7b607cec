"""Debian's kernel for an architecture: the flavour's metapackage (linux-image-FLAVOUR, by
default Arch's debian_kernel) resolved to the versioned package that holds the kernel and
its modules, and the flavours a suite has, for the message when one is unknown."""

from __future__ import annotations

from oci2vm.debian.archive import Archive
from oci2vm.debian.packages import Package
from oci2vm.errors import Oci2vmError

PREFIX = "linux-image-"
# Metapackages beside the flavours' own: debug symbols, and the template linux-signed-*
# builds from.
NOT_FLAVOURS = ("-dbg", "-template", "-unsigned")


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
    archive.index().expect(PREFIX)  # the metapackage and the package it pins: one pass
    if not archive.index().lookup([name]):
        known = ", ".join(flavours(archive)) or "none"
        raise Oci2vmError(
            f"unknown kernel flavour {name.removeprefix(PREFIX)!r} in {archive.suite} for "
            f"{archive.arch_name}: name one of {known}"
        )
    return archive.resolve(name)
