"""The ssh step: keys for root's authorized_keys, read and checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.ssh import read_ssh_keys
from oci2vm.tree.model import Kind
from support.layouts import directory, file, symlink
from support.prepared import (
    DEBIAN_SHADOW,
    NO_NETWORK_NOTE,
    NO_SSHD_NOTE,
    content,
    entry,
    flattened,
    options,
    prepare,
    systemd_members,
)


def test_ssh_keys_go_to_roots_authorized_keys(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*systemd_members(), directory("usr/sbin"), file("usr/sbin/sshd")])
    keys = (b"ssh-ed25519 AAAAC3Nza one@host", b"ssh-rsa AAAAB3Nza two")
    notes = prepare(tree, options(keys=keys))
    assert notes == [
        NO_NETWORK_NOTE,
        "the image's SSH server has no systemd unit to start it: start it yourself",
    ]
    for path in ("/root", "/root/.ssh"):
        inode = entry(tree, path)
        assert (inode.kind, inode.mode, inode.uid, inode.gid) == (Kind.DIR, 0o700, 0, 0)
    keys_file = entry(tree, "/root/.ssh/authorized_keys")
    assert (keys_file.mode, keys_file.uid, keys_file.gid) == (0o600, 0, 0)
    assert content(tree, "/root/.ssh/authorized_keys") == (
        b"ssh-ed25519 AAAAC3Nza one@host\nssh-rsa AAAAB3Nza two\n"
    )
    assert content(tree, "/etc/shadow") == DEBIAN_SHADOW


def test_ssh_key_without_an_ssh_server_says_so(tmp_path: Path) -> None:
    tree = flattened(tmp_path, systemd_members())
    assert prepare(tree, options(keys=(b"ssh-ed25519 AAAA k",))) == [NO_NETWORK_NOTE, NO_SSHD_NOTE]


def test_read_ssh_keys_takes_public_keys_only(tmp_path: Path) -> None:
    good = tmp_path / "id.pub"
    good.write_bytes(b"ssh-ed25519 AAAAC3 me@host\n\n  ssh-rsa AAAAB3 other  \n")
    assert read_ssh_keys((good,)) == (b"ssh-ed25519 AAAAC3 me@host", b"ssh-rsa AAAAB3 other")
    private = tmp_path / "id"
    private.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n")
    with pytest.raises(Oci2vmError, match=r"id: not a public key"):
        read_ssh_keys((private,))
    for binary in (b"ssh-ed25519 AAAA\0C3 me\n", b"ssh-rsa AAAA \x1b[2J\n", b"\x7fELF x\n"):
        (tmp_path / "bin").write_bytes(binary)
        with pytest.raises(Oci2vmError, match=r"bin: not a public key"):
            read_ssh_keys((tmp_path / "bin",))
    tabbed = tmp_path / "tabbed"
    tabbed.write_bytes(b'from="10.0.0.0/8"\tssh-ed25519 AAAA me\r\n')  # sshd takes tabs, CRLF
    assert read_ssh_keys((tabbed,)) == (b'from="10.0.0.0/8"\tssh-ed25519 AAAA me',)
    with pytest.raises(Oci2vmError, match=r"^--ssh-key .*/missing: No such file"):
        read_ssh_keys((tmp_path / "missing",))


KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm key"


def test_an_sshd_nothing_starts_is_enabled_under_each_init(tmp_path: Path) -> None:
    """pacman, apk and xbps enable no service on install: the key alone would not do."""
    from oci2vm.prepare import ssh
    from oci2vm.tree.model import lookup
    from support.initlayouts import ALPINE_INITTAB, busybox
    from support.prepared import run_step, systemd_members

    sshd = file("usr/sbin/sshd", b"\x7fELF", mode=0o755)
    service = b"[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n"
    unit = file("usr/lib/systemd/system/sshd.service", service)
    cases = {
        "systemd": ([*systemd_members(merged_usr=True), directory("usr/sbin"), sshd, unit],
                    "/etc/systemd/system/multi-user.target.wants/sshd.service"),
        "openrc": ([*busybox(ALPINE_INITTAB), file("sbin/openrc", b"\x7fELF", mode=0o755),
                    directory("usr/sbin"), sshd, file("etc/init.d/sshd", b"#!/sbin/openrc-run\n")],
                   "/etc/runlevels/default/sshd"),
        "runit": ([directory("usr"), directory("usr/bin"), directory("sbin"), directory("usr/sbin"),
                   file("usr/bin/runit-init", b"\x7fELF", mode=0o755),
                   symlink("sbin/init", "../usr/bin/runit-init"), sshd, directory("etc/sv"),
                   directory("etc/sv/sshd"), file("etc/sv/sshd/run", b"#!/bin/sh\n", mode=0o755)],
                  "/etc/runit/runsvdir/default/sshd"),
    }  # fmt: skip
    for name, (members, link) in cases.items():
        tree = flattened(tmp_path / name, members)
        notes = run_step(tree, ssh.STEP, options(keys=(KEY,)))
        assert lookup(tree.root, link) is not None, name
        assert any(n.startswith("enabled ") for n in notes), name
        assert run_step(tree, ssh.STEP, options(keys=(KEY,))) == [], name  # enabled: as it is


def test_busybox_init_without_openrc_respawns_sshd_and_app_mode_starts_nothing(
    tmp_path: Path,
) -> None:
    """alpine:latest + openssh: its /etc/init.d/sshd is OpenRC's, which the image lacks."""
    import dataclasses

    from oci2vm.config import InitMode
    from oci2vm.prepare import ssh
    from oci2vm.prepare.accounts import APP_MODE_LOGIN
    from oci2vm.tree.editor import TreeEditor
    from support.initlayouts import ALPINE_INITTAB, busybox
    from support.prepared import FS_TIME, run_step, target

    members = [*busybox(ALPINE_INITTAB), directory("usr/sbin"),
               file("usr/sbin/sshd", b"\x7fELF", mode=0o755),
               file("etc/init.d/sshd", b"#!/sbin/openrc-run\n")]  # fmt: skip
    tree = flattened(tmp_path / "system", members)
    notes = run_step(tree, ssh.STEP, options(keys=(KEY,)))
    assert notes == ["/etc/inittab: /usr/sbin/sshd respawned by busybox init (nothing else "
                     "would start it)"]  # fmt: skip
    assert b"::respawn:/bin/sh -c 'mkdir -p /run/sshd /var/empty; exec /usr/sbin/sshd -D -e'\n" in (
        content(tree, "/etc/inittab")
    )
    assert run_step(tree, ssh.STEP, options(keys=(KEY,))) == []  # once
    tree = flattened(tmp_path / "app", members)
    goal = dataclasses.replace(target(tree, options(keys=(KEY,))), mode=InitMode.APP)
    assert ssh.STEP.apply(TreeEditor(tree, FS_TIME), goal) == [APP_MODE_LOGIN.format("--ssh-key")]
    assert content(tree, "/etc/inittab") == ALPINE_INITTAB
