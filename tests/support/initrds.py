"""cpio archives of named files, as initrds hold them, written by the project's CpioWriter."""

from __future__ import annotations

import io

from oci2vm.initramfs.cpio import CpioWriter


def cpio_of(*names: str, data: bytes = b"") -> bytes:
    """A newc archive of regular files `names`, each holding `data`, and its trailer."""
    raw = io.BytesIO()
    cpio = CpioWriter(raw)
    for name in names:
        cpio.add_file(name, data)
    cpio.close()
    return raw.getvalue()
