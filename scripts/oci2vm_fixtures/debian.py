"""The Debian fixtures, as in the article: debootstrap minbase (layer 1), then packages
installed in a chroot (layer 2, the diff); every stage is cached under the image's cache.
  debian          minbase + linux-image-amd64 + systemd-sysv (a kernel to boot)
  debian-systemd  minbase + systemd-sysv (an init but no kernel: oci2vm must bring one)
  debian-minbase  minbase alone, one layer (no init at all: app mode's plain OS image)
The three share layer 1, the same blob."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .assemble import PATH_ENV, assemble, write_rootfs
from .cache import Builder, ensure
from .commands import log, run
from .compress import MT_GZIP, Layer, compress_layer
from .scan import diff_trees, tree_entries
from .tarwriter import write_tar

# Bump a version whenever its recipe changes: the cache is keyed by it, so the fixture rebuilds.
DEBIAN_VERSION = 1
DEBIAN_SYSTEMD_VERSION = 1
DEBIAN_MINBASE_VERSION = 1
DEBIAN_STAGE_VERSION = 1  # the debootstrap and apt-get stages cached under the debian images

DEBIAN_MIRROR = "http://deb.debian.org/debian"
CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C",
    "HOME": "/root",
}
INSTALL = ("linux-image-amd64", "systemd-sysv")
SYSTEMD_INSTALL = ("systemd-sysv",)
DEBIAN_CONFIG: dict[str, object] = {"Env": [PATH_ENV], "Cmd": ["/bin/bash"]}


def build_minbase(out: Path, cache: Path) -> dict[str, object]:
    rootfs = out / "rootfs"
    run("debootstrap", "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR)
    write_tar(out / "layer.tar", tree_entries(rootfs), type_bits=True)
    layer = compress_layer(out / "layer.tar", MT_GZIP, "debootstrap --variant=minbase bookworm")
    return {"diff_id": layer.diff_id, "digest": layer.digest, "size": layer.size}


def apt_install(rootfs: Path, packages: tuple[str, ...]) -> None:
    """apt-get update, install `packages` and clean in a chroot with /proc, /sys and /dev
    mounted; a policy-rc.d keeps maintainer scripts from starting services meanwhile."""
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    mounted: list[Path] = []
    try:
        for argv, point in (
            (["-t", "proc", "proc"], rootfs / "proc"),
            (["-t", "sysfs", "sysfs"], rootfs / "sys"),
            (["--bind", "/dev"], rootfs / "dev"),
        ):
            run("mount", *argv, point)
            mounted.append(point)
        run("chroot", rootfs, "apt-get", "update", env=CHROOT_ENV)
        run("chroot", rootfs, "apt-get", "install", "-y", "--no-install-recommends", *packages,
            env=CHROOT_ENV)  # fmt: skip
        run("chroot", rootfs, "apt-get", "clean", env=CHROOT_ENV)
    finally:
        for point in reversed(mounted):
            run("umount", "--lazy", point)
        policy.unlink()


def remove_apt_lists(rootfs: Path) -> None:
    """`rm -rf /var/lib/apt/lists/*`, as a Dockerfile does."""
    lists = rootfs / "var/lib/apt/lists"
    for item in lists.iterdir():
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()


def installed_stage(packages: tuple[str, ...]) -> Builder:
    """The stage builder of minbase + `packages`, apt lists and caches cleaned as a Dockerfile
    would. debootstrap leaves its .debs (~31 MB) and apt lists (~49 MB) in the minbase tree,
    so layer 2 whites out ~80 MB of layer 1 (debian: ~711 MB of layers, a ~618 MB tree)."""

    def build(out: Path, cache: Path) -> dict[str, object]:
        minbase = ensure(cache, "debian-minbase", DEBIAN_STAGE_VERSION, build_minbase)
        rootfs = out / "rootfs"
        run("cp", "-a", minbase / "rootfs", rootfs)
        apt_install(rootfs, packages)
        remove_apt_lists(rootfs)
        return {"installed": list(packages)}

    return build


def minbase_layer(out: Path, cache: Path) -> tuple[Path, Layer]:
    """The minbase stage's directory, and its layer hardlinked into `out`/layers as layer 1."""
    minbase = ensure(cache, "debian-minbase", DEBIAN_STAGE_VERSION, build_minbase)
    stage = json.loads((minbase / "facts.json").read_text())
    (out / "layers").mkdir()
    os.link(minbase / "layer.tar", out / "layers/layer1.tar")
    os.link(minbase / "layer.gz", out / "layers/layer1.gz")
    layer1 = Layer(out / "layers/layer1.tar", stage["diff_id"], out / "layers/layer1.gz",
                   stage["digest"], stage["size"], MT_GZIP,
                   "debootstrap --variant=minbase bookworm " + DEBIAN_MIRROR)  # fmt: skip
    return minbase, layer1


def build_on_minbase(
    out: Path, cache: Path, name: str, stage: str, packages: tuple[str, ...]
) -> dict[str, object]:
    """Image `name`: layer 1 minbase, layer 2 the diff that installing `packages` made (the
    stage `stage`, cached), config DEBIAN_CONFIG."""
    minbase, layer1 = minbase_layer(out, cache)
    full = ensure(cache, stage, DEBIAN_STAGE_VERSION, installed_stage(packages))
    started = time.monotonic()
    changes = diff_trees(minbase / "rootfs", full / "rootfs")
    write_tar(out / "layers/layer2.tar", changes, type_bits=True)
    log(f"layer 2 (diff) written in {time.monotonic() - started:.1f} s")
    created_by = "apt-get install -y --no-install-recommends " + " ".join(packages)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(compress_layer, out / "layers/layer2.tar", MT_GZIP, created_by)
        entries = write_rootfs(out, tree_entries(full / "rootfs"))
        layer2 = pending.result()
    facts = assemble(out, f"oci2vm-fixtures/{name}", [layer1, layer2], DEBIAN_CONFIG, [],
                     oci_archive=False)  # fmt: skip
    shutil.rmtree(out / "layers")
    facts.update(name=name, entries=entries)
    return facts


def build_debian(out: Path, cache: Path) -> dict[str, object]:
    return build_on_minbase(out, cache, "debian", "debian-full", INSTALL)


def build_debian_systemd(out: Path, cache: Path) -> dict[str, object]:
    facts = build_on_minbase(out, cache, "debian-systemd", "debian-systemd-full", SYSTEMD_INSTALL)
    facts["installed"] = list(SYSTEMD_INSTALL)
    return facts


def build_debian_minbase(out: Path, cache: Path) -> dict[str, object]:
    """The minbase stage as a one-layer image: no init, no kernel."""
    minbase, layer1 = minbase_layer(out, cache)
    entries = write_rootfs(out, tree_entries(minbase / "rootfs"))
    facts = assemble(out, "oci2vm-fixtures/debian-minbase", [layer1], DEBIAN_CONFIG, [],
                     oci_archive=False)  # fmt: skip
    shutil.rmtree(out / "layers")
    facts.update(name="debian-minbase", entries=entries)
    return facts
