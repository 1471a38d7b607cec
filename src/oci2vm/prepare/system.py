"""The minimum that makes a booted image usable: root mounted read-write by UUID, a
hostname, a login on the serial console, a root password or SSH key, and no traces of
the container runtime."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.passwords import derived_salt, sha512_crypt
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import OsInfo

SERIAL = "ttyS0"
BAUD = 115200
# What busybox init does when there is no /etc/inittab (init.c, parse_inittab), less its
# password-less askfirst shells: an inittab we create ends those defaults, so it restates
# them, above all unmounting at shutdown.
BUSYBOX_DEFAULT_INITTAB = (
    "::sysinit:/etc/init.d/rcS\n"
    "::ctrlaltdel:reboot\n"
    "::shutdown:umount -a -r\n"
    "::shutdown:swapoff -a\n"
    "::restart:init\n"
)
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SystemOptions:
    root_uuid: str
    hostname: str
    root_password: str | None
    ssh_keys: tuple[bytes, ...]
    identity: str  # the build's identity, for derived salts


def hostname_from(name: str) -> str:
    """A valid hostname from an image name: docker.io/library/debian:12 -> debian."""
    base = name.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0].lower()
    base = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:63].strip("-")
    return base or "oci2vm"


def check_hostname(hostname: str) -> str:
    if not _HOSTNAME_RE.match(hostname):
        raise Oci2vmError(
            f"malformed --hostname {hostname!r}: use lowercase letters, digits and '-', at most 63"
        )
    return hostname


def read_ssh_keys(paths: tuple[Path, ...]) -> tuple[bytes, ...]:
    keys = []
    for path in paths:
        try:
            text = path.read_bytes()
        except OSError as e:
            raise Oci2vmError(f"--ssh-key {path}: {e.strerror}") from e
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines or not all(b" " in line and not line.startswith(b"-----") for line in lines):
            raise Oci2vmError(f"--ssh-key {path}: not a public key (expected 'TYPE KEY [COMMENT]')")
        keys.extend(lines)
    return tuple(keys)


def prepare_system(edit: TreeEditor, info: OsInfo, options: SystemOptions) -> list[str]:
    """Apply every step; returns notes for the user."""
    notes: list[str] = []
    edit.remove("/.dockerenv")
    edit.remove("/run/.containerenv")
    edit.write("/etc/fstab", fstab(options.root_uuid), mode=0o644, uid=0, gid=0)
    edit.write("/etc/hostname", f"{options.hostname}\n".encode(), mode=0o644, uid=0, gid=0)
    edit.write("/etc/hosts", hosts(options.hostname), mode=0o644, uid=0, gid=0)
    serial_getty(edit, info)
    if options.root_password is not None:
        set_root_password(edit, options.root_password, options.identity)
    if options.ssh_keys:
        edit.mkdir("/root", mode=0o700)
        edit.mkdir("/root/.ssh", mode=0o700)
        edit.write(
            "/root/.ssh/authorized_keys",
            b"".join(key + b"\n" for key in options.ssh_keys),
            mode=0o600,
            uid=0,
            gid=0,
        )
        if not _has_sshd(edit):
            notes.append("the image has no SSH server: the key only helps once one is installed")
    if options.root_password is None and not options.ssh_keys:
        notes.append(
            "nobody can log in: no --root-password or --ssh-key was given "
            "(the image's own accounts are unchanged)"
        )
    return notes


def fstab(root_uuid: str) -> bytes:
    return (
        "# Written by oci2vm.\n"
        "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>\n"
        f"UUID={root_uuid}  /  ext4  rw,errors=remount-ro  0  1\n"
    ).encode()


def hosts(hostname: str) -> bytes:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    ).encode()


def serial_getty(edit: TreeEditor, info: OsInfo) -> None:
    """A login prompt on the first serial port, the way each init system starts one."""
    if info.init == "systemd":
        unit = _systemd_unit(edit, "serial-getty@.service")
        if unit is not None:
            edit.mkdir("/etc/systemd")
            edit.mkdir("/etc/systemd/system")
            edit.mkdir("/etc/systemd/system/getty.target.wants")
            edit.symlink(
                f"/etc/systemd/system/getty.target.wants/serial-getty@{SERIAL}.service", unit
            )
        return
    if info.init in ("sysvinit", "busybox", "openrc"):
        inittab = (edit.read("/etc/inittab") or b"").decode("utf-8", "replace")
        if re.search(rf"^[^#].*\b{SERIAL}\b", inittab, re.M):
            return
        getty = _getty_command(edit)
        if info.init == "sysvinit":
            line = f"T0:23:respawn:{getty} -L {SERIAL} {BAUD} vt100\n"
        else:
            line = f"{SERIAL}::respawn:{getty} -L {BAUD} {SERIAL} vt100\n"
        if inittab and not inittab.endswith("\n"):
            inittab += "\n"
        if info.init == "busybox" and edit.get("/etc/inittab") is None:
            inittab = BUSYBOX_DEFAULT_INITTAB
        edit.write("/etc/inittab", (inittab + line).encode())


def _systemd_unit(edit: TreeEditor, name: str) -> str | None:
    for base in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        if edit.get(f"{base}/{name}") is not None:
            return f"{base}/{name}"
    return None


def _getty_command(edit: TreeEditor) -> str:
    for path in ("/sbin/agetty", "/sbin/getty", "/bin/getty", "/usr/sbin/getty"):
        if edit.get(path) is not None:
            return path
    return "/sbin/getty"


def _has_sshd(edit: TreeEditor) -> bool:
    return any(edit.get(p) is not None for p in ("/usr/sbin/sshd", "/usr/sbin/dropbear"))


def set_root_password(edit: TreeEditor, password: str, identity: str) -> None:
    """Store root's password hashed (SHA-512 crypt) in /etc/shadow; never in clear."""
    hashed = sha512_crypt(password, derived_salt(password, identity))
    passwd = (edit.read("/etc/passwd") or b"").decode("utf-8", "replace")
    if not re.search(r"^root:", passwd, re.M):
        passwd = "root:x:0:0:root:/root:/bin/sh\n" + passwd
        edit.write("/etc/passwd", passwd.encode(), mode=0o644, uid=0, gid=0)
    elif re.search(r"^root:(?!x:)", passwd, re.M):
        # A hash in passwd itself would win over shadow, and an empty field means no
        # password at all: anything but 'x' points it there.
        passwd = re.sub(r"^root:[^:]*:", "root:x:", passwd, count=1, flags=re.M)
        edit.write("/etc/passwd", passwd.encode())
    shadow_inode = edit.get("/etc/shadow")
    shadow = (edit.read("/etc/shadow") or b"").decode("utf-8", "replace")
    line_re = re.compile(r"^root:[^:]*:(.*)$", re.M)
    if line_re.search(shadow):
        shadow = line_re.sub(lambda m: f"root:{hashed}:{m[1]}", shadow, count=1)
    else:
        # The last-change field stays empty: 0 would force a new password at first login.
        shadow = f"root:{hashed}::0:99999:7:::\n" + shadow
    if shadow_inode is None:
        edit.write("/etc/shadow", shadow.encode(), mode=0o600, uid=0, gid=0)
    else:
        edit.write("/etc/shadow", shadow.encode())
