"""The identity step: machine ID, D-Bus's copy of it and random seeds taken out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from oci2vm.config import InitMode
from oci2vm.prepare import identity
from oci2vm.prepare.step import Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, lookup
from support.layouts import Member, directory, file, symlink
from support.prepared import (
    FS_TIME,
    content,
    entry,
    flattened,
    options,
    run_step,
    systemd_members,
    target,
)

MACHINE_ID = b"0123456789abcdef0123456789abcdef\n"


def state_members() -> list[Member]:
    return [
        file("etc/machine-id", MACHINE_ID, mode=0o444),
        directory("var"),
        directory("var/lib"),
        directory("var/lib/dbus"),
        directory("var/lib/systemd"),
        file("var/lib/systemd/random-seed", b"\x01" * 512, mode=0o600),
        directory("var/lib/urandom"),
        file("var/lib/urandom/random-seed", b"\x02" * 512, mode=0o600),
    ]


def test_systemd_image_gets_first_boot_machine_id_and_no_seeds(tmp_path: Path) -> None:
    members = [*systemd_members(), *state_members(), file("var/lib/dbus/machine-id", MACHINE_ID)]
    tree = flattened(tmp_path, members)
    assert run_step(tree, identity.STEP) == []
    assert content(tree, "/etc/machine-id") == b"uninitialized\n"
    assert entry(tree, "/etc/machine-id").mode & 0o7777 == 0o444
    for gone in (
        "/var/lib/dbus/machine-id",
        "/var/lib/systemd/random-seed",
        "/var/lib/urandom/random-seed",
    ):
        assert lookup(tree.root, gone) is None, gone
    assert lookup(tree.root, "/var/lib/dbus") is not None


def test_systemd_image_without_machine_id_gets_one_for_first_boot(tmp_path: Path) -> None:
    tree = flattened(tmp_path, systemd_members())
    run_step(tree, identity.STEP)
    inode = entry(tree, "/etc/machine-id")
    assert (inode.mode & 0o7777, inode.uid, inode.gid) == (0o444, 0, 0)
    assert content(tree, "/etc/machine-id") == b"uninitialized\n"


def test_a_dbus_link_to_the_machine_id_is_kept(tmp_path: Path) -> None:
    members = [*systemd_members(), *state_members(),
               symlink("var/lib/dbus/machine-id", "/etc/machine-id")]  # fmt: skip
    tree = flattened(tmp_path, members)
    run_step(tree, identity.STEP)
    link = entry(tree, "/var/lib/dbus/machine-id")
    assert (link.kind, link.target) == (Kind.SYMLINK, b"/etc/machine-id")


def test_other_inits_get_an_empty_machine_id_and_none_where_there_was_none(
    tmp_path: Path,
) -> None:
    init = [directory("sbin"), file("sbin/init", b"elf", mode=0o755), directory("etc")]
    tree = flattened(tmp_path / "a", [*init, *state_members()])
    assert run_step(tree, identity.STEP) == []
    assert entry(tree, "/etc/machine-id").size == 0
    assert lookup(tree.root, "/var/lib/urandom/random-seed") is None
    bare = flattened(tmp_path / "b", init)
    run_step(bare, identity.STEP)
    assert lookup(bare.root, "/etc/machine-id") is None
    for made in (tree, bare):  # and both make one at first boot
        assert content(made, "/etc/oci2vm/firstboot.d/10-machine-id.sh") == (
            b"# A machine ID of this machine's own (machine-id(5)), from the kernel's random "
            b"UUID less\n# its dashes, with the shell's builtins alone (an image may lack tr).\n"
            b"if [ ! -s /etc/machine-id ]; then\n"
            b"\tread -r uuid < /proc/sys/kernel/random/uuid\n"
            b'\tid=$(IFS=-; set -- $uuid; printf %s "$@")\n'
            b"\t[ ${#id} -eq 32 ] && printf '%s\\n' \"$id\" > /etc/machine-id"
            b" && chmod 0444 /etc/machine-id\n"
            b"fi\n"
        )


def test_systemd_and_an_image_without_init_get_no_first_boot_fragment(tmp_path: Path) -> None:
    for name, members in (("a", systemd_members()), ("b", [directory("etc")])):
        tree = flattened(tmp_path / name, members)
        run_step(tree, identity.STEP)
        assert lookup(tree.root, "/etc/oci2vm") is None, name


def test_two_builds_of_one_image_get_the_same_tree(tmp_path: Path) -> None:
    members = [*systemd_members(), *state_members()]
    trees = [flattened(tmp_path / name, members) for name in ("a", "b")]
    for tree in trees:
        run_step(tree, identity.STEP)
    assert [content(t, "/etc/machine-id") for t in trees] == [b"uninitialized\n"] * 2
    assert [entry(t, "/etc/machine-id").mtime_ns for t in trees] == [FS_TIME * 10**9] * 2


def test_app_mode_keeps_the_identity(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*systemd_members(), *state_members()])
    goal: Target = target(tree, options())
    app = dataclasses.replace(goal, mode=InitMode.APP)
    assert not identity.STEP.applies(app)
    assert identity.STEP.applies(goal)
    identity.STEP.apply(TreeEditor(tree, FS_TIME), goal)
    assert content(tree, "/etc/machine-id") == b"uninitialized\n"
