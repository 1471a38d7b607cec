"""Output formats other than raw: the raw disk converted by qemu-img, which skips zero
ranges, so every format stays sparse."""

from __future__ import annotations

from pathlib import Path

from oci2vm.config import OutputFormat
from oci2vm.util import tools

QEMU_IMG_FORMATS = {
    OutputFormat.QCOW2: "qcow2",
    OutputFormat.VMDK: "vmdk",
    OutputFormat.VDI: "vdi",
    OutputFormat.VHDX: "vhdx",
}


def convert(raw: Path, out: Path, fmt: OutputFormat, *, compress: bool = False) -> None:
    """Convert a raw disk image to `fmt` (qcow2 may be compressed; vmdk then streams)."""
    argv: list[str | Path] = ["qemu-img", "convert", "-q", "-f", "raw", "-O", QEMU_IMG_FORMATS[fmt]]
    if compress:
        argv.append("-c")
    if fmt is OutputFormat.VMDK:
        argv += ["-o", "subformat=streamOptimized" if compress else "subformat=monolithicSparse"]
    tools.run([*argv, raw, out])
