"""OS preparation: SHA-512 crypt against libc, the tree editor's rules, and what
prepare_system writes into small systemd, sysvinit and busybox trees."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from layouts import Member, directory, file, hardlink, symlink, write_layout
from oci2vm.errors import Oci2vmError
from oci2vm.layers.flatten import flatten
from oci2vm.prepare.passwords import derived_salt, sha512_crypt
from oci2vm.prepare.system import (
    SystemOptions,
    check_hostname,
    hostname_from,
    prepare_system,
    read_ssh_keys,
)
from oci2vm.sources import Fetch, resolve
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import BytesData, Inode, Kind, Tree, lookup, walk
from oci2vm.tree.osinfo import describe

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated since 3.11, gone in 3.13: the reference for these tests

CRYPT_ALPHABET = set("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
FS_TIME = 1_700_000_000
ROOT_UUID = "0ccd2b3c-7b0e-4f4c-9d8f-1a2b3c4d5e6f"
IDENTITY = "sha256:" + "ab" * 32
NOBODY_NOTE = (
    "nobody can log in: no --root-password or --ssh-key was given "
    "(the image's own accounts are unchanged)"
)
NO_SSHD_NOTE = "the image has no SSH server: the key only helps once one is installed"
FSTAB = (
    "# Written by oci2vm.\n"
    "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>\n"
    f"UUID={ROOT_UUID}  /  ext4  rw,errors=remount-ro  0  1\n"
).encode()
DEBIAN_PASSWD = (
    b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
)
DEBIAN_SHADOW = b"root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


def libc_crypt(password: str, setting: str) -> str:
    result = crypt.crypt(password, setting)
    assert result is not None and result.startswith("$6$"), (setting, result)
    return result


def flattened(tmp_path: Path, members: list[Member]) -> Tree:
    write_layout(tmp_path / "img", [members])
    return flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()))


def content(tree: Tree, path: str) -> bytes:
    """A file's bytes as preparation left them (only prepared or captured files)."""
    inode = lookup(tree.root, path)
    assert inode is not None and inode.kind is Kind.FILE, path
    data = tree.content(inode)
    assert data is not None, path
    return data


def entry(tree: Tree, path: str) -> Inode:
    inode = lookup(tree.root, path)
    assert inode is not None, path
    return inode


def options(
    *, password: str | None = None, keys: tuple[bytes, ...] = (), hostname: str = "vm1"
) -> SystemOptions:
    return SystemOptions(ROOT_UUID, hostname, password, keys, IDENTITY)


def prepare(tree: Tree, opts: SystemOptions) -> list[str]:
    return prepare_system(TreeEditor(tree, FS_TIME), describe(tree), opts)


def systemd_members(*, merged_usr: bool = False) -> list[Member]:
    lib = "usr/lib" if merged_usr else "lib"
    members = [
        directory("usr"),
        directory("usr/lib"),
        directory("sbin"),
        directory("etc"),
        file("etc/passwd", DEBIAN_PASSWD),
        file("etc/shadow", DEBIAN_SHADOW, mode=0o640, gid=42),
        file("etc/hostname", b"buildkitsandbox\n"),
        file(".dockerenv"),
        directory("run"),
        file("run/.containerenv", b'engine="podman"\n'),
    ]
    if merged_usr:
        members.append(symlink("lib", "usr/lib"))
    else:
        members.append(directory("lib"))
    members += [
        directory(f"{lib}/systemd"),
        file(f"{lib}/systemd/systemd", b"\x7fELF", mode=0o755),
        directory(f"{lib}/systemd/system"),
        file(f"{lib}/systemd/system/serial-getty@.service", b"[Unit]\n"),
        symlink("sbin/init", "/lib/systemd/systemd"),
    ]
    return members


# -- SHA-512 crypt ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "salt", "rounds"),
    [
        ("secret", "abcdefgh", None),
        ("", "saltsalt", None),
        ("correct horse battery staple", "0123456789abcdef", None),
        ("pässwörd €", "./Zz09", None),
        ("x" * 200, "longpassword", None),  # longer than a SHA-512 digest
        ("secret", "a", 1000),
        ("Hello world!", "saltstring", 10000),
        ("secret", "0123456789abcdefXYZ", 5001),  # salts stop at 16 characters
    ],
)
def test_sha512_crypt_equals_libc_crypt(password: str, salt: str, rounds: int | None) -> None:
    if rounds is None:
        ours = sha512_crypt(password, salt)
        setting = f"$6${salt}$"
    else:
        ours = sha512_crypt(password, salt, rounds)
        setting = f"$6$rounds={rounds}${salt}$"
    assert ours == libc_crypt(password, setting)
    assert ours.startswith(f"$6$rounds={rounds}$" if rounds else f"$6${salt[:16]}$")


def test_sha512_crypt_clamps_rounds_to_the_specified_minimum() -> None:
    """Drepper's specification: fewer than 1000 rounds means 1000, and the hash says so."""
    expected = libc_crypt("secret", "$6$rounds=1000$abcdefgh$")
    assert sha512_crypt("secret", "abcdefgh", 10) == expected
    assert sha512_crypt("secret", "abcdefgh", 1000) == expected


def test_derived_salt_is_deterministic_crypt_alphabet_of_16() -> None:
    salt = derived_salt("secret", IDENTITY)
    assert salt == derived_salt("secret", IDENTITY)
    assert len(salt) == 16
    assert set(salt) <= CRYPT_ALPHABET
    assert derived_salt("secret", "sha256:" + "cd" * 32) != salt
    assert derived_salt("secret2", IDENTITY) != salt
    salts = {derived_salt(f"password{n}", IDENTITY) for n in range(200)}
    assert len(salts) == 200
    assert set("".join(salts)) == CRYPT_ALPHABET  # all 64 characters are reachable


# -- the tree editor -------------------------------------------------------------------------


def test_write_replacing_a_file_keeps_owner_mode_and_xattrs(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("etc"),
            file("etc/shadow", b"old\n", mode=0o640, uid=3, gid=42, mtime=1),
        ],
    )
    entry(tree, "/etc/shadow").xattrs = {"security.selinux": b"shadow_t\0"}
    edit = TreeEditor(tree, FS_TIME)
    written = edit.write("/etc/shadow", b"new content\n")
    inode = entry(tree, "/etc/shadow")
    assert inode is written
    assert (inode.kind, inode.mode, inode.uid, inode.gid) == (Kind.FILE, 0o640, 3, 42)
    assert inode.xattrs == {"security.selinux": b"shadow_t\0"}
    assert inode.mtime_ns == FS_TIME * 1_000_000_000
    assert inode.size == len(b"new content\n")
    assert inode.data == BytesData(b"new content\n")
    assert edit.read("/etc/shadow") == b"new content\n"
    assert tree.read("/etc/shadow") == b"new content\n"


def test_write_with_given_mode_and_owner_overrides_the_replaced_file(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/fstab", b"x", mode=0o600, uid=7)])
    TreeEditor(tree, FS_TIME).write("/etc/fstab", b"y", mode=0o644, uid=0, gid=0)
    inode = entry(tree, "/etc/fstab")
    assert (inode.mode, inode.uid, inode.gid, inode.data) == (0o644, 0, 0, BytesData(b"y"))


def test_write_new_file_creates_missing_parents(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [file("a", b"x")])
    TreeEditor(tree, FS_TIME).write("/new/dir/f", b"")
    for path in ("/new", "/new/dir"):
        parent = entry(tree, path)
        assert (parent.kind, parent.mode, parent.uid, parent.gid) == (Kind.DIR, 0o755, 0, 0)
        assert parent.mtime_ns == FS_TIME * 1_000_000_000
    created = entry(tree, "/new/dir/f")
    assert (created.kind, created.mode, created.size, created.data) == (Kind.FILE, 0o644, 0, None)


def test_write_over_a_hardlink_replaces_only_that_path(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path, [directory("etc"), file("etc/a", b"one"), hardlink("etc/b", "etc/a")]
    )
    old = entry(tree, "/etc/a")
    assert entry(tree, "/etc/b") is old
    TreeEditor(tree, FS_TIME).write("/etc/b", b"two")
    assert entry(tree, "/etc/a") is old
    assert entry(tree, "/etc/b") is not old
    assert content(tree, "/etc/a") == b"one"
    assert content(tree, "/etc/b") == b"two"


def test_write_replaces_a_symlink_with_a_file(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), symlink("etc/hostname", "/run/hostname")])
    TreeEditor(tree, FS_TIME).write("/etc/hostname", b"vm\n")
    inode = entry(tree, "/etc/hostname")
    assert (inode.kind, inode.mode, inode.target) == (Kind.FILE, 0o644, None)
    assert content(tree, "/etc/hostname") == b"vm\n"


def test_write_through_a_symlinked_directory_lands_in_its_target(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("var"), directory("run"), symlink("var/run", "/run")])
    edit = TreeEditor(tree, FS_TIME)
    edit.write("/var/run/x", b"data")
    edit.mkdir("/var/run/d", mode=0o700)
    assert sorted(entry(tree, "/run").children or {}) == ["d", "x"]
    assert content(tree, "/run/x") == b"data"
    assert entry(tree, "/run/d").mode == 0o700
    assert entry(tree, "/var/run").kind is Kind.SYMLINK
    assert edit.get("/var/run/x") is entry(tree, "/run/x")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([symlink("var/run", "/nowhere")], "cannot write /var/run/x: run is a dangling symlink"),
        (
            [symlink("var/run", "../var/loop"), symlink("var/loop", "run")],
            "cannot write /var/run/x: run is a dangling symlink",
        ),
        (
            [file("var/log", b"f"), symlink("var/run", "log")],
            "cannot write /var/run/x: run is not a directory in the image",
        ),
    ],
)
def test_write_through_a_broken_symlink_is_an_error(
    tmp_path: Path, members: list[Member], message: str
) -> None:
    tree = flattened(tmp_path, [directory("var"), *members])
    before = {p: (i.kind, i.target) for p, i in walk(tree.root)}
    edit = TreeEditor(tree, FS_TIME)
    with pytest.raises(Oci2vmError) as raised:
        edit.write("/var/run/x", b"")
    assert str(raised.value) == message
    with pytest.raises(Oci2vmError):
        edit.mkdir("/var/run/d")
    assert edit.get("/var/run/x") is None
    assert {p: (i.kind, i.target) for p, i in walk(tree.root)} == before


def test_write_over_a_directory_or_under_a_file_is_an_error(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/passwd", b"x")])
    edit = TreeEditor(tree, FS_TIME)
    with pytest.raises(Oci2vmError, match=r"^cannot write /etc: it is a directory in the image"):
        edit.write("/etc", b"")
    with pytest.raises(Oci2vmError, match=r"^cannot link /etc: it is a directory in the image"):
        edit.symlink("/etc", "/x")
    with pytest.raises(Oci2vmError, match=r"^cannot write /etc/passwd/x: passwd is not a dir"):
        edit.write("/etc/passwd/x", b"")
    assert entry(tree, "/etc").kind is Kind.DIR
    assert content(tree, "/etc/passwd") == b"x"


def test_mkdir_creates_or_returns_the_existing_directory(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("root", mode=0o750, uid=5), file("f")])
    edit = TreeEditor(tree, FS_TIME)
    existing = entry(tree, "/root")
    assert edit.mkdir("/root", mode=0o700) is existing
    assert (existing.mode, existing.uid) == (0o750, 5)
    made = edit.mkdir("/root/.ssh", mode=0o700, uid=1, gid=2)
    assert entry(tree, "/root/.ssh") is made
    assert (made.kind, made.mode, made.uid, made.gid, made.children) == (
        Kind.DIR,
        0o700,
        1,
        2,
        {},
    )
    with pytest.raises(Oci2vmError, match=r"^cannot create directory /f: a file is there"):
        edit.mkdir("/f")


def test_symlink_creates_or_replaces(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/mtab", b"x")])
    edit = TreeEditor(tree, FS_TIME)
    edit.symlink("/etc/mtab", "../proc/self/mounts")
    edit.symlink("/etc/new/link", "/target")
    for path, target in (("/etc/mtab", b"../proc/self/mounts"), ("/etc/new/link", b"/target")):
        inode = entry(tree, path)
        assert (inode.kind, inode.mode, inode.target, inode.size) == (
            Kind.SYMLINK,
            0o777,
            target,
            len(target),
        )
        assert inode.mtime_ns == FS_TIME * 1_000_000_000


def test_remove_drops_the_entry(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/motd", b"hi"), file(".dockerenv")])
    edit = TreeEditor(tree, FS_TIME)
    assert edit.read("/etc/motd") == b"hi"
    assert edit.remove("/etc/motd") is True
    assert edit.remove("/.dockerenv") is True
    assert edit.read("/etc/motd") is None
    assert sorted(entry(tree, "/").children or {}) == ["etc"]
    assert entry(tree, "/etc").children == {}
    assert edit.remove("/etc/motd") is False
    assert edit.remove("/no/such/dir/file") is False
    assert edit.read("/etc/motd") is None


def test_get_and_read_follow_symlinked_parent_directories(tmp_path: Path) -> None:
    """Merged /usr: /lib and /sbin are links into /usr; looking through them is no write."""
    tree = flattened(
        tmp_path,
        [
            directory("usr"),
            directory("usr/lib"),
            file("usr/lib/os-release", b"ID=test\n"),
            directory("usr/sbin"),
            file("usr/sbin/agetty", b"elf"),
            symlink("lib", "usr/lib"),
            symlink("sbin", "usr/sbin"),
            directory("etc"),
            symlink("etc/os-release", "../usr/lib/os-release"),
        ],
    )
    edit = TreeEditor(tree, FS_TIME)
    assert edit.get("/sbin/agetty") is entry(tree, "/usr/sbin/agetty")
    assert edit.get("/lib/missing") is None
    assert edit.get("/etc/os-release") is entry(tree, "/etc/os-release")  # the link itself
    assert edit.read("/etc/os-release") is None  # a link is no file
    assert edit.read("/lib/os-release") == b"ID=test\n"  # captured as /usr/lib/os-release


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
