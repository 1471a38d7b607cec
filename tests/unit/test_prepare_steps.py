"""The preparation steps together, as a disk build runs them over small trees, and the
runner: the order, and steps that do not apply."""

from __future__ import annotations

from pathlib import Path

from oci2vm.config import Config
from oci2vm.prepare.step import Step, Target
from oci2vm.prepare.steps import SYSTEM_STEPS, data_bytes, run_steps
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, lookup, walk
from support.layouts import file
from support.prepared import (
    DEBIAN_PASSWD,
    DEBIAN_SHADOW,
    FS_TIME,
    FSTAB,
    NO_NETWORK_NOTE,
    NOBODY_NOTE,
    content,
    entry,
    flattened,
    options,
    prepare,
    systemd_members,
    target,
)


def test_systemd_image_gets_serial_getty_fstab_hostname_and_loses_dockerenv(
    tmp_path: Path,
) -> None:
    tree = flattened(tmp_path, systemd_members())
    notes = prepare(tree, options(hostname="debian"))
    assert notes == [NO_NETWORK_NOTE, NOBODY_NOTE]  # no networkd in systemd_members
    link = entry(tree, "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service")
    assert (link.kind, link.target) == (Kind.SYMLINK, b"/lib/systemd/system/serial-getty@.service")
    for path in ("/etc/systemd", "/etc/systemd/system", "/etc/systemd/system/getty.target.wants"):
        assert (entry(tree, path).kind, entry(tree, path).mode) == (Kind.DIR, 0o755)
    assert content(tree, "/etc/fstab") == FSTAB
    assert content(tree, "/etc/hostname") == b"debian\n"
    assert content(tree, "/etc/hosts") == (
        b"127.0.0.1\tlocalhost\n"
        b"127.0.1.1\tdebian\n"
        b"::1\tlocalhost ip6-localhost ip6-loopback\n"
        b"ff02::1\tip6-allnodes\n"
        b"ff02::2\tip6-allrouters\n"
    )
    for path in ("/etc/fstab", "/etc/hostname", "/etc/hosts"):
        inode = entry(tree, path)
        assert (inode.mode, inode.uid, inode.gid) == (0o644, 0, 0), path
    assert lookup(tree.root, "/.dockerenv") is None
    assert entry(tree, "/run").children == {}
    # Without a password the accounts are the image's own.
    assert content(tree, "/etc/shadow") == DEBIAN_SHADOW
    assert content(tree, "/etc/passwd") == DEBIAN_PASSWD
    added = {p for p, _ in walk(tree.root)} - {
        "/" + m.info.name
        for m in systemd_members()
        if m.info.name not in (".dockerenv", "run/.containerenv")
    }
    assert added == {
        "/",
        "/proc",  # mount points the image lacked (it has /run)
        "/sys",
        "/dev",
        "/tmp",
        "/etc/fstab",
        "/etc/hosts",
        "/etc/machine-id",
        "/etc/systemd",
        "/etc/systemd/system",
        "/etc/systemd/system/getty.target.wants",
        "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
    }


def test_the_runner_keeps_the_order_and_skips_steps_that_do_not_apply(tmp_path: Path) -> None:
    assert [step.name for step in SYSTEM_STEPS] == [
        "kernel", "cleanup", "mountpoints", "busyboxboot", "openrcboot", "distro", "identity",
        "hostkeys", "firstboot",
        "appmode", "fstab", "hostname", "network", "cloudinit", "console", "accounts", "users",
        "ssh", "bootcfg",
    ]  # fmt: skip
    ran: list[str] = []

    def recording(name: str, applies: bool = True) -> Step:
        def apply(_edit: TreeEditor, _target: Target) -> list[str]:
            ran.append(name)
            return [f"{name} ran"]

        return Step(name, apply, lambda _target: applies)

    tree = flattened(tmp_path, [file("x")])
    steps = (recording("first"), recording("skipped", applies=False), recording("second"))
    notes, _ = run_steps(steps, TreeEditor(tree, FS_TIME), target(tree, options()))
    assert (ran, notes) == (["first", "second"], ["first ran", "second ran"])


def test_a_step_that_changes_the_system_has_it_described_anew(tmp_path: Path) -> None:
    seen: list[int] = []

    def add_kernel(edit: TreeEditor, _target: Target) -> list[str]:
        edit.write("/boot/vmlinuz-9.9", b"k")
        return []

    def count(_edit: TreeEditor, goal: Target) -> list[str]:
        seen.append(len(goal.os.kernels))
        return []

    tree = flattened(tmp_path, [file("x")])
    steps = (Step("count", count), Step("kernel", add_kernel, refreshes_os=True),
             Step("count", count))  # fmt: skip
    _, final = run_steps(steps, TreeEditor(tree, FS_TIME), target(tree, options()))
    assert seen == [0, 1]
    assert [k.version for k in final.os.kernels] == ["9.9"]


def test_the_plan_counts_the_file_data_steps_add() -> None:
    sized = Step("sized", lambda _edit, _target: [], data_bytes=lambda _config: 1234)
    assert data_bytes((sized, SYSTEM_STEPS[0], sized), Config()) == 2468
    assert data_bytes(SYSTEM_STEPS, Config()) == 0
