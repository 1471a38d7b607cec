"""The accounts step: root's password hashed into /etc/shadow, and the note when nobody
can log in."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.prepare.passwords import derived_salt, sha512_crypt
from oci2vm.tree.model import BytesData, walk
from support.layouts import directory, file
from support.prepared import (
    DEBIAN_PASSWD,
    IDENTITY,
    NO_NETWORK_NOTE,
    content,
    entry,
    flattened,
    libc_crypt,
    options,
    prepare,
    systemd_members,
)


def test_root_password_replaces_roots_shadow_hash_only(tmp_path: Path) -> None:
    tree = flattened(tmp_path, systemd_members())
    notes = prepare(tree, options(password="s3cret pass"))
    assert notes == [NO_NETWORK_NOTE]
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
    assert seen == 6  # fstab, hostname, hosts, machine-id, shadow, authorized_keys


@pytest.mark.parametrize("kind", ["dangling", "fifo"])
def test_root_password_into_a_shadow_that_is_no_file_is_private(tmp_path: Path, kind: str) -> None:
    """A dangling /etc/shadow link (a host path) or a device: the hashes go into a new
    file of root's, 0600, never 0644."""
    from support.layouts import Member, symlink

    odd: Member = symlink("etc/shadow", "/host/etc/shadow")
    if kind == "fifo":
        import tarfile

        odd = file("etc/shadow")
        odd.info.type = tarfile.FIFOTYPE
    tree = flattened(tmp_path, [directory("etc"), file("etc/passwd", DEBIAN_PASSWD), odd])
    prepare(tree, options(password="pw"))
    shadow = entry(tree, "/etc/shadow")
    assert (shadow.kind.value, shadow.mode, shadow.uid, shadow.gid) == ("file", 0o600, 0, 0)


def test_root_password_keeps_other_lines_byte_for_byte(tmp_path: Path) -> None:
    """Bytes that are no UTF-8 (a Latin-1 name) and fields holding characters that
    str.splitlines() splits at stay as they were; a short root line eats nothing."""
    passwd = b"root:x\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    passwd += b"ann:x:1500:1500:Jos\xe9\xc2\x85x:/h:/bin/sh\n"
    shadow = b"root:!\ndaemon:*:19000:0:99999:7:::\nann:$6$s\x0c$h:19000::::::\n"
    tree = flattened(
        tmp_path, [directory("etc"), file("etc/passwd", passwd), file("etc/shadow", shadow)]
    )
    prepare(tree, options(password="pw"))
    hashed = sha512_crypt("pw", derived_salt("pw", IDENTITY))
    assert content(tree, "/etc/passwd") == passwd
    assert content(tree, "/etc/shadow") == f"root:{hashed}::0:99999:7:::\n".encode() + shadow
