"""The boot matrix's fixture images (issue 12): debian-sysvinit, debian-openrc, debian-runit,
debian-trixie, debian-cloudinit and busybox-init. What the matrix's cells rely on each to
hold: the init that /sbin/init really runs, the network stack's files, openssh's baked host
keys, no getty of runit's own, trixie's release, cloud-init, busybox's boot script and no
inittab; none has a kernel."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fixture_images import (
    BUSYBOX_INIT_APPLETS,
    FixtureSet,
    busybox_init_fixture,
    debian_cloudinit_fixture,
    debian_minbase_fixture,
    debian_openrc_fixture,
    debian_runit_fixture,
    debian_sysvinit_fixture,
    debian_trixie_fixture,
    expected_tree,
    fixture_is_cached,
    installed_packages,
    kernel_paths,
    read_member,
    resolve,
)

pytestmark = pytest.mark.fixture

MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# What Debian's ifupdown writes into /etc/network/interfaces when it has none (its postinst).
IFUPDOWN_INTERFACES = (
    b"# interfaces(5) file used by ifup(8) and ifdown(8)\n"
    b"# Include files from /etc/network/interfaces.d:\n"
    b"source /etc/network/interfaces.d/*\n"
)


def _debian(name: str, load: Any) -> FixtureSet:
    if not fixture_is_cached(name) and os.geteuid() != 0:
        pytest.skip(f"building the {name} fixture needs root (debootstrap, chroot)")
    image: FixtureSet = load()
    return image


@pytest.fixture(scope="module")
def sysvinit() -> FixtureSet:
    return _debian("debian-sysvinit", debian_sysvinit_fixture)


@pytest.fixture(scope="module")
def openrc() -> FixtureSet:
    return _debian("debian-openrc", debian_openrc_fixture)


@pytest.fixture(scope="module")
def runit() -> FixtureSet:
    return _debian("debian-runit", debian_runit_fixture)


@pytest.fixture(scope="module")
def trixie() -> FixtureSet:
    return _debian("debian-trixie", debian_trixie_fixture)


@pytest.fixture(scope="module")
def cloudinit() -> FixtureSet:
    return _debian("debian-cloudinit", debian_cloudinit_fixture)


@pytest.fixture(scope="module")
def busybox_init() -> FixtureSet:
    return busybox_init_fixture()


def assert_kernelless_debian(image: FixtureSet, tree: dict[str, Any]) -> None:
    """Two gzip layers on a merged-/usr minbase, Cmd bash, no kernel, apt lists removed."""
    assert image.layer_media_types == (MT_GZIP,) * 2
    assert (image.cmd, image.entrypoint) == (("/bin/bash",), None)
    assert tree["sbin"]["linkname"] == "usr/sbin" and tree["lib"]["linkname"] == "usr/lib"
    assert kernel_paths(tree) == []
    assert not [path for path in tree if path.startswith("var/lib/apt/lists/")]


def assert_ifupdown_with_dhclient(image: FixtureSet, tree: dict[str, Any]) -> None:
    assert {"ifupdown", "isc-dhcp-client"} <= installed_packages(image)
    assert read_member(image, "etc/network/interfaces") == IFUPDOWN_INTERFACES
    assert tree["etc/network/interfaces.d"]["kind"] == "dir"
    assert resolve(tree, "sbin/ifup") == "usr/sbin/ifup"
    assert resolve(tree, "sbin/dhclient") == "usr/sbin/dhclient"


def active_inittab_lines(image: FixtureSet) -> list[str]:
    text = read_member(image, "etc/inittab").decode()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_debian_sysvinit_runs_sysvinit_with_ifupdown(sysvinit: FixtureSet) -> None:
    tree = expected_tree(sysvinit)
    assert_kernelless_debian(sysvinit, tree)
    assert_ifupdown_with_dhclient(sysvinit, tree)
    assert resolve(tree, "sbin/init") == "usr/sbin/init"
    assert tree["usr/sbin/init"]["kind"] == "file"
    packages = installed_packages(sysvinit)
    assert {"sysvinit-core", "sysv-rc", "openssh-server"} <= packages
    assert not packages & {"systemd", "systemd-sysv", "openrc", "runit-init", "udev"}
    assert "si::sysinit:/etc/init.d/rcS" in active_inittab_lines(sysvinit)
    assert not [line for line in active_inittab_lines(sysvinit) if "ttyS0" in line]


def test_debian_sysvinit_ships_baked_ssh_host_keys(sysvinit: FixtureSet) -> None:
    tree = expected_tree(sysvinit)
    for kind in ("rsa", "ecdsa", "ed25519"):
        key = tree[f"etc/ssh/ssh_host_{kind}_key"]
        public = tree[f"etc/ssh/ssh_host_{kind}_key.pub"]
        assert (key["kind"], key["mode"], key["uid"], key["size"] > 0) == ("file", 0o600, 0, True)
        assert (public["kind"], public["mode"]) == ("file", 0o644)
        assert read_member(sysvinit, f"etc/ssh/ssh_host_{kind}_key.pub").startswith(
            b"ssh-rsa " if kind == "rsa" else b"ssh-ed25519 " if kind == "ed25519" else b"ecdsa-"
        )
    assert resolve(tree, "usr/sbin/sshd") == "usr/sbin/sshd"
    assert tree["etc/init.d/ssh"]["kind"] == "file"


def test_debian_openrc_runs_openrc_under_sysvinit_init(openrc: FixtureSet) -> None:
    tree = expected_tree(openrc)
    assert_kernelless_debian(openrc, tree)
    assert_ifupdown_with_dhclient(openrc, tree)
    assert resolve(tree, "sbin/init") == "usr/sbin/init"  # sysvinit's, not openrc-init
    assert tree["usr/sbin/init"]["kind"] == "file"
    assert resolve(tree, "sbin/openrc") == "usr/sbin/openrc"
    packages = installed_packages(openrc)
    assert {"sysvinit-core", "openrc"} <= packages
    assert not packages & {"sysv-rc", "systemd", "systemd-sysv", "runit-init", "openssh-server"}
    assert "si::sysinit:/etc/init.d/rcS" in active_inittab_lines(openrc)


def test_debian_runit_runs_runit_without_getty_run(runit: FixtureSet) -> None:
    tree = expected_tree(runit)
    assert_kernelless_debian(runit, tree)
    assert_ifupdown_with_dhclient(runit, tree)
    assert tree["usr/sbin/init"]["linkname"] == "/lib/runit/runit-init"
    assert resolve(tree, "sbin/init") == "usr/lib/runit/runit-init"
    packages = installed_packages(runit)
    assert {"runit", "runit-init"} <= packages
    assert not packages & {"getty-run", "sysvinit-core", "systemd-sysv", "openrc"}
    assert not [path for path in tree if "getty" in path.split("/")[-1] and "/sv/" in f"/{path}"]
    enabled = [p.rpartition("/")[2] for p in tree if p.startswith("etc/runit/runsvdir/default/")]
    assert enabled == ["default-syslog"]
    assert "etc/inittab" not in tree
    assert tree["etc/runit/1"]["kind"] == "file" and tree["etc/runit/2"]["kind"] == "file"


def test_debian_trixie_is_trixie_with_systemd_and_networkd(trixie: FixtureSet) -> None:
    tree = expected_tree(trixie)
    assert_kernelless_debian(trixie, tree)
    release = read_member(trixie, "usr/lib/os-release").decode().splitlines()
    assert "VERSION_CODENAME=trixie" in release and 'VERSION_ID="13"' in release
    assert tree["etc/os-release"]["linkname"] == "../usr/lib/os-release"
    assert tree["bin"]["linkname"] == "usr/bin"
    assert resolve(tree, "sbin/init") == "usr/lib/systemd/systemd"
    assert tree["usr/lib/systemd/systemd-networkd"]["kind"] == "file"
    assert tree["usr/lib/systemd/system/systemd-networkd.service"]["kind"] == "file"
    assert {"systemd", "systemd-sysv"} <= installed_packages(trixie)
    assert "etc/network/interfaces" not in tree


def test_debian_trixie_has_its_own_first_layer(trixie: FixtureSet) -> None:
    if not fixture_is_cached("debian-minbase") and os.geteuid() != 0:
        pytest.skip("building the debian-minbase fixture needs root (debootstrap)")
    bookworm = debian_minbase_fixture()
    assert trixie.diff_ids[0] != bookworm.diff_ids[0]
    assert b"VERSION_CODENAME=bookworm" in read_member(bookworm, "usr/lib/os-release")


def test_busybox_init_is_busybox_with_an_rcs_and_no_inittab(busybox_init: FixtureSet) -> None:
    tree = expected_tree(busybox_init)
    assert (tree["sbin/init"]["kind"], tree["sbin/init"]["linkname"]) == ("symlink", "/bin/busybox")
    assert tree["bin/busybox"]["kind"] == "file" and tree["bin/busybox"]["mode"] == 0o755
    assert "etc/inittab" not in tree
    assert kernel_paths(tree) == [] and "etc/os-release" not in tree
    rcs = tree["etc/init.d/rcS"]
    assert (rcs["kind"], rcs["mode"]) == ("file", 0o755)
    script = read_member(busybox_init, "etc/init.d/rcS").decode()
    assert script.startswith("#!/bin/sh\n")
    for mount in ("-t proc proc /proc", "-t sysfs sysfs /sys", "-t devtmpfs devtmpfs /dev",
                  "-t devpts devpts /dev/pts", "-t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
                  "-o remount,rw /"):  # fmt: skip
        assert f"mount {mount}" in script, mount
    tops = {path.split("/")[0] for path in tree}
    assert tops == {"bin", "dev", "etc", "home", "proc", "root", "run", "sbin", "sys", "tmp",
                    "usr", "var"}  # fmt: skip
    assert busybox_init.cmd == ("/bin/sh",) and busybox_init.layer_media_types == (MT_GZIP,)


def test_busybox_init_rcs_parses_in_its_own_shell(busybox_init: FixtureSet, tmp_path: Path) -> None:
    """The image's busybox sh reads rcS without a syntax error (-n: read, run nothing)."""
    shell = tmp_path / "busybox"
    shell.write_bytes(read_member(busybox_init, "bin/busybox"))
    shell.chmod(0o755)
    (tmp_path / "rcS").write_bytes(read_member(busybox_init, "etc/init.d/rcS"))
    broken = tmp_path / "broken"
    broken.write_bytes(read_member(busybox_init, "etc/init.d/rcS") + b"if true; then\n")
    check = [str(shell), "sh", "-n"]
    assert subprocess.run([*check, str(tmp_path / "rcS")], check=False).returncode == 0
    assert subprocess.run([*check, str(broken)], capture_output=True, check=False).returncode != 0


def test_busybox_init_has_the_applets_a_login_needs(busybox_init: FixtureSet) -> None:
    tree = expected_tree(busybox_init)
    needed = {"sbin/getty", "bin/login", "bin/sh", "sbin/udhcpc", "sbin/ip", "usr/bin/wget",
              "bin/mount", "bin/umount", "sbin/poweroff", "sbin/reboot", "bin/hostname",
              "bin/cat", "bin/grep", "bin/mkdir"}  # fmt: skip
    assert needed <= set(BUSYBOX_INIT_APPLETS)
    applets = {p for p, r in tree.items() if r["kind"] == "symlink"}
    assert applets == set(BUSYBOX_INIT_APPLETS)
    for applet in BUSYBOX_INIT_APPLETS:
        assert tree[applet]["linkname"] == "/bin/busybox", applet


def test_busybox_init_accounts_hold_a_locked_root(busybox_init: FixtureSet) -> None:
    tree = expected_tree(busybox_init)
    passwd = read_member(busybox_init, "etc/passwd").decode().splitlines()
    assert passwd[0] == "root:x:0:0:root:/root:/bin/sh"
    shadow = read_member(busybox_init, "etc/shadow").decode().splitlines()
    assert shadow[0].split(":")[:2] == ["root", "*"]  # tests set a password with --add-user
    assert [line.split(":")[0] for line in shadow] == [line.split(":")[0] for line in passwd]
    assert (tree["etc/shadow"]["mode"], tree["root"]["mode"]) == (0o600, 0o700)
    assert read_member(busybox_init, "etc/group").decode().startswith("root:x:0:\n")
    assert tree["tmp"]["mode"] == 0o1777


def test_busybox_init_rebuilds_to_the_same_digests(
    busybox_init: FixtureSet, tmp_path: Path
) -> None:
    (tmp_path / "downloads").mkdir()
    for deb in (busybox_init.root.parent / "downloads").glob("busybox-static_*.deb"):
        (tmp_path / "downloads" / deb.name).write_bytes(deb.read_bytes())  # no network
    rebuilt = busybox_init_fixture(tmp_path)
    facts = ("config_digest", "diff_ids", "layer_digests", "manifest_digest", "entries",
             "docker_oci_manifest_digest")  # fmt: skip
    assert [getattr(rebuilt, f) for f in facts] == [getattr(busybox_init, f) for f in facts]


def test_debian_cloudinit_has_cloud_init_on_systemd_without_ifupdown(cloudinit: FixtureSet) -> None:
    """cloud-init renders its network for networkd here, and no datasource list is set (it
    would try every cloud's) until the build pins NoCloud."""
    tree = expected_tree(cloudinit)
    assert_kernelless_debian(cloudinit, tree)
    packages = installed_packages(cloudinit)
    assert {"cloud-init", "systemd-sysv"} <= packages
    assert not packages & {"ifupdown", "systemd-resolved", "netplan.io", "network-manager"}
    assert resolve(tree, "usr/bin/cloud-init") == "usr/bin/cloud-init"
    assert tree["etc/cloud/cloud.cfg"]["kind"] == "file"
    dropins = [path for path in tree if path.startswith("etc/cloud/cloud.cfg.d/")]
    assert sorted(dropins) == [
        "etc/cloud/cloud.cfg.d/05_logging.cfg",
        "etc/cloud/cloud.cfg.d/README",
    ]
    assert "var/lib/cloud/seed/nocloud" not in tree
