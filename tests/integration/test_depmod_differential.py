"""oci2vm's depmod against kmod's: Debian's kernel packages from the fixture cache,
streamed through open_deb() into a ModuleDb as the kernel-injection step does, and also
written to a temporary /lib/modules for the host's depmod; every file each writes must be
byte-equal. bookworm's kernel has .ko modules; trixie's has .ko.xz under /usr/lib.

The packages are the suites' current kernels, fetched and verified from the machine's apt
mirror into the fixture cache (once; a rerun needs only the InRelease files)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.debian.archive import Archive
from oci2vm.debian.deb import open_deb
from oci2vm.debian.kernel import kernel_package
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from oci2vm.kernel.depmod import ModuleDb
from oci2vm.kernel.modinfo import decompress_module, read_modinfo
from support.debarchives import configured_mirror, fixture_store, need_gpg
from support.programs import requires

pytestmark = [pytest.mark.fixture, requires("depmod")]

KERNELS = ("bookworm", "trixie")
MODULES_DIR = re.compile(r"\./(?:usr/)?lib/modules/([^/]+)/(.+)")
FROM_PACKAGE = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


_SCANNED: dict[str, tuple[str, ModuleDb, Path]] = {}


def scanned(suite: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ModuleDb, Path]:
    """scan() of a suite's kernel, once per session."""
    if suite not in _SCANNED:
        root = tmp_path_factory.mktemp(f"depmod-{suite}")
        _SCANNED[suite] = (*scan(kernel_blob(suite), root), root)
    return _SCANNED[suite]


def kernel_blob(suite: str) -> BlobRef:
    """The suite's current kernel package, verified through the archive's signed chain."""
    need_gpg()
    archive = Archive(fixture_store(), suite, Arch.AMD64, mirror=configured_mirror())
    try:
        return archive.download(kernel_package(archive))
    except Oci2vmError as e:
        if "unreachable" in str(e) and "connect to the network" in str(e):
            pytest.skip(f"no mirror and nothing cached: {e}")
        raise


def scan(blob: BlobRef, root: Path) -> tuple[str, ModuleDb]:
    """The package's modules read into a ModuleDb, and written under root/lib/modules
    for depmod; the kernel version."""
    db = ModuleDb()
    versions: set[str] = set()
    package: dict[str, bytes] = {}
    with open_deb(blob).data() as tar:
        for member in tar:
            match = MODULES_DIR.fullmatch(member.name)
            if not match or not member.isfile():
                continue
            version, relpath = match.groups()
            versions.add(version)
            data = tar.read_data(member.size)
            if ".ko" in relpath:
                db.add(relpath, read_modinfo(decompress_module(relpath, data), relpath))
            elif relpath in FROM_PACKAGE:
                package[relpath] = data
            else:
                continue
            target = root / "lib" / "modules" / version / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    (version,) = versions
    db.set_order(package["modules.order"])
    db.set_builtin(package["modules.builtin"], package["modules.builtin.modinfo"])
    return version, db


@pytest.mark.parametrize("suite", sorted(KERNELS))
def test_every_index_file_is_byte_equal_to_depmods(
    suite: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    version, db, tmp_path = scanned(suite, tmp_path_factory)
    ours = db.indices(version, weakdep=False)  # the host's kmod 30 writes no weakdep
    subprocess.run(["depmod", "-b", str(tmp_path), version], check=True)
    directory = tmp_path / "lib" / "modules" / version
    theirs = {
        p.name: p.read_bytes()
        for p in directory.iterdir()
        if p.is_file() and p.name not in FROM_PACKAGE
    }
    assert sorted(ours) == sorted(theirs)
    different = [name for name in ours if ours[name] != theirs[name]]
    assert different == []
    assert len(db) > 4000
    assert b"ext4.ko" in ours["modules.dep"] and ours["modules.devname"]


def test_the_closure_of_a_boot_set_loads_dependencies_first(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    _, db, _ = scanned("bookworm", tmp_path_factory)
    closure = db.closure(["virtio_blk", "virtio_net", "ext4", "virtio_pci"])
    names = [p.rsplit("/", 1)[1] for p in closure]
    assert names.index("jbd2.ko") < names.index("ext4.ko")
    assert names.index("virtio.ko") < names.index("virtio_ring.ko") < names.index("virtio_blk.ko")
    assert names.index("failover.ko") < names.index("net_failover.ko")
    assert names.index("net_failover.ko") < names.index("virtio_net.ko")
    assert set(names) >= {"mbcache.ko", "crc16.ko", "virtio_pci.ko"}
    assert db.closure(["virtio_blk"]) == db.closure(["virtio-blk"])
