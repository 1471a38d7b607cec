"""oci2vm run's cache: an image's root filesystem, built once, with the kernel and the
initramfs that boot it directly, kept by image and by the options that shape them.

Each run boots a throwaway copy-on-write overlay on the cached filesystem (QEMU's
snapshot=on), so the cache never changes, and the workload's own arguments (command,
environment, user...) travel in a small archive appended to the cached initramfs
(initramfs.build.spec_archive): a second run of an image, whatever its arguments, starts
without rebuilding.

<cache>/run/<key>/  root.ext4  vmlinuz  initrd.img  run.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oci2vm import pipeline
from oci2vm.arch import Arch
from oci2vm.boot.pvh import pvh_kernel
from oci2vm.config import Config, InitMode
from oci2vm.errors import Oci2vmError
from oci2vm.identity import image_identity
from oci2vm.image.blobs import BlobStore
from oci2vm.image.model import Image
from oci2vm.initramfs.build import scripts_digest
from oci2vm.report import Reporter
from oci2vm.tree.osinfo import OsInfo

log = logging.getLogger(__name__)

RUN_CACHE_VERSION = 2  # bump when what a cached entry holds changes


@dataclass(frozen=True, slots=True)
class DirectBoot:
    """A cached root filesystem and what boots it directly."""

    directory: Path
    mode: InitMode
    version: str  # the kernel's

    @property
    def root(self) -> Path:
        return self.directory / "root.ext4"

    @property
    def kernel(self) -> Path:
        """The kernel to boot: the uncompressed one QEMU starts at its PVH entry (no
        decompressor to run under emulation) where it has one, else the bzImage."""
        vmlinux = self.directory / "vmlinux"
        return vmlinux if vmlinux.is_file() else self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"


def file_digest(path: Path) -> str:
    """What a file given by an option holds, for the key: an edited key or user-data file
    must not boot the root built from its old content. A file that cannot be read keys by
    its name (the build that follows says why it cannot read it)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return str(path)


def run_key(config: Config, identity_digest: str) -> str:
    """What the cached entry depends on: the image and the build options (not the
    workload's, which each run passes anew)."""
    shaping = {
        "version": RUN_CACHE_VERSION,
        "scripts": scripts_digest(),  # the cached initramfs's init and its helpers
        "image": identity_digest,
        "platform": str(config.platform),
        "kernel": dataclasses.asdict(config.kernel),
        "init": config.init.value,
        "docker_run": config.docker_run,
        "initrd": config.initrd.value,
        "mirror": config.mirror or os.environ.get("OCI2VM_DEBIAN_MIRROR", ""),
        "keyrings": [str(p) for p in config.keyrings],
        "allow_expired_release": config.allow_expired_release,
        "size": config.size,
        "fs_uuid": config.fs_uuid,
        "hostname": config.hostname,
        "root_password": hashlib.sha256((config.root_password or "").encode()).hexdigest(),
        "ssh_keys": [file_digest(p) for p in config.ssh_keys],
        "users": [
            [u.name, hashlib.sha256((u.password or "").encode()).hexdigest(), u.sudo]
            for u in config.users
        ],
        "user_ssh_keys": [[name, file_digest(p)] for name, p in config.user_ssh_keys],
        "cloud_init": file_digest(config.cloud_init) if config.cloud_init else None,
        "network": dataclasses.asdict(config.network),
    }
    text = json.dumps(shaping, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached(directory: Path) -> DirectBoot | None:
    try:
        facts = json.loads((directory / "run.json").read_text())
        entry = DirectBoot(directory, InitMode(facts["mode"]), str(facts["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if all(p.is_file() for p in (entry.root, entry.kernel, entry.initrd)):
        return entry
    return None


def direct_boot(
    config: Config, reporter: Reporter, image: Image, store: BlobStore
) -> DirectBoot | None:
    """The cached entry for the image, built first when there is none; None when the
    image boots its own kernel (a system image that has one): boot a disk then."""
    identity = image_identity(image, config.fs_uuid)
    directory = store.root / "run" / run_key(config, identity.digest)
    found = cached(directory)
    if found is not None:
        log.debug("run cache hit: %s", directory)
        return found
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=directory.parent))
    try:
        ctx = pipeline.BuildContext(config, reporter, image, identity, store)
        rootfs, outputs = pipeline.build_direct_root(ctx, scratch / "root.ext4")
        if not outputs.kernel:
            return None
        (scratch / "vmlinuz").write_bytes(outputs.kernel)
        vmlinux = pvh_kernel(outputs.kernel)
        if vmlinux is not None:
            (scratch / "vmlinux").write_bytes(vmlinux)
        (scratch / "initrd.img").write_bytes(outputs.initrd)
        for note in rootfs.notes:
            reporter.note(note)
        mode = rootfs.mode or InitMode.SYSTEM
        facts = {"mode": mode.value, "version": outputs.version, "image": identity.digest}
        (scratch / "run.json").write_text(json.dumps(facts))
        try:
            os.rename(scratch, directory)
        except OSError:  # another run filled it meanwhile
            found = cached(directory)
            if found is None:
                raise Oci2vmError(f"{directory}: cannot store the run cache there") from None
            return found
        scratch = directory
        _link_twin(config, identity.digest, directory, rootfs.os)
        return DirectBoot(directory, mode, outputs.version)
    finally:
        if scratch != directory:
            shutil.rmtree(scratch, ignore_errors=True)


def _link_twin(
    config: Config, identity_digest: str, directory: Path, os_info: OsInfo | None
) -> None:
    """For an image without an init, `--init auto` and `--init app` build the same root:
    the entry made under one key serves the other too (a run with a command, which asks
    for app mode, and one without), through a link beside it."""
    twins = {InitMode.AUTO: InitMode.APP, InitMode.APP: InitMode.AUTO}
    if os_info is None or os_info.init_path is not None or config.init not in twins:
        return
    twin = dataclasses.replace(config, init=twins[config.init])
    link = directory.parent / run_key(twin, identity_digest)
    # Already there, or a cache that takes no links: the other key builds its own then.
    with contextlib.suppress(OSError):
        link.symlink_to(directory.name, target_is_directory=True)


def image_arch(image: Image) -> Arch:
    return Arch.from_name(image.config.platform.architecture)
