"""The guest kernel hook (prepare/kernelhook): a Debian tree that boots oci2vm's initramfs
and has no initramfs generator gets /etc/kernel/postinst.d and postrm.d hooks, the busybox
they run and the module names the build chose; any other tree gets none of them."""

from __future__ import annotations

import dataclasses
import lzma
from pathlib import Path

import pytest

from oci2vm.config import InitrdChoice, KernelChoice
from oci2vm.image.model import ImageConfig, Platform
from oci2vm.initramfs.build import INITRAMFS_MODULES
from oci2vm.prepare import kernel, kernelhook
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, Tree, lookup
from support.debarchives import build_deb
from support.elfmodules import build_module
from support.layouts import Member, directory, file, symlink
from support.prepared import FS_TIME, content, entry, flattened, options, target, with_data

VERSION = "6.1.0-99-amd64"
BUSYBOX = b"\x7fELF fake busybox"
HOOKS = [f"/etc/kernel/{d}/zz-oci2vm-initramfs" for d in ("postinst.d", "postrm.d")]
HOOK_FILES = [*HOOKS, "/usr/lib/oci2vm/busybox", "/usr/lib/oci2vm/initramfs-modules"]
DEBIAN = [file("sbin/init"), directory("var"), file("var/lib/dpkg/status", b"")]
APP_CONFIG = ImageConfig(
    platform=Platform(), entrypoint=None, cmd=("true",), env=(), working_dir="/", user="",
    labels={}, exposed_ports=(), stop_signal="", diff_ids=(), created="",
)  # fmt: skip


def module(name: str, needs: tuple[str, ...] = ()) -> bytes:
    info = [f"name={name}", f"vermagic={VERSION} SMP", "depends=" + ",".join(needs)]
    return build_module(info, exports=(f"{name}_sym",), undefined=[f"{n}_sym" for n in needs])


def kernel_deb(tmp_path: Path) -> Path:
    base = f"./lib/modules/{VERSION}"
    files = {
        f"./boot/vmlinuz-{VERSION}": b"MZ fake kernel",
        f"{base}/kernel/fs/jbd2/jbd2.ko": module("jbd2"),
        f"{base}/kernel/fs/ext4/ext4.ko": module("ext4", needs=("jbd2",)),
        f"{base}/modules.builtin": b"",
    }
    path = tmp_path / "linux-image.deb"
    path.write_bytes(build_deb(f"linux-image-{VERSION}", "6.1.1-1", files))
    return path


@pytest.fixture(autouse=True)
def no_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "busybox_binary", lambda _target, _source: BUSYBOX)


def inject(tmp_path: Path, members: list[Member], *, app: bool = False) -> Tree:
    """The kernel step injecting a small kernel package into a tree of `members`."""
    tree = flattened(tmp_path, members)
    base = target(tree, options())
    if app:
        base = dataclasses.replace(base, image_config=APP_CONFIG)
    config = dataclasses.replace(base.config, kernel=KernelChoice.parse(str(kernel_deb(tmp_path))))
    base = dataclasses.replace(base, config=config)
    base = dataclasses.replace(base, mode=kernel.mode_of(base))
    kernel.STEP.apply(TreeEditor(tree, FS_TIME, sink=lambda _i, _d: None), base)
    return tree


def assert_hook_installed(tree: Tree) -> None:
    for hook in HOOKS:
        node = entry(tree, hook)
        assert (node.kind, node.mode, node.uid, node.gid) == (Kind.FILE, 0o755, 0, 0)
        assert content(tree, hook) == kernelhook.hook_script()
    assert content(tree, "/usr/lib/oci2vm/busybox") == BUSYBOX
    assert entry(tree, "/usr/lib/oci2vm/busybox").mode == 0o755
    names = content(tree, "/usr/lib/oci2vm/initramfs-modules").decode().splitlines()
    assert names == list(INITRAMFS_MODULES)


def test_a_debian_tree_without_a_generator_gets_the_hook_with_an_injected_kernel(
    tmp_path: Path,
) -> None:
    assert_hook_installed(inject(tmp_path, DEBIAN))


DPKG = [directory("var"), file("var/lib/dpkg/status", b"")]


@pytest.mark.parametrize(
    "members",
    [
        [*DEBIAN, file("usr/sbin/update-initramfs", b"#!/bin/sh\n", mode=0o755)],
        [*DEBIAN, file("usr/bin/dracut", b"#!/bin/bash\n", mode=0o755)],
        [symlink("sbin", "usr/sbin"), file("usr/sbin/init"), *DPKG,
         file("usr/sbin/update-tirfs", mode=0o755)],  # found through the /sbin link
    ],
    ids=["initramfs-tools", "dracut", "tiny-initramfs-merged-usr"],
)  # fmt: skip
def test_a_tree_with_an_initramfs_generator_gets_no_hook(
    tmp_path: Path, members: list[Member]
) -> None:
    tree = inject(tmp_path, members)
    assert [path for path in HOOK_FILES if lookup(tree.root, path)] == []


def test_a_tree_without_dpkg_gets_no_hook(tmp_path: Path) -> None:
    tree = inject(tmp_path, [file("sbin/init"), file("etc/os-release", b"ID=alpine\n")])
    assert [path for path in HOOK_FILES if lookup(tree.root, path)] == []


def test_an_app_image_gets_no_hook(tmp_path: Path) -> None:
    tree = inject(tmp_path, [file("bin/sh"), *DPKG], app=True)
    assert [path for path in HOOK_FILES if lookup(tree.root, path)] == []


def test_the_images_own_kernel_booting_oci2vms_initramfs_gets_the_hook(tmp_path: Path) -> None:
    modules = f"lib/modules/{VERSION}"
    members = [
        *DEBIAN,
        file(f"boot/vmlinuz-{VERSION}", b"k"),
        file(f"{modules}/kernel/fs/ext4/ext4.ko.xz", lzma.compress(module("ext4"))),
        file(f"{modules}/modules.dep", b"kernel/fs/ext4/ext4.ko.xz:\n"),
    ]
    tree, edit = with_data(tmp_path, members)
    kernel.STEP.apply(edit, target(tree, options()))
    assert_hook_installed(tree)


def test_initrd_image_keeps_the_images_own_initrd_and_gets_no_hook(tmp_path: Path) -> None:
    members = [*DEBIAN, file(f"boot/vmlinuz-{VERSION}", b"k"),
               file(f"boot/initrd.img-{VERSION}", b"i")]  # fmt: skip
    tree, edit = with_data(tmp_path, members)
    base = target(tree, options())
    base = dataclasses.replace(
        base, config=dataclasses.replace(base.config, initrd=InitrdChoice.IMAGE)
    )
    kernel.STEP.apply(edit, base)
    assert [path for path in HOOK_FILES if lookup(tree.root, path)] == []


def test_the_hook_is_a_posix_sh_script_for_both_maintainer_phases() -> None:
    script = kernelhook.hook_script().decode()
    assert script.startswith("#!/bin/sh\n")
    assert "*/postrm.d/*) " in script  # one script: removal when run from postrm.d
    assert "update-initramfs" in script and "dracut" in script  # stands aside at run time
