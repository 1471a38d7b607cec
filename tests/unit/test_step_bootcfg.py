"""The bootcfg step: grub.cfg with every kernel of the image, newest first, its root by
UUID and the console on the architecture's first serial port."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.prepare import bootcfg
from support.layouts import directory, file
from support.prepared import ROOT_UUID, content, entry, flattened, run_step


@pytest.mark.parametrize("arch", list(Arch))
def test_grub_cfg_lists_the_kernels_newest_first_on_the_arch_console(
    tmp_path: Path, arch: Arch
) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("boot"),
            file("boot/vmlinuz-6.1.0-9-amd64", b"k"),
            file("boot/initrd.img-6.1.0-9-amd64", b"i"),
            file("boot/vmlinuz-6.1.0-10-amd64", b"k"),
        ],
    )
    assert run_step(tree, bootcfg.STEP, arch=arch) == []
    cfg = content(tree, "/boot/grub/grub.cfg").decode()
    entries = [line for line in cfg.splitlines() if line.startswith("menuentry")]
    assert entries == ["menuentry 'Linux 6.1.0-10-amd64' {", "menuentry 'Linux 6.1.0-9-amd64' {"]
    assert (
        f"root=UUID={ROOT_UUID} rw console=tty0 console={arch.facts.serial_console},115200" in cfg
    )
    assert "initrd16 /boot/initrd.img-6.1.0-9-amd64" in cfg
    grub_dir = entry(tree, "/boot/grub")
    assert (grub_dir.mode, grub_dir.uid) == (0o755, 0)
