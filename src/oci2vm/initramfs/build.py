"""Building oci2vm's initramfs: a static busybox, init.sh as /init, the kernel modules that
reach and mount the root and bring up the first NIC, and (optionally) the boot spec, as one
gzip-compressed cpio archive whose bytes depend on the inputs alone.

The spec can also travel alone (spec_archive): the kernel unpacks concatenated archives in
order, a later file replacing an earlier one (Documentation/driver-api/early-userspace/
buffer-format.rst), so `oci2vm run` appends a small spec archive to a cached base
initramfs and needs no rebuild for other arguments.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Sequence
from importlib import resources

from oci2vm.debian.deb import open_deb
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from oci2vm.initramfs.cpio import CpioWriter
from oci2vm.initramfs.spec import FILES_DIR, SPEC_PATH, BootSpec, render

# Module names (as modules.dep and modinfo spell them) the initramfs loads, before their
# dependencies are added: root disks on the common hypervisors (QEMU/KVM's virtio, NVMe,
# AHCI and PIIX; VMware's PVSCSI; Hyper-V's storvsc; Xen's blkfront), their NICs, ext4,
# 9p over virtio for volumes, and virtio_console for app mode's channels to the host.
# Debian builds all of them as modules (=m); AF_PACKET, which udhcpc needs, is built in
# (CONFIG_PACKET=y in bookworm's config), as are devtmpfs and the 8250 serial console.
INITRAMFS_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "nvme",
    "ahci",
    "ata_piix",
    "vmw_pvscsi",
    "hv_storvsc",
    "xen-blkfront",
    "virtio_net",
    "e1000",
    "e1000e",
    "vmxnet3",
    "hv_netvsc",
    "xen-netfront",
    "crc32c_generic",  # ext4's and jbd2's checksums (their softdep "pre: crc32c")
    "ext4",
    "9p",
    "9pnet_virtio",
    "virtio_console",
)

# What `oci2vm run` needs: QEMU's virtio devices alone (runtime.qemu_command). Loading
# INITRAMFS_MODULES' other drivers costs ~2-3 s under TCG (each module's signature is
# checked and its relocations applied by emulated code), for devices QEMU does not have.
RUN_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "crc32c_generic",
    "ext4",
    "9p",
    "9pnet_virtio",
)

# The busybox applets init.sh and udhcpc.sh call by name (PATH=/bin).
APPLETS: tuple[str, ...] = (
    "sh", "awk", "cat", "env", "findfs", "hostname", "ifconfig", "insmod", "ip", "kill",
    "ln", "ls", "mkdir", "mount", "nsenter", "poweroff", "readlink", "route", "setsid", "sleep",
    "switch_root", "sync", "udhcpc", "umount", "mkfifo", "tee", "wc", "chown", "unshare", "stty",
    # growroot.sh's
    "blockdev", "chroot", "cp", "crc32", "dd", "grep", "head", "od", "printf", "tail",
)  # fmt: skip

BUSYBOX_PATH = "bin/busybox"
# Where busybox-static keeps it: /bin up to bookworm, /usr/bin from trixie on (merged /usr).
PACKAGE_BUSYBOX = ("bin/busybox", "usr/bin/busybox")
MODULES_LIST = "etc/oci2vm/modules"
MAX_BUSYBOX = 8 << 20  # Debian's static busybox is ~2 MB
GZIP_LEVEL = 6  # level 9 takes 7x the time (1.7 s against 0.23 s) for 0.6 % less


SCRIPTS = ("init.sh", "udhcpc.sh", "growroot.sh")  # what the initramfs runs, as written


def scripts_digest() -> str:
    """What the initramfs's scripts are, and the applets they call: a cached initramfs
    built with others is stale."""
    h = hashlib.sha256(" ".join(APPLETS).encode())
    for name in SCRIPTS:
        h.update(_script(name))
    return h.hexdigest()


def _script(name: str) -> bytes:
    return resources.files("oci2vm.initramfs").joinpath(name).read_bytes()


def _add_parents(cpio: CpioWriter, path: str, made: set[str]) -> None:
    parts = path.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        directory = "/".join(parts[:depth])
        if directory not in made:
            cpio.add_dir(directory)
            made.add(directory)


def _base_tree(cpio: CpioWriter, busybox: bytes, made: set[str]) -> None:
    for directory in ("bin", "dev", "etc", "etc/oci2vm", "lib", "newroot", "proc", "run", "sys"):
        cpio.add_dir(directory)
        made.add(directory)
    cpio.add_char_device("dev/console", 5, 1, 0o600)
    cpio.add_char_device("dev/null", 1, 3, 0o666)
    cpio.add_file(BUSYBOX_PATH, busybox, 0o755)
    for applet in APPLETS:
        cpio.add_symlink(f"bin/{applet}", "busybox")
    cpio.add_file("init", _script("init.sh"), 0o755)
    cpio.add_file("etc/oci2vm/udhcpc.sh", _script("udhcpc.sh"), 0o755)
    cpio.add_file("etc/oci2vm/growroot.sh", _script("growroot.sh"), 0o644)


def _check_relpath(relpath: str) -> str:
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise Oci2vmError(f"malformed module path {relpath!r}")
    if "\n" in relpath:
        raise Oci2vmError(f"malformed module path {relpath!r}")
    return relpath


def build_initramfs(
    busybox: bytes,
    kernel_version: str,
    modules: Sequence[tuple[str, bytes]],
    spec: BootSpec | None,
    *,
    mtime: int,
) -> bytes:
    """The initramfs, gzip-compressed (gzip's own mtime 0) and NUL-padded to a multiple
    of 4 bytes, so that spec_archive() can follow it: the same inputs give the same bytes.
    `modules` are (path under /lib/modules/VERSION, uncompressed .ko) in load order,
    dependencies first; `spec` None boots the root's init (system mode, /sbin/init)."""
    if not kernel_version or "/" in kernel_version or kernel_version.startswith("."):
        raise Oci2vmError(f"malformed kernel version {kernel_version!r}")
    raw = io.BytesIO()
    cpio = CpioWriter(raw, mtime=mtime)
    made: set[str] = set()
    _base_tree(cpio, busybox, made)
    paths = []
    for relpath, data in modules:
        path = f"lib/modules/{kernel_version}/{_check_relpath(relpath)}"
        _add_parents(cpio, path, made)
        cpio.add_file(path, data)
        paths.append("/" + path)
    cpio.add_file(MODULES_LIST, "".join(p + "\n" for p in paths).encode())
    if spec is not None:
        cpio.add_file(SPEC_PATH, render(spec))
    cpio.close()
    compressed = gzip.compress(raw.getvalue(), compresslevel=GZIP_LEVEL, mtime=0)
    # The kernel reads an archive appended after a compressed one only from a 4-byte
    # boundary (init/initramfs.c, unpack_to_rootfs: `!(this_header & 3)`), skipping NULs.
    return compressed + b"\0" * (-len(compressed) % 4)


def spec_archive(
    spec: BootSpec, *, mtime: int = 0, files: Sequence[tuple[str, bytes]] = ()
) -> bytes:
    """An uncompressed cpio holding the spec (and the files of -v FILE:PATH:ro, by their
    volume's tag), to append to a base initramfs."""
    raw = io.BytesIO()
    cpio = CpioWriter(raw, mtime=mtime)
    cpio.add_dir("etc")
    cpio.add_dir("etc/oci2vm")
    cpio.add_file(SPEC_PATH, render(spec))
    if files:
        cpio.add_dir(FILES_DIR)
    for tag, data in files:
        cpio.add_file(f"{FILES_DIR}/{tag}", data, 0o444)
    cpio.close()
    return raw.getvalue()


def busybox_from_deb(deb: BlobRef) -> bytes:
    """./bin/busybox from Debian's busybox-static package (verified by the caller)."""
    with open_deb(deb, "busybox-static").data() as tar:
        for member in tar:
            if member.isfile() and member.name.removeprefix("./") in PACKAGE_BUSYBOX:
                if member.size > MAX_BUSYBOX:
                    raise Oci2vmError(
                        f"busybox-static: bin/busybox is {member.size} bytes, over the "
                        f"{MAX_BUSYBOX >> 20} MiB expected of it"
                    )
                data = tar.read_data(member.size)
                break
        else:
            raise Oci2vmError("busybox-static holds no bin/busybox: is it the right package?")
    return data
