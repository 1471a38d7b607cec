"""OpenRC installed but never set up (`apk add openrc`): its boot runlevels are filled as
setup-alpine fills them, with the scripts the image has; a set-up OpenRC is left alone."""

from __future__ import annotations

from pathlib import Path

from oci2vm.prepare import openrcboot
from oci2vm.tree.model import lookup
from support.initlayouts import ALPINE_INITTAB, busybox
from support.layouts import Member, directory, file
from support.prepared import flattened, run_step

SCRIPTS = ("devfs", "dmesg", "hostname", "bootmisc", "mount-ro", "killprocs", "networking")


def alpine_openrc(*, set_up: bool = False) -> list[Member]:
    members = [*busybox(ALPINE_INITTAB), file("sbin/openrc", b"\x7fELF", mode=0o755),
               directory("etc/runlevels"), directory("etc/runlevels/sysinit"),
               directory("etc/runlevels/boot"), directory("etc/runlevels/default")]  # fmt: skip
    members += [file(f"etc/init.d/{s}", b"#!/sbin/openrc-run\n", mode=0o755) for s in SCRIPTS]
    if set_up:
        members.append(file("etc/runlevels/boot/hostname", b""))
    return members


def test_empty_boot_runlevels_get_setup_alpines_services_that_exist(tmp_path: Path) -> None:
    tree = flattened(tmp_path, alpine_openrc())
    notes = run_step(tree, openrcboot.STEP)
    for link in ("sysinit/devfs", "sysinit/dmesg", "boot/hostname", "boot/bootmisc",
                 "shutdown/killprocs", "shutdown/mount-ro"):  # fmt: skip
        assert lookup(tree.root, f"/etc/runlevels/{link}") is not None, link
    assert lookup(tree.root, "/etc/runlevels/boot/sysctl") is None  # the image has none
    assert lookup(tree.root, "/etc/runlevels/default/networking") is None  # not a boot service
    assert len(notes) == 1 and "devfs (sysinit)" in notes[0]


def test_an_openrc_that_was_set_up_or_is_not_openrcs_own_is_left_alone(tmp_path: Path) -> None:
    tree = flattened(tmp_path / "set-up", alpine_openrc(set_up=True))
    assert run_step(tree, openrcboot.STEP) == []
    assert lookup(tree.root, "/etc/runlevels/sysinit/devfs") is None
    debian = [m for m in alpine_openrc() if m.info.name != "etc/init.d/devfs"]
    tree = flattened(tmp_path / "debian", debian)
    assert run_step(tree, openrcboot.STEP) == []
