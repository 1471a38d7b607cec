"""The project-owned fixture images, for tests: built by scripts/build_fixtures.py on first use,
then read from the cache ($OCI2VM_FIXTURE_CACHE, else /var/cache/oci2vm-fixtures when
writable, else ~/.cache/oci2vm-fixtures). Independent of the oci2vm package on purpose.

    fx = busybox_fixture()  # or busybox_app_fixture(), debian_fixture(),
                            # debian_systemd_fixture(), debian_minbase_fixture(), and the
                            # boot matrix's debian_sysvinit_fixture(), debian_openrc_fixture(),
                            # debian_runit_fixture(), debian_trixie_fixture(),
                            # busybox_init_fixture()
    fx.oci_layout, fx.oci_archive, fx.docker_archive, fx.docker_oci_archive, fx.rootfs_tar
    fx.config_digest, fx.diff_ids, fx.manifest_digest, fx.cmd, ...
    expected_tree(fx)["bin/sh"]  -> {"kind": "hardlink", "linkname": "bin/ash", ...}
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SCRIPT = SCRIPTS / "build_fixtures.py"  # the command line over the package below


@functools.cache
def builder() -> ModuleType:
    """The package scripts/oci2vm_fixtures (what SCRIPT runs), imported from scripts/."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("oci2vm_fixtures")


@dataclass(frozen=True)
class FixtureCase:
    """One row of the busybox case table: `path` in the flattened image, the `layer` (1-based)
    that decides it, whether it is `present` after flattening, and what it `proves`."""

    path: str
    layer: int
    present: bool
    proves: str


@dataclass(frozen=True)
class FixtureSet:
    """Every form of one fixture image, and the facts a reader must reproduce."""

    name: str
    root: Path  # the cache directory holding everything below
    oci_layout: Path  # (1) OCI image layout directory, tagged `tag`
    oci_archive: Path | None  # (2) the layout as one tar (busybox only)
    docker_archive: Path  # (3) legacy `docker save`: <id>/layer.tar, uncompressed
    docker_oci_archive: Path  # (4) Docker >= 25 `docker save`: OCI layout + manifest.json
    rootfs_tar: Path  # (5) the flattened tree, like `docker export` (no runtime-added files)
    expected_tree_json: Path  # one record per rootfs.tar member, see expected_tree()
    tag: str  # org.opencontainers.image.ref.name in index.json
    repo_tag: str  # RepoTags in the docker archives
    config_digest: str  # the image ID
    diff_ids: tuple[str, ...]
    layer_digests: tuple[str, ...]  # as in the OCI layout (compressed per media type)
    layer_media_types: tuple[str, ...]
    manifest_digest: str  # the OCI layout's manifest
    docker_oci_manifest_digest: str  # the Docker >= 25 archive's (uncompressed layers)
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    env: tuple[str, ...]
    working_dir: str
    user: str
    entries: int  # members in rootfs.tar
    build_seconds: float  # how long the build took when it ran
    # the image config's "config", whole (ExposedPorts, StopSignal, ...)
    config: dict[str, Any] = field(hash=False)


BUSYBOX_CASES: tuple[FixtureCase, ...] = tuple(FixtureCase(*row) for row in builder().CASES)
BUSYBOX_APP_INDEX_HTML: str = builder().INDEX_HTML  # /www/index.html, what httpd serves
BUSYBOX_APP_APPLETS: tuple[str, ...] = tuple(builder().APP_APPLETS)  # /bin/<applet> -> busybox
# busybox-init's applet paths (relative, e.g. "sbin/getty"), each a symlink to /bin/busybox
BUSYBOX_INIT_APPLETS: tuple[str, ...] = tuple(builder().INIT_APPLETS)


def _optional_tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _load(root: Path) -> FixtureSet:
    facts = json.loads((root / "facts.json").read_text())
    forms = facts["forms"]
    config = facts["config"]
    return FixtureSet(
        name=facts["name"],
        root=root,
        oci_layout=root / forms["oci_layout"],
        oci_archive=root / forms["oci_archive"] if forms["oci_archive"] else None,
        docker_archive=root / forms["docker_archive"],
        docker_oci_archive=root / forms["docker_oci_archive"],
        rootfs_tar=root / forms["rootfs_tar"],
        expected_tree_json=root / forms["expected_tree"],
        tag=facts["tag"],
        repo_tag=facts["repo_tag"],
        config_digest=facts["config_digest"],
        diff_ids=tuple(facts["diff_ids"]),
        layer_digests=tuple(facts["layer_digests"]),
        layer_media_types=tuple(facts["layer_media_types"]),
        manifest_digest=facts["manifest_digest"],
        docker_oci_manifest_digest=facts["docker_oci_manifest_digest"],
        entrypoint=_optional_tuple(config.get("Entrypoint")),
        cmd=_optional_tuple(config.get("Cmd")),
        env=tuple(config.get("Env", ())),
        working_dir=config.get("WorkingDir", ""),
        user=config.get("User", ""),
        entries=facts["entries"],
        build_seconds=facts["build_seconds"],
        config=config,
    )


def fixture(name: str, cache: Path | None = None) -> FixtureSet:
    """Fixture `name` (a key of the builder's FIXTURES), built first if the cache lacks it."""
    return _load(builder().ensure_fixture(name, cache))


def fixture_is_cached(name: str, cache: Path | None = None) -> bool:
    """Whether fixture `name` at its current recipe version is ready without building."""
    return bool((builder().fixture_dir(name, cache) / "facts.json").exists())


def busybox_fixture(cache: Path | None = None) -> FixtureSet:
    """Small multi-layer image covering every flattening case (BUSYBOX_CASES); ~2 s to build."""
    return fixture("busybox", cache)


def debian_fixture(cache: Path | None = None) -> FixtureSet:
    """bookworm minbase + linux-image-amd64 + systemd-sysv, 2 gzip layers. Building needs root
    and deb.debian.org (debootstrap + chroot), ~2-3 minutes the first time."""
    return fixture("debian", cache)


def debian_systemd_fixture(cache: Path | None = None) -> FixtureSet:
    """bookworm minbase + systemd-sysv (/sbin/init -> systemd) and no kernel (/boot empty, no
    /lib/modules), root password unset; 2 gzip layers, the first debian's. Building needs
    root and deb.debian.org, ~1 minute once the minbase stage is cached."""
    return fixture("debian-systemd", cache)


def debian_minbase_fixture(cache: Path | None = None) -> FixtureSet:
    """bookworm debootstrap --variant=minbase alone: no init, no kernel; 1 gzip layer, the
    first of debian and debian-systemd. Building needs root (debootstrap) when not cached."""
    return fixture("debian-minbase", cache)


def busybox_app_fixture(cache: Path | None = None) -> FixtureSet:
    """An app image as `docker run` gets them: static busybox + applet symlinks
    (BUSYBOX_APP_APPLETS), User "app" (1000:1000 in /etc/passwd, also in group extra 1001),
    WorkingDir /app, Cmd httpd on 8080 serving /www (BUSYBOX_APP_INDEX_HTML), ExposedPorts,
    StopSignal SIGTERM; no kernel, no init, no /dev /proc /sys /run. 1 gzip layer, < 1 s."""
    return fixture("busybox-app", cache)


def debian_sysvinit_fixture(cache: Path | None = None) -> FixtureSet:
    """bookworm minbase + sysvinit-core (/sbin/init is sysvinit's), ifupdown, isc-dhcp-client
    and openssh-server, whose postinst left host keys in /etc/ssh (baked in, as images ship
    them); no kernel, root password unset. 2 gzip layers, the first debian's. Building needs
    root and deb.debian.org once the minbase stage is cached."""
    return fixture("debian-sysvinit", cache)


def debian_openrc_fixture(cache: Path | None = None) -> FixtureSet:
    """bookworm minbase + sysvinit-core + openrc (Debian's openrc: sysvinit's /sbin/init runs
    openrc's runlevels), ifupdown, isc-dhcp-client; no kernel. 2 gzip layers."""
    return fixture("debian-openrc", cache)


def debian_runit_fixture(cache: Path | None = None) -> FixtureSet:
    """bookworm minbase + runit-init (/sbin/init -> runit-init), ifupdown, isc-dhcp-client,
    with Debian's getty-run purged although runit-init depends on it (so dpkg reports that
    dependency broken): no getty service of its own. No kernel; 2 gzip layers."""
    return fixture("debian-runit", cache)


def debian_trixie_fixture(cache: Path | None = None) -> FixtureSet:
    """trixie minbase + systemd-sysv (merged /usr, systemd-networkd in systemd; no udev, no
    resolved), no kernel. 2 gzip layers, the first trixie's own debootstrap stage."""
    return fixture("debian-trixie", cache)


def debian_cloudinit_fixture(cache: Path | None = None) -> FixtureSet:
    """bookworm minbase + systemd-sysv + cloud-init (python3; no ifupdown, so cloud-init
    renders its network for networkd), no kernel. 2 gzip layers."""
    return fixture("debian-cloudinit", cache)


def busybox_init_fixture(cache: Path | None = None) -> FixtureSet:
    """A busybox system: /sbin/init -> /bin/busybox (Debian's static busybox), the applets of
    BUSYBOX_INIT_APPLETS, root (locked) in passwd/shadow/group, /etc/init.d/rcS mounting
    proc, sys, devtmpfs and run; no /etc/inittab, no kernel, no os-release. 1 gzip layer, < 1 s."""
    return fixture("busybox-init", cache)


def expected_tree(fixture_set: FixtureSet) -> dict[str, dict[str, Any]]:
    """rootfs.tar as data: path -> {kind, mode, uid, gid, mtime_ns, and per kind size/sha256
    (file), linkname (symlink, hardlink: the first name of the group), rdev [major, minor],
    xattrs {name: hex}}. Paths are relative, without "./"; non-UTF-8 bytes are surrogates."""
    records = json.loads(fixture_set.expected_tree_json.read_text())
    return {record["path"]: record for record in records}


def read_member(fixture_set: FixtureSet, path: str) -> bytes:
    """The bytes of file `path` (relative, no "./") in the fixture's rootfs.tar."""
    with tarfile.open(fixture_set.rootfs_tar) as archive:
        member = archive.extractfile(path)
        assert member is not None, path
        return member.read()


def resolve(tree: dict[str, dict[str, Any]], path: str) -> str | None:
    """`path` with every symlink on the way followed inside the image (merged /usr: /sbin and
    /lib are links), or None when it leads nowhere."""
    done: list[str] = []
    todo = path.split("/")
    for _hops in range(40):
        if not todo:
            return "/".join(done)
        part = todo.pop(0)
        record = tree.get("/".join([*done, part]))
        if record is None:
            return None
        if record["kind"] != "symlink":
            done.append(part)
            continue
        target = record["linkname"]
        base = [] if target.startswith("/") else done
        todo = [*base, *target.strip("/").split("/"), *todo]
        done = []
        todo = [p for p in todo if p not in ("", ".")]
        while ".." in todo:
            at = todo.index("..")
            todo = todo[: max(at - 1, 0)] + todo[at + 1 :]
    raise AssertionError(f"symlink loop at {path}")


def kernel_paths(tree: dict[str, Any]) -> list[str]:
    """What a kernel package leaves: /boot contents, /lib/modules, the /vmlinuz links."""
    prefixes = ("boot/", "lib/modules/", "usr/lib/modules/", "vmlinuz", "initrd.img")
    return [p for p in tree if p.startswith(prefixes) or p in ("lib/modules", "usr/lib/modules")]


def installed_packages(fixture_set: FixtureSet) -> set[str]:
    """The Debian packages dpkg's status file says are installed ("install ok installed")."""
    status = read_member(fixture_set, "var/lib/dpkg/status").decode()
    installed = set()
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status") == "install ok installed":
            installed.add(fields["Package"])
    return installed
