"""The Debian fixtures, as in the article: debootstrap minbase (layer 1), then packages
installed in a chroot (layer 2, the diff); every stage is cached under the image's cache.
  debian          minbase + linux-image-amd64 + systemd-sysv (a kernel to boot)
  debian-systemd  minbase + systemd-sysv (an init but no kernel: oci2vm must bring one)
  debian-minbase  minbase alone, one layer (no init at all: app mode's plain OS image)
The three share layer 1, the same blob. A Suite names the release a debootstrap stage
installs (bookworm's stage is "debian-minbase"); debian_systems.py builds the other inits
and trixie on the same functions."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Suite:
    """A Debian release: its codename, and the cache name of its debootstrap stage."""

    codename: str
    stage: str


BOOKWORM = Suite("bookworm", "debian-minbase")
TRIXIE = Suite("trixie", "debian-trixie-minbase")


def minbase_builder(suite: Suite) -> Builder:
    """The stage builder of `debootstrap --variant=minbase` of `suite`: rootfs/ and its
    one layer (layer.tar, layer.gz)."""

    def build(out: Path, cache: Path) -> dict[str, object]:
        rootfs = out / "rootfs"
        run("debootstrap", "--variant=minbase", suite.codename, rootfs, DEBIAN_MIRROR)
        write_tar(out / "layer.tar", tree_entries(rootfs), type_bits=True)
        created_by = f"debootstrap --variant=minbase {suite.codename}"
        layer = compress_layer(out / "layer.tar", MT_GZIP, created_by)
        return {"diff_id": layer.diff_id, "digest": layer.digest, "size": layer.size}

    return build


build_minbase = minbase_builder(BOOKWORM)


def apt_install(rootfs: Path, packages: tuple[str, ...], then: str = "") -> None:
    """apt-get update, install `packages`, run the shell command `then` (if any) and clean,
    in a chroot with /proc, /sys and /dev mounted; a policy-rc.d keeps maintainer scripts
    from starting services meanwhile."""
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
        if then:
            run("chroot", rootfs, "/bin/sh", "-c", then, env=CHROOT_ENV)
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


def installed_stage(packages: tuple[str, ...], suite: Suite = BOOKWORM, then: str = "") -> Builder:
    """The stage builder of minbase + `packages` (then the shell command `then`), apt lists
    and caches cleaned as a Dockerfile would. debootstrap leaves its .debs (~31 MB) and apt
    lists (~49 MB) in the minbase tree, so layer 2 whites out ~80 MB of layer 1 (debian:
    ~711 MB of layers, a ~618 MB tree)."""

    def build(out: Path, cache: Path) -> dict[str, object]:
        minbase = ensure(cache, suite.stage, DEBIAN_STAGE_VERSION, minbase_builder(suite))
        rootfs = out / "rootfs"
        run("cp", "-a", minbase / "rootfs", rootfs)
        apt_install(rootfs, packages, then)
        remove_apt_lists(rootfs)
        facts: dict[str, object] = {"installed": list(packages)}
        if then:
            facts["then"] = then
        return facts

    return build


def minbase_layer(out: Path, cache: Path, suite: Suite = BOOKWORM) -> tuple[Path, Layer]:
    """The minbase stage's directory, and its layer hardlinked into `out`/layers as layer 1."""
    minbase = ensure(cache, suite.stage, DEBIAN_STAGE_VERSION, minbase_builder(suite))
    stage = json.loads((minbase / "facts.json").read_text())
    (out / "layers").mkdir()
    os.link(minbase / "layer.tar", out / "layers/layer1.tar")
    os.link(minbase / "layer.gz", out / "layers/layer1.gz")
    layer1 = Layer(out / "layers/layer1.tar", stage["diff_id"], out / "layers/layer1.gz",
                   stage["digest"], stage["size"], MT_GZIP,
                   f"debootstrap --variant=minbase {suite.codename} {DEBIAN_MIRROR}")  # fmt: skip
    return minbase, layer1


def build_on_minbase(
    out: Path,
    cache: Path,
    name: str,
    stage: str,
    packages: tuple[str, ...],
    suite: Suite = BOOKWORM,
    then: str = "",
) -> dict[str, object]:
    """Image `name`: layer 1 `suite`'s minbase, layer 2 the diff that installing `packages`
    (then running `then`) made (the stage `stage`, cached), config DEBIAN_CONFIG."""
    minbase, layer1 = minbase_layer(out, cache, suite)
    full = ensure(cache, stage, DEBIAN_STAGE_VERSION, installed_stage(packages, suite, then))
    started = time.monotonic()
    changes = diff_trees(minbase / "rootfs", full / "rootfs")
    write_tar(out / "layers/layer2.tar", changes, type_bits=True)
    log(f"layer 2 (diff) written in {time.monotonic() - started:.1f} s")
    created_by = "apt-get install -y --no-install-recommends " + " ".join(packages)
    if then:
        created_by += " && " + then
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
