"""--kernel SOURCE: a kernel shipped as an OCI image, flattened into the build's filesystem
and grafted into the system's tree: its kernel, initrd and modules, booted as an image's
own kernel is."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import pytest

from oci2vm.config import InitMode, KernelChoice
from oci2vm.errors import Oci2vmError
from oci2vm.image.model import ImageConfig, Platform
from oci2vm.prepare import kernel
from oci2vm.prepare.step import BootOutputs
from oci2vm.tree.model import Kind
from support.elfmodules import build_module
from support.layouts import directory, file, symlink, write_layout
from support.prepared import content, entry, options, target, with_data

VERSION = "6.6.6-kernelimage"
MODULES = f"usr/lib/modules/{VERSION}"


def kernel_image(tmp_path: Path) -> str:
    """An OCI image holding a kernel (merged /usr, as distroless kernel images are)."""
    members = [
        directory("boot"), file(f"boot/vmlinuz-{VERSION}", b"MZ kernel image"),
        file(f"boot/config-{VERSION}", b"CONFIG_EXT4_FS=m\n"),
        directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib"),
        file(f"{MODULES}/kernel/fs/ext4/ext4.ko", build_module(["name=ext4", "depends="])),
        file(f"{MODULES}/modules.dep", b"kernel/fs/ext4/ext4.ko:\n"),
        file(f"{MODULES}/modules.builtin", b""),
        file("etc/os-release", b"ID=kernels\n"),
    ]  # fmt: skip
    write_layout(tmp_path / "kernels", [members])
    return f"oci:{tmp_path / 'kernels'}"


@pytest.fixture(autouse=True)
def no_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "busybox_binary", lambda _target, _source: b"BUSYBOX")


def test_a_kernel_image_is_grafted_and_gets_oci2vms_initramfs(tmp_path: Path) -> None:
    source = kernel_image(tmp_path)
    tree, edit = with_data(tmp_path / "system", [directory("lib"), file("sbin/init")])
    goal = target(tree, options())
    goal = dataclasses.replace(
        goal, config=dataclasses.replace(goal.config, kernel=KernelChoice.parse(source))
    )
    notes = kernel.STEP.apply(edit, goal)
    assert notes == [f"the kernel {VERSION} comes from {source}"]
    assert edit.read_file(f"/boot/vmlinuz-{VERSION}", 1 << 20) == b"MZ kernel image"
    ext4 = entry(tree, f"/lib/modules/{VERSION}/kernel/fs/ext4/ext4.ko")
    assert ext4.kind is Kind.FILE  # under the system's own /lib, not through a new link
    initrd = gzip.decompress(content(tree, f"/boot/initrd.img-{VERSION}"))
    assert build_module(["name=ext4", "depends="]) in initrd and b"BUSYBOX" in initrd


def test_a_kernel_image_boots_directly_for_run(tmp_path: Path) -> None:
    source = kernel_image(tmp_path)
    tree, edit = with_data(tmp_path / "system", [file("bin/sh")])
    goal = target(tree, options())
    outputs = BootOutputs()
    app = ImageConfig(platform=Platform(), entrypoint=None, cmd=("true",), env=(),
                      working_dir="", user="", labels={}, exposed_ports=(), stop_signal="",
                      diff_ids=(), created="")  # fmt: skip
    goal = dataclasses.replace(
        goal, mode=InitMode.APP, boot_outputs=outputs, image_config=app,
        config=dataclasses.replace(goal.config, kernel=KernelChoice.parse(source)),
    )  # fmt: skip
    kernel.STEP.apply(edit, goal)
    assert (outputs.version, outputs.kernel) == (VERSION, b"MZ kernel image")
    assert b"SPEC_MODE='app'" in gzip.decompress(outputs.initrd)


def test_an_image_without_a_kernel_is_named(tmp_path: Path) -> None:
    write_layout(tmp_path / "empty", [[file("etc/os-release", b"ID=x\n")]])
    tree, edit = with_data(tmp_path / "system", [file("sbin/init")])
    goal = target(tree, options())
    goal = dataclasses.replace(goal, config=dataclasses.replace(
        goal.config, kernel=KernelChoice.parse(f"oci:{tmp_path / 'empty'}")))  # fmt: skip
    with pytest.raises(Oci2vmError, match="the image holds no kernel"):
        kernel.STEP.apply(edit, goal)
