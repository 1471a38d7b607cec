"""The hostkeys step: host keys baked into the image removed, made at first boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.prepare import hostkeys
from oci2vm.tree.model import Kind, lookup
from support.initlayouts import debian_runit
from support.layouts import Member, directory, file, symlink
from support.prepared import content, entry, flattened, run_step, systemd_members

KEYS = ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key",
        "ssh_host_rsa_key.pub")  # fmt: skip
NOTE = (
    "the image's SSH host keys were removed (4 files in /etc/ssh): "
    "each VM makes its own at first boot"
)
DEBIAN_SSH_SCRIPT = b"#! /bin/sh\n\n### BEGIN INIT INFO\n# Provides: sshd\n### END INIT INFO\n"


def ssh_members(*, keys: bool = True) -> list[Member]:
    members = [
        directory("usr/sbin"),
        file("usr/sbin/sshd", b"elf", mode=0o755),
        directory("etc/ssh"),
        file("etc/ssh/sshd_config", b"Port 22\n"),
        file("etc/ssh/ssh_host_keys_readme"),
    ]
    if keys:
        members += [file(f"etc/ssh/{name}", b"KEY " + name.encode(), mode=0o600) for name in KEYS]
    return members


def sysv_members(script: bytes) -> list[Member]:
    return [
        directory("sbin"),
        file("sbin/init", b"elf", mode=0o755),
        directory("etc"),
        directory("etc/init.d"),
        file("etc/init.d/ssh", script, mode=0o755),
    ]


def test_systemd_image_loses_its_keys_and_gets_a_keygen_unit(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*systemd_members(), *ssh_members()])
    assert run_step(tree, hostkeys.STEP) == [NOTE]
    ssh = entry(tree, "/etc/ssh").children or {}
    assert sorted(ssh) == ["ssh_host_keys_readme", "sshd_config"]
    unit = content(tree, "/etc/systemd/system/oci2vm-ssh-keygen.service").decode()
    assert "\nExecStart=/usr/bin/ssh-keygen -A\n" in unit
    assert "\nBefore=ssh.service sshd.service\n" in unit
    assert "\nConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n" in unit
    assert "\nType=oneshot\n" in unit
    link = entry(tree, "/etc/systemd/system/multi-user.target.wants/oci2vm-ssh-keygen.service")
    assert (link.kind, link.target) == (
        Kind.SYMLINK,
        b"/etc/systemd/system/oci2vm-ssh-keygen.service",
    )


@pytest.mark.parametrize("unit", ["sshd-keygen@.service", "sshdgenkeys.service"])
def test_an_image_that_makes_its_own_keys_gets_no_unit(tmp_path: Path, unit: str) -> None:
    """Fedora's sshd-keygen@, Arch's sshdgenkeys (its sshd.service wants it)."""
    own = file(f"lib/systemd/system/{unit}", b"[Unit]\n")
    tree = flattened(tmp_path, [*systemd_members(), *ssh_members(), own])
    assert run_step(tree, hostkeys.STEP) == [NOTE]
    assert lookup(tree.root, "/etc/systemd/system/oci2vm-ssh-keygen.service") is None
    assert lookup(tree.root, "/etc/ssh/ssh_host_rsa_key") is None


def test_an_image_without_keys_still_gets_the_unit_and_no_note(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*systemd_members(), *ssh_members(keys=False)])
    assert run_step(tree, hostkeys.STEP) == []
    assert lookup(tree.root, "/etc/systemd/system/oci2vm-ssh-keygen.service") is not None


def test_an_image_without_sshd_is_left_alone(tmp_path: Path) -> None:
    members = [*systemd_members(), directory("etc/ssh"),
               file("etc/ssh/ssh_host_rsa_key.pub", b"client side known key")]  # fmt: skip
    tree = flattened(tmp_path, members)
    assert run_step(tree, hostkeys.STEP) == []
    assert lookup(tree.root, "/etc/ssh/ssh_host_rsa_key.pub") is not None
    assert lookup(tree.root, "/etc/systemd/system/oci2vm-ssh-keygen.service") is None


def test_a_debian_sysv_script_gets_a_guarded_keygen_line(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*sysv_members(DEBIAN_SSH_SCRIPT), *ssh_members()])
    assert run_step(tree, hostkeys.STEP) == [NOTE]
    script = content(tree, "/etc/init.d/ssh")
    first, second, rest = script.split(b"\n", 2)
    assert first == b"#! /bin/sh"
    assert second.startswith(b"[ -e /etc/ssh/ssh_host_ed25519_key ] || /usr/bin/ssh-keygen -A")
    assert rest == DEBIAN_SSH_SCRIPT.split(b"\n", 1)[1]
    inode = entry(tree, "/etc/init.d/ssh")
    assert inode.mode & 0o7777 == 0o755
    assert lookup(tree.root, "/etc/systemd/system/oci2vm-ssh-keygen.service") is None


def test_a_script_that_makes_keys_already_is_kept(tmp_path: Path) -> None:
    alpine = b"#!/sbin/openrc-run\nstart_pre() {\n\tssh-keygen -A\n}\n"
    tree = flattened(tmp_path, [*sysv_members(alpine), *ssh_members()])
    assert run_step(tree, hostkeys.STEP) == [NOTE]
    assert content(tree, "/etc/init.d/ssh") == alpine


def test_an_init_without_any_ssh_script_makes_them_at_first_boot(tmp_path: Path) -> None:
    members = [directory("sbin"), file("sbin/init", b"elf", mode=0o755), *ssh_members()]
    tree = flattened(tmp_path, members)
    assert run_step(tree, hostkeys.STEP) == [NOTE]
    fragment = "/etc/oci2vm/firstboot.d/20-ssh-host-keys.sh"
    assert content(tree, fragment) == (
        b"# SSH host keys of this machine's own.\n"
        b"[ ! -x /usr/bin/ssh-keygen ] || /usr/bin/ssh-keygen -A\n"
    )


def test_runit_makes_them_at_first_boot_not_in_the_init_script(tmp_path: Path) -> None:
    """Debian's runit runs /etc/sv/ssh (runit-services) in place of the script."""
    members = [*debian_runit(), file("etc/init.d/ssh", DEBIAN_SSH_SCRIPT, mode=0o755)]
    tree = flattened(tmp_path, [*members, *ssh_members()])
    assert run_step(tree, hostkeys.STEP) == [NOTE]
    assert content(tree, "/etc/init.d/ssh") == DEBIAN_SSH_SCRIPT
    assert lookup(tree.root, "/etc/oci2vm/firstboot.d/20-ssh-host-keys.sh") is not None


def test_an_image_without_init_is_told_what_to_do(tmp_path: Path) -> None:
    tree = flattened(tmp_path, ssh_members())
    notes = run_step(tree, hostkeys.STEP)
    assert notes[0] == NOTE
    assert "run `ssh-keygen -A` in the VM" in notes[1]
    assert lookup(tree.root, "/etc/oci2vm") is None


def test_keys_in_a_symlinked_ssh_directory_are_removed_too(tmp_path: Path) -> None:
    """/etc/ssh -> ../usr/etc/ssh (an image that keeps its configuration in /usr)."""
    moved = [
        directory("usr"),
        directory("usr/sbin"),
        file("usr/sbin/sshd", b"elf", mode=0o755),
        directory("usr/etc"),
        directory("usr/etc/ssh"),
        *[file(f"usr/etc/ssh/{name}", b"KEY", mode=0o600) for name in KEYS],
        directory("etc"),
        symlink("etc/ssh", "../usr/etc/ssh"),
    ]
    tree = flattened(tmp_path, [*systemd_members(), *moved])
    assert run_step(tree, hostkeys.STEP) == [NOTE]
    assert sorted(entry(tree, "/usr/etc/ssh").children or {}) == []
