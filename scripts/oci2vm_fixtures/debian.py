"""Image B, debian, as in the article: debootstrap minbase (layer 1), then kernel + systemd
installed in a chroot (layer 2, the diff); both stages are cached under the image's cache."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .assemble import PATH_ENV, assemble, write_rootfs
from .cache import ensure
from .commands import log, run
from .compress import MT_GZIP, Layer, compress_layer
from .scan import diff_trees, tree_entries
from .tarwriter import write_tar

# Bump a version whenever its recipe changes: the cache is keyed by it, so the fixture rebuilds.
DEBIAN_VERSION = 1
DEBIAN_STAGE_VERSION = 1  # the debootstrap and apt-get stages cached under the debian image

DEBIAN_MIRROR = "http://deb.debian.org/debian"
CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C",
    "HOME": "/root",
}
INSTALL = ("linux-image-amd64", "systemd-sysv")


def build_minbase(out: Path, cache: Path) -> dict[str, object]:
    rootfs = out / "rootfs"
    run("debootstrap", "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR)
    write_tar(out / "layer.tar", tree_entries(rootfs), type_bits=True)
    layer = compress_layer(out / "layer.tar", MT_GZIP, "debootstrap --variant=minbase bookworm")
    return {"diff_id": layer.diff_id, "digest": layer.digest, "size": layer.size}


def apt_install(rootfs: Path) -> None:
    """apt-get update, install INSTALL and clean in a chroot with /proc, /sys and /dev mounted;
    a policy-rc.d keeps maintainer scripts from starting services meanwhile."""
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
        run("chroot", rootfs, "apt-get", "install", "-y", "--no-install-recommends", *INSTALL,
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


def build_full(out: Path, cache: Path) -> dict[str, object]:
    """minbase + kernel + systemd, apt lists and caches cleaned as a Dockerfile would.
    debootstrap leaves its .debs (~31 MB) and apt lists (~49 MB) in the minbase tree, so the
    layers hold ~80 MB that layer 2 whites out: ~711 MB of layers for a ~618 MB tree."""
    minbase = ensure(cache, "debian-minbase", DEBIAN_STAGE_VERSION, build_minbase)
    rootfs = out / "rootfs"
    run("cp", "-a", minbase / "rootfs", rootfs)
    apt_install(rootfs)
    remove_apt_lists(rootfs)
    return {"installed": list(INSTALL)}


def build_debian(out: Path, cache: Path) -> dict[str, object]:
    minbase = ensure(cache, "debian-minbase", DEBIAN_STAGE_VERSION, build_minbase)
    full = ensure(cache, "debian-full", DEBIAN_STAGE_VERSION, build_full)
    stage = json.loads((minbase / "facts.json").read_text())
    (out / "layers").mkdir()
    os.link(minbase / "layer.tar", out / "layers/layer1.tar")
    os.link(minbase / "layer.gz", out / "layers/layer1.gz")
    layer1 = Layer(out / "layers/layer1.tar", stage["diff_id"], out / "layers/layer1.gz",
                   stage["digest"], stage["size"], MT_GZIP,
                   "debootstrap --variant=minbase bookworm " + DEBIAN_MIRROR)  # fmt: skip
    started = time.monotonic()
    changes = diff_trees(minbase / "rootfs", full / "rootfs")
    write_tar(out / "layers/layer2.tar", changes, type_bits=True)
    log(f"layer 2 (diff) written in {time.monotonic() - started:.1f} s")
    created_by = "apt-get install -y --no-install-recommends " + " ".join(INSTALL)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(compress_layer, out / "layers/layer2.tar", MT_GZIP, created_by)
        entries = write_rootfs(out, tree_entries(full / "rootfs"))
        layer2 = pending.result()
    config: dict[str, object] = {"Env": [PATH_ENV], "Cmd": ["/bin/bash"]}
    facts = assemble(out, "oci2vm-fixtures/debian", [layer1, layer2], config, [],
                     oci_archive=False)  # fmt: skip
    shutil.rmtree(out / "layers")
    facts.update(name="debian", entries=entries)
    return facts
