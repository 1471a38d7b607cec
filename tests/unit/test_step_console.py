"""The console step: a serial login the way each init system starts one."""

from __future__ import annotations

from pathlib import Path

from oci2vm.prepare import console
from oci2vm.tree.model import lookup
from oci2vm.tree.osinfo import describe
from support.layouts import Member, directory, file, symlink
from support.prepared import (
    content,
    entry,
    flattened,
    options,
    prepare,
    run_step,
    systemd_members,
    target,
    with_data,
)


def test_systemd_with_merged_usr_gets_serial_getty(tmp_path: Path) -> None:
    """Debian 12 and Fedora: /lib is a link to usr/lib."""
    tree = flattened(tmp_path, systemd_members(merged_usr=True))
    assert describe(tree).init == "systemd"
    prepare(tree, options())
    link = entry(tree, "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service")
    assert link.target == b"/lib/systemd/system/serial-getty@.service"


def test_systemd_unit_only_in_usr_lib_is_linked_there(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("usr"),
            directory("usr/lib"),
            directory("usr/lib/systemd"),
            file("usr/lib/systemd/systemd", b"elf", mode=0o755),
            directory("usr/lib/systemd/system"),
            file("usr/lib/systemd/system/serial-getty@.service", b"[Unit]\n"),
            directory("etc"),
            directory("etc/systemd"),
            directory("etc/systemd/system"),
            directory("etc/systemd/system/getty.target.wants"),
            symlink(
                "etc/systemd/system/getty.target.wants/getty@tty1.service",
                "/usr/lib/systemd/system/getty@.service",
            ),
        ],
    )
    prepare(tree, options())
    wants = entry(tree, "/etc/systemd/system/getty.target.wants").children or {}
    assert {name: child.target for name, child in wants.items()} == {
        "getty@tty1.service": b"/usr/lib/systemd/system/getty@.service",
        "serial-getty@ttyS0.service": b"/usr/lib/systemd/system/serial-getty@.service",
    }


SYSV_INITTAB = (
    b"id:2:initdefault:\n"
    b"1:2345:respawn:/sbin/getty 38400 tty1\n"
    b"#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100"  # commented out, no final newline
)


def sysvinit_members(inittab: bytes) -> list[Member]:
    return [
        directory("sbin"),
        file("sbin/init", b"elf", mode=0o755),
        file("sbin/getty", b"elf", mode=0o755),
        directory("etc"),
        file("etc/inittab", inittab, mode=0o600, gid=4),
    ]


def test_sysvinit_image_gets_an_s0_line_in_inittab(tmp_path: Path) -> None:
    tree = flattened(tmp_path, sysvinit_members(SYSV_INITTAB))
    assert describe(tree).init == "sysvinit"
    run_step(tree, console.STEP)
    assert content(tree, "/etc/inittab") == (
        SYSV_INITTAB + b"\nS0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n"
    )
    inittab = entry(tree, "/etc/inittab")
    assert (inittab.mode, inittab.uid, inittab.gid) == (0o600, 0, 4)
    assert lookup(tree.root, "/etc/systemd") is None


def test_sysvinit_inittab_with_a_serial_getty_is_left_alone(tmp_path: Path) -> None:
    inittab = b"id:2:initdefault:\nS0:2345:respawn:/sbin/agetty ttyS0 115200\n"
    tree = flattened(tmp_path, sysvinit_members(inittab))
    before = entry(tree, "/etc/inittab")
    run_step(tree, console.STEP)
    assert entry(tree, "/etc/inittab") == before
    assert content(tree, "/etc/inittab") == inittab


def test_busybox_image_gets_a_ttys0_respawn_line(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("bin"),
            file("bin/busybox", b"elf", mode=0o755),
            symlink("bin/getty", "busybox"),
            directory("sbin"),
            symlink("sbin/init", "../bin/busybox"),
            directory("etc"),
            file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        ],
    )
    assert describe(tree).init == "busybox"
    run_step(tree, console.STEP)
    # Without an inittab busybox init had defaults; the one written keeps them.
    assert content(tree, "/etc/inittab") == (
        b"::sysinit:/etc/init.d/rcS\n"
        b"::ctrlaltdel:reboot\n"
        b"::shutdown:umount -a -r\n"
        b"::shutdown:swapoff -a\n"
        b"::restart:init\n"
        b"ttyS0::respawn:/bin/getty -L 115200 ttyS0 vt100\n"
    )
    inittab = entry(tree, "/etc/inittab")
    assert (inittab.mode, inittab.uid, inittab.gid) == (0o644, 0, 0)


def test_busybox_inittab_gets_only_the_ttys0_line_appended(tmp_path: Path) -> None:
    inittab = b"::sysinit:/etc/init.d/rcS\ntty1::respawn:/sbin/getty 38400 tty1\n"
    tree = flattened(
        tmp_path,
        [
            directory("bin"),
            file("bin/busybox", b"elf", mode=0o755),
            directory("sbin"),
            symlink("sbin/init", "/bin/busybox"),
            symlink("sbin/getty", "/bin/busybox"),
            directory("etc"),
            file("etc/inittab", inittab),
        ],
    )
    run_step(tree, console.STEP)
    assert content(tree, "/etc/inittab") == (
        inittab + b"ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n"
    )


def test_systemd_without_udev_gets_a_getty_that_waits_for_no_device(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, systemd_members(udev=False))
    console.STEP.apply(edit, target(tree, options()))
    unit = content(tree, "/etc/systemd/system/serial-getty@ttyS0.service").decode()
    assert "BindsTo" not in unit and "dev-%i.device" not in unit
    assert "After=systemd-user-sessions.service getty-pre.target\n" in unit
    assert "After=rc-local.service\n" in unit and "ExecStart=-/sbin/agetty - $TERM" in unit


def test_systemd_with_udev_keeps_the_template(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, systemd_members())
    console.STEP.apply(edit, target(tree, options()))
    assert lookup(tree.root, "/etc/systemd/system/serial-getty@ttyS0.service") is None
