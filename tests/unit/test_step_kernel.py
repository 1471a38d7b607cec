"""The kernel step: a disk boots the image's own kernel; without one the build stops with
the fix named, for the image's architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.errors import Oci2vmError
from oci2vm.prepare import kernel
from support.layouts import directory, file
from support.prepared import flattened, run_step


def test_an_image_with_a_kernel_passes_without_notes(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("boot"), file("boot/vmlinuz-6.1.0-9-amd64", b"k")])
    assert run_step(tree, kernel.STEP) == []


@pytest.mark.parametrize("arch", list(Arch))
def test_an_image_without_a_kernel_names_the_package_for_its_architecture(
    tmp_path: Path, arch: Arch
) -> None:
    tree = flattened(tmp_path, [directory("boot"), file("boot/config-6.1", b"")])
    with pytest.raises(Oci2vmError) as raised:
        run_step(tree, kernel.STEP, arch=arch)
    message = str(raised.value)
    assert "the image has no kernel" in message
    assert arch.facts.debian_kernel in message
    assert "\n" not in message
