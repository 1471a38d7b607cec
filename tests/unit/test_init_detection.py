"""Which init really runs as /sbin/init, and whether OpenRC starts the services under it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from oci2vm.config import InitMode
from oci2vm.prepare.kernel import boot_spec
from oci2vm.tree.osinfo import InitSystem, describe
from support.initlayouts import busybox, debian_runit, debian_sysvinit, openrc_init
from support.layouts import Member, directory, file, symlink
from support.prepared import flattened, options, systemd_members, target


def detected(tmp_path: Path, members: list[Member]) -> tuple[InitSystem, str | None, bool, str]:
    info = describe(flattened(tmp_path, members))
    return info.init, info.init_path, info.openrc, info.init_name


def test_debian_sysvinit_core_is_sysvinit(tmp_path: Path) -> None:
    assert detected(tmp_path, debian_sysvinit()) == (
        InitSystem.SYSVINIT, "/sbin/init", False, "sysvinit",
    )  # fmt: skip


def test_debian_openrc_runs_under_sysvinits_init(tmp_path: Path) -> None:
    """Debian's openrc ships /sbin/openrc-init too, but /sbin/init stays sysvinit's."""
    assert detected(tmp_path, debian_sysvinit(openrc=True)) == (
        InitSystem.SYSVINIT, "/sbin/init", True, "sysvinit+openrc",
    )  # fmt: skip


def test_debian_runit_init_is_runit(tmp_path: Path) -> None:
    assert detected(tmp_path, debian_runit()) == (
        InitSystem.RUNIT, "/lib/runit/runit-init", False, "runit",
    )  # fmt: skip


def test_void_runit_init_is_runit(tmp_path: Path) -> None:
    members = [directory("usr"), directory("usr/bin"), directory("sbin"),
               file("usr/bin/runit-init", b"\x7fELF", mode=0o755),
               symlink("sbin/init", "../usr/bin/runit-init")]  # fmt: skip
    assert detected(tmp_path, members)[:2] == (InitSystem.RUNIT, "/usr/bin/runit-init")


def test_openrc_init_as_pid_1_is_openrc(tmp_path: Path) -> None:
    assert detected(tmp_path, openrc_init()) == (
        InitSystem.OPENRC, "/sbin/openrc-init", True, "openrc",
    )  # fmt: skip


def test_alpine_openrc_runs_under_busybox_init(tmp_path: Path) -> None:
    members = [*busybox(), file("sbin/openrc", b"\x7fELF", mode=0o755)]
    assert detected(tmp_path, members) == (
        InitSystem.BUSYBOX, "/bin/busybox", True, "busybox+openrc",
    )  # fmt: skip


def test_a_hardlink_of_busybox_is_busybox(tmp_path: Path) -> None:
    assert detected(tmp_path, busybox(linked=False))[:3] == (
        InitSystem.BUSYBOX, "/sbin/init", False,
    )  # fmt: skip


def test_systemd_and_no_init(tmp_path: Path) -> None:
    assert detected(tmp_path / "a", systemd_members())[:3] == (
        InitSystem.SYSTEMD, "/lib/systemd/systemd", False,
    )  # fmt: skip
    assert detected(tmp_path / "b", [directory("etc")]) == (InitSystem.NONE, None, False, "none")


def test_initramfs_hands_over_to_init_by_the_name_the_kernel_would_use(tmp_path: Path) -> None:
    """Busybox picks its applet by argv[0]: exec'd as /bin/busybox (the link's target) it
    prints its usage and exits, and the kernel panics; as /sbin/init it is init."""
    tree = flattened(tmp_path, busybox())
    info = describe(tree)
    assert (info.init, info.init_path, info.init_entry) == (
        InitSystem.BUSYBOX, "/bin/busybox", "/sbin/init",
    )  # fmt: skip
    goal = dataclasses.replace(target(tree, options()), mode=InitMode.SYSTEM)
    assert boot_spec(goal).init == "/sbin/init"
