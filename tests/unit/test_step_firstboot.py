"""The first-boot step: fragments other steps register, run once early at boot by the
image's own init (inittab sysinit entry, OpenRC boot service, runit stage 1)."""

from __future__ import annotations

from pathlib import Path

from oci2vm.prepare import firstboot, hostkeys, identity
from oci2vm.tree.model import Kind, Tree, lookup
from support.initlayouts import (
    ALPINE_INITTAB,
    DEBIAN_INITTAB,
    busybox,
    debian_runit,
    debian_sysvinit,
    openrc_init,
)
from support.layouts import Member, directory, file
from support.prepared import (
    content,
    entry,
    flattened,
    options,
    prepare,
    run_step,
    systemd_members,
    target,
)

SSHD = [directory("etc/ssh"), file("usr/sbin/sshd", b"\x7fELF", mode=0o755)]


def fragments(tree: Tree) -> dict[str, bytes]:
    node = lookup(tree.root, firstboot.FRAGMENTS)
    names = sorted((node.children or {}) if node is not None else {})
    return {name: content(tree, f"{firstboot.FRAGMENTS}/{name}") for name in names}


def assert_runner(tree: Tree) -> None:
    runner = entry(tree, "/etc/oci2vm/firstboot")
    assert (runner.mode & 0o7777, runner.uid, runner.gid) == (0o755, 0, 0)
    assert content(tree, "/etc/oci2vm/firstboot") == firstboot.RUNNER_SCRIPT


def test_sysvinit_runs_it_after_rcs_before_the_runlevel(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_sysvinit())
    prepare(tree, options())
    lines = content(tree, "/etc/inittab").decode().splitlines()
    assert lines[:3] == [
        "id:2:initdefault:",
        "si::sysinit:/etc/init.d/rcS",
        "fb::sysinit:/etc/oci2vm/firstboot",
    ]
    assert lines[3] == "l2:2:wait:/etc/init.d/rc 2"
    assert_runner(tree)
    assert fragments(tree) == {"10-machine-id.sh": identity.MAKE_MACHINE_ID.encode()}


def test_debian_openrc_under_sysvinit_uses_the_inittab_too(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_sysvinit(openrc=True))
    prepare(tree, options())
    assert b"\nfb::sysinit:/etc/oci2vm/firstboot\n" in content(tree, "/etc/inittab")
    assert lookup(tree.root, "/etc/runlevels/boot/oci2vm-firstboot") is None


def test_alpine_runs_it_after_openrc_boot_before_the_default_runlevel(tmp_path: Path) -> None:
    members = [*busybox(ALPINE_INITTAB), file("sbin/openrc", b"\x7fELF", mode=0o755)]
    tree = flattened(tmp_path, members)
    prepare(tree, options())
    lines = content(tree, "/etc/inittab").decode().splitlines()
    assert lines[:4] == [
        "::sysinit:/sbin/openrc sysinit",
        "::sysinit:/sbin/openrc boot",
        "::sysinit:/etc/oci2vm/firstboot",
        "::wait:/sbin/openrc default",
    ]
    assert lines[-1] == "ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100"


def test_busybox_without_inittab_keeps_its_defaults_around_the_entry(tmp_path: Path) -> None:
    tree = flattened(tmp_path, busybox())
    prepare(tree, options())
    assert content(tree, "/etc/inittab") == (
        b"::sysinit:/bin/busybox sh /etc/oci2vm/boot.sh /bin/busybox\n"  # the image has no rcS
        b"::sysinit:/etc/oci2vm/firstboot\n"
        b"# oci2vm: /etc/init.d/rcS is not in the image\n"
        b"# ::sysinit:/etc/init.d/rcS\n"
        b"::ctrlaltdel:reboot\n"
        b"::shutdown:umount -a -r\n"
        b"::shutdown:swapoff -a\n"
        b"::restart:init\n"
        b"ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n"
    )


def test_openrc_init_gets_a_boot_runlevel_service(tmp_path: Path) -> None:
    tree = flattened(tmp_path, openrc_init())
    prepare(tree, options())
    script = entry(tree, "/etc/init.d/oci2vm-firstboot")
    assert (script.mode & 0o7777, script.uid) == (0o755, 0)
    text = content(tree, "/etc/init.d/oci2vm-firstboot").decode()
    assert text.startswith("#!/sbin/openrc-run\n")
    assert "\tneed localmount\n\tbefore net sshd dbus\n" in text
    assert "\n\t/etc/oci2vm/firstboot\n" in text
    link = entry(tree, "/etc/runlevels/boot/oci2vm-firstboot")
    assert (link.kind, link.target) == (Kind.SYMLINK, b"/etc/init.d/oci2vm-firstboot")
    assert lookup(tree.root, "/etc/inittab") is None


def test_debian_runit_runs_it_last_in_stage_1_and_makes_host_keys(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*debian_runit(), *SSHD])
    notes = prepare(tree, options())
    assert not [n for n in notes if "ssh-keygen" in n]
    link = entry(tree, "/etc/rcS.d/S99oci2vm-firstboot")
    assert (link.kind, link.target) == (Kind.SYMLINK, b"../init.d/oci2vm-firstboot")
    script = content(tree, "/etc/init.d/oci2vm-firstboot").decode()
    assert "# Default-Start:     S\n" in script
    assert 'case "$1" in\nstart) exec /etc/oci2vm/firstboot ;;\nesac\n' in script
    assert_runner(tree)
    assert fragments(tree) == {
        "10-machine-id.sh": identity.MAKE_MACHINE_ID.encode(),
        "20-ssh-host-keys.sh": hostkeys.MAKE_KEYS.encode(),
    }


def test_void_runit_sources_it_from_core_services(tmp_path: Path) -> None:
    members: list[Member] = [*debian_runit(), directory("etc/runit/core-services")]
    tree = flattened(tmp_path, members)
    prepare(tree, options())
    hook = "/etc/runit/core-services/99-oci2vm-firstboot.sh"
    assert content(tree, hook) == b"# Written by oci2vm.\n/etc/oci2vm/firstboot\n"
    assert lookup(tree.root, "/etc/rcS.d") is None


def test_systemd_keeps_its_own_first_boot(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*systemd_members(), *SSHD])
    prepare(tree, options())
    assert lookup(tree.root, "/etc/oci2vm") is None
    assert not firstboot.STEP.applies(target(tree, options()))


def test_nothing_registered_writes_nothing(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_sysvinit())
    assert run_step(tree, firstboot.STEP) == []
    assert lookup(tree.root, "/etc/oci2vm") is None
    assert content(tree, "/etc/inittab") == DEBIAN_INITTAB


def test_debians_native_boot_run_directory_gets_the_hook_too(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*debian_runit(), directory("etc/runit/boot-run")])
    prepare(tree, options())
    hook = "/etc/runit/boot-run/99-oci2vm-firstboot.sh"
    assert content(tree, hook) == b"# Written by oci2vm.\n/etc/oci2vm/firstboot\n"
    assert lookup(tree.root, "/etc/rcS.d/S99oci2vm-firstboot") is not None
