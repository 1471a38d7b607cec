"""Bookworm's kernel and busybox for boot tests of the initramfs: vmlinuz and the modules
it needs, read from the cached, verified .debs (dpkg-deb -x into a temporary directory:
tests may extract, the product never does), the module order from a hand-written
dependency table.

The table stands in for the kernel package's metadata (modinfo's depends and softdep of
linux-image-6.1.0-50-amd64, read once with the host's modinfo) until oci2vm.kernel's
ModuleDb computes closures: module_closure() is the one seam to switch over."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oci2vm.image.blobs import BlobRef
from oci2vm.initramfs.build import busybox_from_deb

ARCHIVE = Path("/var/cache/oci2vm-fixtures/debian-archive/blobs/sha256")
KERNEL_DEB = "7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3"
BUSYBOX_DEB = "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744"
KERNEL_VERSION = "6.1.0-50-amd64"

# module -> (path under /lib/modules/VERSION, the modules it needs first)
DEPENDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "virtio_ring": ("kernel/drivers/virtio/virtio_ring.ko", ()),
    "virtio_pci_modern_dev": ("kernel/drivers/virtio/virtio_pci_modern_dev.ko", ()),
    "virtio_pci_legacy_dev": ("kernel/drivers/virtio/virtio_pci_legacy_dev.ko", ()),
    "virtio": ("kernel/drivers/virtio/virtio.ko", ()),
    "virtio_pci": ("kernel/drivers/virtio/virtio_pci.ko",
                   ("virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio")),
    "virtio_blk": ("kernel/drivers/block/virtio_blk.ko", ("virtio", "virtio_ring")),
    "scsi_common": ("kernel/drivers/scsi/scsi_common.ko", ()),
    "scsi_mod": ("kernel/drivers/scsi/scsi_mod.ko", ("scsi_common",)),
    "virtio_scsi": ("kernel/drivers/scsi/virtio_scsi.ko", ("scsi_mod", "virtio_ring", "virtio")),
    "crct10dif_common": ("kernel/crypto/crct10dif_common.ko", ()),
    "crct10dif_generic": ("kernel/crypto/crct10dif_generic.ko", ("crct10dif_common",)),
    "crc_t10dif": ("kernel/lib/crc-t10dif.ko", ("crct10dif_common", "crct10dif_generic")),
    "crc64": ("kernel/lib/crc64.ko", ()),
    "crc64_rocksoft": ("kernel/lib/crc64-rocksoft.ko", ("crc64",)),
    "t10_pi": ("kernel/block/t10-pi.ko", ("crc_t10dif", "crc64_rocksoft")),
    "sd_mod": ("kernel/drivers/scsi/sd_mod.ko", ("scsi_mod", "t10_pi")),
    "nvme_core": ("kernel/drivers/nvme/host/nvme-core.ko", ("t10_pi",)),
    "nvme": ("kernel/drivers/nvme/host/nvme.ko", ("nvme_core",)),
    "libata": ("kernel/drivers/ata/libata.ko", ("scsi_mod", "scsi_common")),
    "libahci": ("kernel/drivers/ata/libahci.ko", ("libata",)),
    "ahci": ("kernel/drivers/ata/ahci.ko", ("libahci", "libata")),
    "ata_piix": ("kernel/drivers/ata/ata_piix.ko", ("libata",)),
    "vmw_pvscsi": ("kernel/drivers/scsi/vmw_pvscsi.ko", ("scsi_mod",)),
    "hv_vmbus": ("kernel/drivers/hv/hv_vmbus.ko", ()),
    "scsi_transport_fc": ("kernel/drivers/scsi/scsi_transport_fc.ko", ("scsi_mod",)),
    "hv_storvsc": ("kernel/drivers/scsi/hv_storvsc.ko",
                   ("scsi_mod", "hv_vmbus", "scsi_transport_fc", "scsi_common")),
    "xen_blkfront": ("kernel/drivers/block/xen-blkfront.ko", ()),
    "failover": ("kernel/net/core/failover.ko", ()),
    "net_failover": ("kernel/drivers/net/net_failover.ko", ("failover",)),
    "virtio_net": ("kernel/drivers/net/virtio_net.ko", ("virtio_ring", "virtio", "net_failover")),
    "e1000": ("kernel/drivers/net/ethernet/intel/e1000/e1000.ko", ()),
    "e1000e": ("kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", ()),
    "vmxnet3": ("kernel/drivers/net/vmxnet3/vmxnet3.ko", ()),
    "hv_netvsc": ("kernel/drivers/net/hyperv/hv_netvsc.ko", ("hv_vmbus",)),
    "xen_netfront": ("kernel/drivers/net/xen-netfront.ko", ()),
    "crc32c_generic": ("kernel/crypto/crc32c_generic.ko", ()),
    "jbd2": ("kernel/fs/jbd2/jbd2.ko", ("crc32c_generic",)),
    "mbcache": ("kernel/fs/mbcache.ko", ()),
    "crc16": ("kernel/lib/crc16.ko", ()),
    "ext4": ("kernel/fs/ext4/ext4.ko", ("jbd2", "mbcache", "crc16", "crc32c_generic")),
    "9pnet": ("kernel/net/9p/9pnet.ko", ()),
    "netfs": ("kernel/fs/netfs/netfs.ko", ()),
    "fscache": ("kernel/fs/fscache/fscache.ko", ("netfs",)),
    "9p": ("kernel/fs/9p/9p.ko", ("9pnet", "fscache", "netfs")),
    "9pnet_virtio": ("kernel/net/9p/9pnet_virtio.ko", ("virtio", "9pnet", "virtio_ring")),
    "virtio_console": ("kernel/drivers/char/virtio_console.ko", ("virtio", "virtio_ring")),
}  # fmt: skip


def module_closure(names: tuple[str, ...] | list[str]) -> list[str]:
    """Paths of `names` and everything they need, dependencies first (ModuleDb.closure's
    contract; swap this body for it when oci2vm.kernel lands)."""
    order: list[str] = []

    def visit(name: str) -> None:
        path, needs = DEPENDS[name.replace("-", "_")]
        if path in order:
            return
        for need in needs:
            visit(need)
        order.append(path)

    for name in names:
        visit(name)
    return order


@dataclass(frozen=True)
class KernelBundle:
    vmlinuz: Path
    version: str
    modules: list[tuple[str, bytes]]  # (path under /lib/modules/VERSION, .ko) in load order


def _blob(digest: str) -> BlobRef:
    path = ARCHIVE / digest
    return BlobRef(path, 0, path.stat().st_size, f"sha256:{digest}")


def have_debs() -> bool:
    return (ARCHIVE / KERNEL_DEB).is_file() and (ARCHIVE / BUSYBOX_DEB).is_file()


def bookworm_kernel(directory: Path, names: tuple[str, ...]) -> KernelBundle:
    """vmlinuz and the closure of module `names`, from the kernel .deb unpacked in `directory`."""
    subprocess.run(["dpkg-deb", "-x", str(ARCHIVE / KERNEL_DEB), str(directory)], check=True)
    base = directory / "lib/modules" / KERNEL_VERSION
    modules = [(path, (base / path).read_bytes()) for path in module_closure(names)]
    return KernelBundle(directory / "boot" / f"vmlinuz-{KERNEL_VERSION}", KERNEL_VERSION, modules)


@functools.cache
def busybox_static() -> bytes:
    return busybox_from_deb(_blob(BUSYBOX_DEB))
