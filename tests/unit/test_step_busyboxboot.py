"""A busybox init with nothing to boot the system (Alpine's minirootfs keeps an inittab that
runs the OpenRC it does not have; busybox alone has no rcS): the entries of absent programs
are commented out, and a boot script mounts /dev/pts, /dev/shm, /run and sets the name."""

from __future__ import annotations

from pathlib import Path

from oci2vm.prepare import busyboxboot
from oci2vm.tree.model import lookup as tree_lookup
from support.initlayouts import ALPINE_INITTAB, busybox
from support.layouts import file
from support.prepared import content, flattened, prepare, run_step

BOOT = "::sysinit:/bin/busybox sh /etc/oci2vm/boot.sh /bin/busybox\n"


def test_alpine_minirootfs_without_openrc_gets_its_entries_commented_and_a_boot_script(
    tmp_path: Path,
) -> None:
    tree = flattened(tmp_path, busybox(ALPINE_INITTAB))
    notes = prepare(tree, {"root_password": "pw", "ssh_keys": (), "hostname": "vm1"})
    text = content(tree, "/etc/inittab").decode()
    assert "\n::sysinit:/sbin/openrc" not in "\n" + text
    assert "# ::sysinit:/sbin/openrc sysinit\n" in text
    assert "# ::shutdown:/sbin/openrc shutdown\n" in text
    assert "tty1::respawn:/sbin/getty 38400 tty1\n" in text  # getty is busybox's: kept
    assert text.index(BOOT) < text.index("/etc/oci2vm/firstboot")  # mounts first
    script = content(tree, "/etc/oci2vm/boot.sh")
    for needed in (b"devpts", b"/dev/shm", b"hostname -F /etc/hostname", b"lo 127.0.0.1 up"):
        assert needed in script
    assert any("/sbin/openrc" in n and "commented out" in n for n in notes)


def test_busybox_without_an_inittab_and_without_rcs_gets_the_boot_script(
    tmp_path: Path,
) -> None:
    tree = flattened(tmp_path, busybox())
    run_step(tree, busyboxboot.STEP)
    text = content(tree, "/etc/inittab").decode()
    assert "# ::sysinit:/etc/init.d/rcS\n" in text and BOOT in text
    assert "::shutdown:umount -a -r\n" in text  # busybox's other defaults stay


def test_an_image_with_its_own_rcs_or_openrc_is_left_alone(tmp_path: Path) -> None:
    rcs = [*busybox(), file("etc/init.d/rcS", b"#!/bin/sh\nmount -a\n", mode=0o755)]
    tree = flattened(tmp_path / "rcs", rcs)
    assert run_step(tree, busyboxboot.STEP) == []
    assert tree_lookup(tree.root, "/etc/oci2vm/boot.sh") is None
    openrc = [*busybox(ALPINE_INITTAB), file("sbin/openrc", b"\x7fELF", mode=0o755)]
    tree = flattened(tmp_path / "openrc", openrc)
    assert run_step(tree, busyboxboot.STEP) == []  # OpenRC's services do it
    assert content(tree, "/etc/inittab") == ALPINE_INITTAB


def test_shell_command_lines_and_relative_programs_are_not_judged(tmp_path: Path) -> None:
    inittab = b"::sysinit:/bin/mount -a && /nowhere\n::respawn:getty 115200 ttyS0\n"
    tree = flattened(tmp_path, busybox(inittab))
    run_step(tree, busyboxboot.STEP)
    assert content(tree, "/etc/inittab") == inittab


def test_a_hardlinked_busybox_init_runs_the_script_by_busyboxs_own_name(tmp_path: Path) -> None:
    """docker's busybox image: /sbin/init a hardlink of busybox, which picks its applet by
    the name it runs as (init again, by that name)."""
    tree = flattened(tmp_path, busybox(linked=False))
    run_step(tree, busyboxboot.STEP)
    assert BOOT in content(tree, "/etc/inittab").decode()


def test_app_mode_gets_no_boot_script(tmp_path: Path) -> None:
    import dataclasses

    from oci2vm.config import InitMode
    from oci2vm.tree.editor import TreeEditor
    from support.prepared import FS_TIME, options, target

    tree = flattened(tmp_path, busybox(ALPINE_INITTAB))
    goal = dataclasses.replace(target(tree, options()), mode=InitMode.APP)
    assert not busyboxboot.STEP.applies(goal)
    assert TreeEditor(tree, FS_TIME).get("/etc/oci2vm/boot.sh") is None
