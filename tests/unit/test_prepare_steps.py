"""What the preparation steps write into small systemd, sysvinit and busybox trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.hostname import check_hostname, hostname_from
from oci2vm.prepare.passwords import derived_salt, sha512_crypt
from oci2vm.prepare.ssh import read_ssh_keys
from oci2vm.tree.model import BytesData, Kind, lookup, walk
from oci2vm.tree.osinfo import describe
from support.layouts import Member, directory, file, symlink
from support.prepared import (
    DEBIAN_PASSWD,
    DEBIAN_SHADOW,
    FSTAB,
    IDENTITY,
    NO_SSHD_NOTE,
    NOBODY_NOTE,
    content,
    entry,
    flattened,
    libc_crypt,
    options,
    prepare,
    systemd_members,
)

# -- prepare_system --------------------------------------------------------------------------


def test_systemd_image_gets_serial_getty_fstab_hostname_and_loses_dockerenv(
    tmp_path: Path,
) -> None:
    tree = flattened(tmp_path, systemd_members())
    notes = prepare(tree, options(hostname="debian"))
    assert notes == [NOBODY_NOTE]
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
        "/etc/fstab",
        "/etc/hosts",
        "/etc/systemd",
        "/etc/systemd/system",
        "/etc/systemd/system/getty.target.wants",
        "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
    }


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


def test_sysvinit_image_gets_a_t0_line_in_inittab(tmp_path: Path) -> None:
    tree = flattened(tmp_path, sysvinit_members(SYSV_INITTAB))
    assert describe(tree).init == "sysvinit"
    prepare(tree, options())
    assert content(tree, "/etc/inittab") == (
        SYSV_INITTAB + b"\nT0:23:respawn:/sbin/getty -L ttyS0 115200 vt100\n"
    )
    inittab = entry(tree, "/etc/inittab")
    assert (inittab.mode, inittab.uid, inittab.gid) == (0o600, 0, 4)
    assert lookup(tree.root, "/etc/systemd") is None


def test_sysvinit_inittab_with_a_serial_getty_is_left_alone(tmp_path: Path) -> None:
    inittab = b"id:2:initdefault:\nS0:2345:respawn:/sbin/agetty ttyS0 115200\n"
    tree = flattened(tmp_path, sysvinit_members(inittab))
    before = entry(tree, "/etc/inittab")
    prepare(tree, options())
    assert entry(tree, "/etc/inittab") is before
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
    prepare(tree, options())
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
    prepare(tree, options())
    assert content(tree, "/etc/inittab") == (
        inittab + b"ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n"
    )


def test_root_password_replaces_roots_shadow_hash_only(tmp_path: Path) -> None:
    tree = flattened(tmp_path, systemd_members())
    notes = prepare(tree, options(password="s3cret pass"))
    assert notes == []
    lines = content(tree, "/etc/shadow").decode().splitlines()
    fields = lines[0].split(":")
    assert fields[0] == "root"
    assert fields[1] == sha512_crypt("s3cret pass", derived_salt("s3cret pass", IDENTITY))
    assert libc_crypt("s3cret pass", fields[1]) == fields[1]
    assert fields[2:] == ["19000", "0", "99999", "7", "", "", ""]
    assert lines[1:] == ["daemon:*:19000:0:99999:7:::"]
    shadow = entry(tree, "/etc/shadow")
    assert (shadow.mode, shadow.uid, shadow.gid) == (0o640, 0, 42)
    assert content(tree, "/etc/passwd") == DEBIAN_PASSWD


def test_root_password_creates_shadow_when_missing(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/passwd", DEBIAN_PASSWD)])
    prepare(tree, options(password="pw"))
    hashed = sha512_crypt("pw", derived_salt("pw", IDENTITY))
    # An empty last-change field: 0 there would force a password change at first login.
    assert content(tree, "/etc/shadow") == f"root:{hashed}::0:99999:7:::\n".encode()
    shadow = entry(tree, "/etc/shadow")
    assert (shadow.mode, shadow.uid, shadow.gid) == (0o600, 0, 0)
    assert content(tree, "/etc/passwd") == DEBIAN_PASSWD


@pytest.mark.parametrize(
    "root_line",
    [
        b"root:$1$abc$0123456789abcdefghijkl:0:0:root:/root:/bin/sh\n",
        b"root:xQ7nB1rLzq/8c:0:0:root:/root:/bin/sh\n",  # a DES hash that begins with x
        b"root::0:0:root:/root:/bin/sh\n",  # empty: no password at all, shadow unread
    ],
)
def test_root_password_points_passwd_at_shadow(tmp_path: Path, root_line: bytes) -> None:
    passwd = root_line + b"bin:x:1:1:bin:/bin:/sbin/nologin\n"
    tree = flattened(tmp_path, [directory("etc"), file("etc/passwd", passwd, mode=0o644)])
    prepare(tree, options(password="pw"))
    assert content(tree, "/etc/passwd") == (
        b"root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\n"
    )
    assert content(tree, "/etc/shadow").startswith(b"root:$6$")


def test_root_password_adds_root_to_passwd_without_one(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/passwd", b"app:x:1000:1000::/:/x\n")])
    prepare(tree, options(password="pw"))
    assert content(tree, "/etc/passwd") == (
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/x\n"
    )


def test_clear_text_password_is_in_no_file_of_the_tree(tmp_path: Path) -> None:
    password = "Very-Distinct-Password-42"
    tree = flattened(tmp_path, systemd_members())
    prepare(tree, options(password=password, keys=(b"ssh-ed25519 AAAAC3Nza key",)))
    needle = password.encode()
    seen = 0
    for path, inode in walk(tree.root):
        assert needle not in path.encode(), path
        if inode.target is not None:
            assert needle not in inode.target, path
        if isinstance(inode.data, BytesData):
            assert needle not in inode.data.content, path
            seen += 1
    for inode, data in tree.captured.items():
        assert needle not in data, inode
    assert seen == 5  # fstab, hostname, hosts, shadow, authorized_keys


def test_ssh_keys_go_to_roots_authorized_keys(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [*systemd_members(), directory("usr/sbin"), file("usr/sbin/sshd")])
    keys = (b"ssh-ed25519 AAAAC3Nza one@host", b"ssh-rsa AAAAB3Nza two")
    notes = prepare(tree, options(keys=keys))
    assert notes == []
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
    assert prepare(tree, options(keys=(b"ssh-ed25519 AAAA k",))) == [NO_SSHD_NOTE]


def test_read_ssh_keys_takes_public_keys_only(tmp_path: Path) -> None:
    good = tmp_path / "id.pub"
    good.write_bytes(b"ssh-ed25519 AAAAC3 me@host\n\n  ssh-rsa AAAAB3 other  \n")
    assert read_ssh_keys((good,)) == (b"ssh-ed25519 AAAAC3 me@host", b"ssh-rsa AAAAB3 other")
    private = tmp_path / "id"
    private.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n")
    with pytest.raises(Oci2vmError, match=r"id: not a public key"):
        read_ssh_keys((private,))
    with pytest.raises(Oci2vmError, match=r"^--ssh-key .*/missing: No such file"):
        read_ssh_keys((tmp_path / "missing",))


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("docker.io/library/debian:12", "debian"),
        ("debian", "debian"),
        ("ubuntu:22.04", "ubuntu"),
        ("localhost:5000/team/my_app:v1", "my-app"),
        ("quay.io/Fedora/Fedora-Minimal@sha256:" + "0" * 64, "fedora-minimal"),
        ("registry.example.com/a/b/c.d:tag", "c-d"),
        ("rootfs.tar.gz", "rootfs-tar-gz"),
        ("_weird__name_", "weird-name"),
        ("x" * 80, "x" * 63),
        ("___", "oci2vm"),
    ],
)
def test_hostname_from_image_name(name: str, hostname: str) -> None:
    assert hostname_from(name) == hostname
    assert check_hostname(hostname) == hostname


@pytest.mark.parametrize("bad", ["", "Upper", "under_score", "-lead", "trail-", "a" * 64, "a.b"])
def test_check_hostname_rejects_malformed(bad: str) -> None:
    with pytest.raises(Oci2vmError) as raised:
        check_hostname(bad)
    assert str(raised.value) == (
        f"malformed --hostname {bad!r}: use lowercase letters, digits and '-', at most 63"
    )
