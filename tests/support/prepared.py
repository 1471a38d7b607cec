"""Helpers for the tree editor's and the preparation steps' tests: small images flattened
into trees, and the steps run over them as a disk build runs them."""

from __future__ import annotations

import warnings
from pathlib import Path

from oci2vm.arch import Arch
from oci2vm.layers.flatten import flatten
from oci2vm.prepare.step import Step, Target
from oci2vm.prepare.steps import SYSTEM_STEPS, run_steps
from oci2vm.sources import Fetch, resolve
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import DataReader, Inode, Kind, Tree, lookup
from oci2vm.tree.osinfo import describe
from support.layouts import Member, directory, file, symlink, write_layout

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated since 3.11, gone in 3.13: the reference for these tests

FS_TIME = 1_700_000_000
ROOT_UUID = "0ccd2b3c-7b0e-4f4c-9d8f-1a2b3c4d5e6f"
IDENTITY = "sha256:" + "ab" * 32
NOBODY_NOTE = (
    "nobody can log in: no --root-password, --ssh-key or --add-user with a password was "
    "given (the image's own accounts are unchanged)"
)
NO_NETWORK_NOTE = (
    "no network configuration written: the image has no systemd-networkd, ifupdown, "
    "NetworkManager, netplan, dhcpcd service or busybox udhcpc (install one for DHCP)"
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
# The steps that edit a system's files (the kernel check and grub.cfg need a kernel).
FILE_STEPS = tuple(step for step in SYSTEM_STEPS if step.name not in ("kernel", "bootcfg"))


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
) -> dict[str, object]:
    return {"root_password": password, "ssh_keys": keys, "hostname": hostname}


def target(tree: Tree, opts: dict[str, object], arch: Arch = Arch.AMD64) -> Target:
    return Target(
        os=describe(tree),
        arch=arch,
        source="test",
        identity=IDENTITY,
        root_uuid=ROOT_UUID,
        **opts,  # type: ignore[arg-type]
    )


def prepare(tree: Tree, opts: dict[str, object]) -> list[str]:
    """The steps that edit a system's files, in order, as a disk build runs them."""
    return run_steps(FILE_STEPS, TreeEditor(tree, FS_TIME), target(tree, opts))[0]


def run_step(
    tree: Tree, step: Step, opts: dict[str, object] | None = None, arch: Arch = Arch.AMD64
) -> list[str]:
    """One step alone, as the runner would run it (nothing if it does not apply)."""
    goal = target(tree, opts or options(), arch)
    return step.apply(TreeEditor(tree, FS_TIME), goal) if step.applies(goal) else []


def systemd_members(*, merged_usr: bool = False, udev: bool = True) -> list[Member]:
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
        file(f"{lib}/systemd/system/serial-getty@.service", SERIAL_GETTY_TEMPLATE),
        symlink("sbin/init", "/lib/systemd/systemd"),
        file("sbin/resize2fs", b"\x7fELF", mode=0o755),  # e2fsprogs: the root can grow
    ]
    if udev:
        members.append(file(f"{lib}/systemd/system/systemd-udevd.service", b"[Unit]\n"))
    return members


# The lines of Debian 12's serial-getty@.service that matter here.
SERIAL_GETTY_TEMPLATE = (
    b"[Unit]\nDescription=Serial Getty on %I\nBindsTo=dev-%i.device\n"
    b"After=dev-%i.device systemd-user-sessions.service getty-pre.target\n"
    b"After=rc-local.service\n\n[Service]\nExecStart=-/sbin/agetty - $TERM\n"
)


def with_data(tmp_path: Path, members: list[Member]) -> tuple[Tree, TreeEditor]:
    """A flattened tree whose streamed files can be read back (TreeEditor.read_file), as
    in a build."""
    write_layout(tmp_path / "img", [members])
    data: dict[Inode, bytes] = {}

    def sink(inode: Inode, reader: DataReader) -> None:
        data[inode] = b"".join(iter(lambda: bytes(reader.view(1 << 20)), b""))

    tree = flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()), sink=sink)

    def read_back(inode: Inode, _limit: int) -> bytes | None:
        # A file of another tree (a kernel image's) was streamed there, then grafted here.
        return data.get(inode) or {k.now(): v for k, v in data.items()}.get(inode)

    edit = TreeEditor(tree, FS_TIME, sink=sink, read_back=read_back)
    return tree, edit
