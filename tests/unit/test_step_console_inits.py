"""The console step under the inits that read no systemd units: sysvinit's inittab
(Debian's openrc included), runit's service directories, openrc-init's agetty service."""

from __future__ import annotations

from pathlib import Path

from oci2vm.arch import Arch
from oci2vm.prepare import console, inittab
from oci2vm.tree.model import Kind, lookup
from support.initlayouts import DEBIAN_INITTAB, debian_runit, debian_sysvinit, openrc_init
from support.layouts import directory, file
from support.prepared import content, entry, flattened, options, run_step, target, with_data

SERIAL_LINE = b"S0:2345:respawn:/sbin/agetty -L ttyS0 115200 vt100\n"


def test_debian_openrc_gets_sysvinit_syntax_not_busybox_syntax(tmp_path: Path) -> None:
    """sysvinit's init rejects `ttyS0::respawn:` (an id with no runlevels): no login."""
    tree = flattened(tmp_path, debian_sysvinit(openrc=True))
    assert run_step(tree, console.STEP) == []
    assert content(tree, "/etc/inittab") == DEBIAN_INITTAB + SERIAL_LINE
    assert lookup(tree.root, "/etc/init.d/agetty.ttyS0") is None


def test_sysvinit_without_inittab_starts_from_the_packages_template(tmp_path: Path) -> None:
    template = DEBIAN_INITTAB + b"# the package's own\n"
    members = [*debian_sysvinit(None), directory("usr/share"), directory("usr/share/sysvinit"),
               file("usr/share/sysvinit/inittab", template)]  # fmt: skip
    tree, edit = with_data(tmp_path, members)
    console.STEP.apply(edit, target(tree, options()))
    assert content(tree, "/etc/inittab") == template + SERIAL_LINE
    made = entry(tree, "/etc/inittab")
    assert (made.mode & 0o7777, made.uid, made.gid) == (0o644, 0, 0)


def test_sysvinit_without_inittab_or_template_gets_debians_boot_lines(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_sysvinit(None))
    run_step(tree, console.STEP)
    text = content(tree, "/etc/inittab")
    assert text == inittab.SYSVINIT_DEFAULT.encode() + SERIAL_LINE
    assert text.startswith(b"id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\n")
    assert b"l2:2:wait:/etc/init.d/rc 2\n" in text


def test_an_id_taken_by_another_line_gets_a_numbered_one(tmp_path: Path) -> None:
    taken = DEBIAN_INITTAB + b"S0:2345:respawn:/sbin/other tty9\n"
    tree = flattened(tmp_path, debian_sysvinit(taken))
    run_step(tree, console.STEP)
    assert (
        content(tree, "/etc/inittab")
        == taken + b"S00:2345:respawn:/sbin/agetty -L ttyS0 115200 vt100\n"
    )


def test_arm64s_serial_port_names_the_id_within_four_characters(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_sysvinit())
    run_step(tree, console.STEP, arch=Arch.ARM64)
    line = content(tree, "/etc/inittab").splitlines()[-1]
    assert line == b"AMA0:2345:respawn:/sbin/agetty -L ttyAMA0 115200 vt100"


def test_runit_gets_a_getty_service_enabled_in_the_default_runsvdir(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_runit())
    assert run_step(tree, console.STEP) == []
    run = entry(tree, "/etc/sv/oci2vm-getty-ttyS0/run")
    assert (run.mode & 0o7777, run.uid, run.gid) == (0o755, 0, 0)
    assert content(tree, "/etc/sv/oci2vm-getty-ttyS0/run") == (
        b"#!/bin/sh\n# Written by oci2vm: a login on the serial console.\n"
        b"exec /usr/bin/chpst -P /sbin/agetty -L ttyS0 115200 vt100\n"  # a session: job control
    )
    link = entry(tree, "/etc/runit/runsvdir/default/oci2vm-getty-ttyS0")
    assert (link.kind, link.target) == (Kind.SYMLINK, b"/etc/sv/oci2vm-getty-ttyS0")
    assert lookup(tree.root, "/etc/inittab") is None


def test_runit_with_getty_runs_service_has_it_enabled(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_runit(getty_run=True))
    run_step(tree, console.STEP)
    enabled = entry(tree, "/etc/runit/runsvdir/default").children or {}
    assert {name: link.target for name, link in enabled.items()} == {
        "getty-tty1": b"../../../sv/getty-tty1",
        "getty-ttyS0": b"/etc/sv/getty-ttyS0",
    }
    assert lookup(tree.root, "/etc/sv/oci2vm-getty-ttyS0") is None


def test_runit_with_a_serial_getty_enabled_is_left_alone(tmp_path: Path) -> None:
    tree = flattened(tmp_path, debian_runit(getty_run=True))
    run_step(tree, console.STEP)
    before = entry(tree, "/etc/runit/runsvdir/default/getty-ttyS0")
    run_step(tree, console.STEP)
    assert entry(tree, "/etc/runit/runsvdir/default/getty-ttyS0") == before
    assert lookup(tree.root, "/etc/sv/oci2vm-getty-ttyS0") is None


def test_openrc_init_gets_the_agetty_service_for_the_port(tmp_path: Path) -> None:
    tree = flattened(tmp_path, openrc_init())
    assert run_step(tree, console.STEP) == []
    service = entry(tree, "/etc/init.d/agetty.ttyS0")
    assert (service.kind, service.target) == (Kind.SYMLINK, b"agetty")
    level = entry(tree, "/etc/runlevels/default/agetty.ttyS0")
    assert (level.kind, level.target) == (Kind.SYMLINK, b"/etc/init.d/agetty.ttyS0")
    assert content(tree, "/etc/conf.d/agetty.ttyS0") == (
        b'# Written by oci2vm.\nbaud="115200"\nterm_type="vt100"\nagetty_options="-L"\n'
    )
    assert lookup(tree.root, "/etc/inittab") is None


def test_openrc_init_without_agetty_is_told(tmp_path: Path) -> None:
    tree = flattened(tmp_path, openrc_init(agetty=False))
    assert run_step(tree, console.STEP) == [
        "openrc-init without OpenRC's agetty service (/etc/init.d/agetty): "
        "no login on ttyS0 was set up"
    ]
    assert lookup(tree.root, "/etc/runlevels/default/agetty.ttyS0") is None


def test_an_inittab_with_bytes_that_are_no_utf8_keeps_them(tmp_path: Path) -> None:
    own = DEBIAN_INITTAB + b"# Jos\xe9's \x0c console\n"
    tree = flattened(tmp_path, debian_sysvinit(own))
    run_step(tree, console.STEP)
    assert content(tree, "/etc/inittab") == own + SERIAL_LINE


def test_an_inittab_whose_ids_are_all_taken_is_a_one_line_error() -> None:
    import pytest

    from oci2vm.errors import Oci2vmError

    ids = ["S0", *(f"{'S0'[: 4 - len(str(n))]}{n}" for n in range(100))]  # S00 .. S099
    text = "".join(f"{i}:2:respawn:/bin/x\n" for i in ids)
    with pytest.raises(Oci2vmError, match=r"^/etc/inittab: no free id for an entry like 'S0'$"):
        inittab.free_id(text, "S0")
