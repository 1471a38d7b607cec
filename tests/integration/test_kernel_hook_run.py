"""oci2vm's guest kernel hook (initramfs/kernel-hook.sh) run by sh (dash, as in a Debian
guest; its tools are the host's busybox, as the guest's are the build's) on a directory
standing for the guest's root (OCI2VM_ROOT): from an oci2vm initramfs of the old
kernel and a new kernel's modules (compressed three ways, with dependencies and a built-in
one), it makes the new kernel's initramfs with the same names, uncompressed, in load
order, and points /initrd.img at it; postrm removes it; a generator makes it stand aside.
The guest runs the same script under Debian's maintainer scripts (tests/boot)."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from oci2vm.initramfs.build import build_initramfs
from oci2vm.initramfs.spec import BootSpec, render
from oci2vm.prepare import kernelhook
from support.programs import requires

pytestmark = requires("busybox", "cpio", "sh")

OLD, NEW = "6.1.0-9-amd64", "6.12.1+deb13-amd64"
WANTED = ["virtio_blk", "crc32c_generic", "ext4", "xen-blkfront", "absent_module"]
NEW_MODULES = {  # relative path: uncompressed bytes
    "kernel/drivers/virtio/virtio_ring.ko": b"new virtio_ring",
    "kernel/drivers/block/virtio_blk.ko": b"new virtio_blk",
    "kernel/drivers/block/xen-blkfront.ko": b"new xen-blkfront",
    "kernel/fs/mbcache.ko": b"new mbcache",
    "kernel/fs/jbd2/jbd2.ko": b"new jbd2",
    "kernel/fs/ext4/ext4.ko": b"new ext4",
    "kernel/sound/snd.ko": b"not wanted",
}
MODULES_DEP = (
    "kernel/fs/ext4/ext4.ko.xz: kernel/fs/mbcache.ko.gz kernel/fs/jbd2/jbd2.ko.xz\n"
    "kernel/fs/jbd2/jbd2.ko.xz:\n"
    "kernel/fs/mbcache.ko.gz:\n"
    "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko.xz\n"
    "kernel/drivers/virtio/virtio_ring.ko.xz:\n"
    "kernel/drivers/block/xen-blkfront.ko.xz:\n"
    "kernel/sound/snd.ko.xz:\n"
)
COMPRESSED = {  # as modules.dep names them
    "kernel/fs/mbcache.ko": "kernel/fs/mbcache.ko.gz",
    "kernel/drivers/block/virtio_blk.ko": "kernel/drivers/block/virtio_blk.ko",
}


def compressed(relpath: str, data: bytes) -> tuple[str, bytes]:
    name = COMPRESSED.get(relpath, relpath + ".xz")
    if name.endswith(".gz"):
        return name, gzip.compress(data)
    if name.endswith(".xz"):  # as the kernel's build compresses them (CRC32 checks)
        return name, lzma.compress(data, check=lzma.CHECK_CRC32)
    return name, data


def guest_root(tmp_path: Path) -> Path:
    """/boot with the old kernel's oci2vm initramfs, the new kernel installed (depmod run,
    /vmlinuz moved by linux-update-symlinks, /initrd.img still the old one) and the hooks."""
    root = tmp_path / "root"
    busybox = Path(shutil.which("busybox") or "busybox").read_bytes()
    (root / "boot").mkdir(parents=True)
    old = build_initramfs(busybox, OLD, [("kernel/fs/ext4/ext4.ko", b"old ext4")], BootSpec(),
                          mtime=0)  # fmt: skip
    (root / f"boot/initrd.img-{OLD}").write_bytes(old)
    (root / f"boot/vmlinuz-{NEW}").write_bytes(b"MZ new")
    modules = root / "usr/lib/modules" / NEW
    for relpath, data in NEW_MODULES.items():
        name, stored = compressed(relpath, data)
        (modules / name).parent.mkdir(parents=True, exist_ok=True)
        (modules / name).write_bytes(stored)
    (modules / "modules.dep").write_text(MODULES_DEP)
    (modules / "modules.builtin").write_text("kernel/crypto/crc32c_generic.ko\n")
    (root / "lib").symlink_to("usr/lib")
    (root / "vmlinuz").symlink_to(f"boot/vmlinuz-{NEW}")
    (root / "initrd.img").symlink_to(f"boot/initrd.img-{OLD}")
    oci2vm = root / "usr/lib/oci2vm"
    oci2vm.mkdir()
    (oci2vm / "busybox").write_bytes(busybox)
    (oci2vm / "busybox").chmod(0o755)
    (oci2vm / "initramfs-modules").write_text("".join(n + "\n" for n in WANTED))
    for phase in ("postinst.d", "postrm.d"):
        hook = root / "etc/kernel" / phase / kernelhook.HOOK_NAME
        hook.parent.mkdir(parents=True)
        hook.write_bytes(kernelhook.hook_script())
        hook.chmod(0o755)
    return root


def run_hook(root: Path, phase: str, action: str) -> subprocess.CompletedProcess[str]:
    hook = root / "etc/kernel" / phase / kernelhook.HOOK_NAME
    env = {"OCI2VM_ROOT": str(root), "DEB_MAINT_PARAMS": action, "PATH": os.environ["PATH"]}
    return subprocess.run(["sh", str(hook), NEW, f"/boot/vmlinuz-{NEW}"],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip


def unpack(initrd: Path, into: Path) -> Path:
    into.mkdir()
    subprocess.run(["cpio", "-i", "-d", "--quiet"], input=gzip.decompress(initrd.read_bytes()),
                   cwd=into, check=True)  # fmt: skip
    return into


def test_postinst_builds_the_new_kernels_initramfs_from_the_old_one(tmp_path: Path) -> None:
    root = guest_root(tmp_path)
    done = run_hook(root, "postinst.d", "configure")
    assert done.returncode == 0, done.stderr
    new = unpack(root / f"boot/initrd.img-{NEW}", tmp_path / "new")
    old = unpack(root / f"boot/initrd.img-{OLD}", tmp_path / "old")
    order = ["kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/block/virtio_blk.ko",
             "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko",
             "kernel/drivers/block/xen-blkfront.ko"]  # fmt: skip
    listed = (new / "etc/oci2vm/modules").read_text().splitlines()
    assert listed == [f"/lib/modules/{NEW}/{relpath}" for relpath in order]
    for relpath in order:
        assert (new / f"lib/modules/{NEW}" / relpath).read_bytes() == NEW_MODULES[relpath]
    assert sorted(p.name for p in (new / "lib/modules").iterdir()) == [NEW]  # the old ones gone
    for same in ("init", "etc/oci2vm/spec", "etc/oci2vm/udhcpc.sh", "bin/busybox"):
        assert (new / same).read_bytes() == (old / same).read_bytes(), same
    assert (new / "etc/oci2vm/spec").read_bytes() == render(BootSpec())
    assert os.readlink(new / "bin/sh") == "busybox"
    assert os.readlink(root / "initrd.img") == f"boot/initrd.img-{NEW}"
    assert (root / f"boot/initrd.img-{NEW}").stat().st_mode & 0o777 == 0o644


def test_postrm_removes_it_on_remove_only(tmp_path: Path) -> None:
    root = guest_root(tmp_path)
    assert run_hook(root, "postinst.d", "configure").returncode == 0
    initrd = root / f"boot/initrd.img-{NEW}"
    assert run_hook(root, "postrm.d", "upgrade").returncode == 0
    assert initrd.exists()
    assert run_hook(root, "postrm.d", "remove").returncode == 0
    assert not initrd.exists()
    assert (root / f"boot/initrd.img-{OLD}").exists()


def test_a_generator_installed_since_makes_it_stand_aside(tmp_path: Path) -> None:
    root = guest_root(tmp_path)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    (root / "usr/sbin/update-initramfs").chmod(0o755)
    assert run_hook(root, "postinst.d", "configure").returncode == 0
    assert not (root / f"boot/initrd.img-{NEW}").exists()


def test_a_new_kernel_without_ext4_fails_the_hook(tmp_path: Path) -> None:
    root = guest_root(tmp_path)
    dep = root / "usr/lib/modules" / NEW / "modules.dep"
    dep.write_text("".join(line + "\n" for line in MODULES_DEP.splitlines() if "ext4" not in line))
    done = run_hook(root, "postinst.d", "configure")
    assert done.returncode != 0
    assert "no ext4 module" in done.stderr
    assert not (root / f"boot/initrd.img-{NEW}").exists()


@pytest.mark.parametrize("action", ["upgrade", "abort-upgrade"])
def test_postinst_builds_only_on_configure(tmp_path: Path, action: str) -> None:
    root = guest_root(tmp_path)
    assert run_hook(root, "postinst.d", action).returncode == 0
    assert not (root / f"boot/initrd.img-{NEW}").exists()
