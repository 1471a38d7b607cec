"""What a flattened tree holds as an operating system: its /etc/os-release, the kernels
and initrds each distribution family lays out, and which init system would run.

Everything is read from the tree (and the small files captured while flattening);
nothing in the image is executed.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from oci2vm.tree.model import Inode, Kind, Tree, lookup, resolve_link

_VERSION_RE = re.compile(r"(\d+|[a-z]+)")


class InitSystem(StrEnum):
    """The program /sbin/init really is (PID 1), which decides how a console login and
    early boot commands are configured. What starts the services under it is another
    matter: OsInfo.openrc says whether OpenRC does."""

    SYSTEMD = "systemd"
    SYSVINIT = "sysvinit"  # sysvinit's init: /etc/inittab in its syntax
    OPENRC = "openrc"  # openrc-init as PID 1 (Gentoo, Alpine's openrc-init): no inittab
    BUSYBOX = "busybox"  # busybox init: /etc/inittab in busybox's syntax
    RUNIT = "runit"  # runit-init (Debian, Void): stages /etc/runit/1-3 and runsvdir
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Kernel:
    version: str
    path: str  # absolute path of the kernel image in the tree
    initrd: str | None  # absolute path of its initrd, if one was found


@dataclass(frozen=True, slots=True)
class OsInfo:
    os_release: dict[str, str]
    kernels: tuple[Kernel, ...]  # newest first
    init: InitSystem
    init_path: str | None
    openrc: bool = False  # OpenRC starts the services (under sysvinit's or busybox's init too)
    # The path the kernel would run (/sbin/init), which may be a link: a multi-call binary
    # (busybox) picks its applet by that name, so it is what an initramfs must exec.
    init_entry: str | None = None

    @property
    def init_name(self) -> str:
        """The init as reports name it: Debian's openrc under sysvinit's init is
        `sysvinit+openrc`, Alpine's under busybox init `busybox+openrc`."""
        if self.openrc and self.init in (InitSystem.SYSVINIT, InitSystem.BUSYBOX):
            return f"{self.init.value}+openrc"
        return self.init.value

    @property
    def pretty_name(self) -> str:
        r = self.os_release
        return (
            r.get("PRETTY_NAME")
            or " ".join(v for v in (r.get("NAME"), r.get("VERSION")) if v)
            or "unknown"
        )


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5): KEY=value lines, values shell-quoted."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        result[key.strip()] = parts[0] if parts else ""
    return result


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for kernel versions: numeric parts compare as numbers (6.1.0-10 > 6.1.0-9)."""
    return tuple(
        (0, int(p)) if p.isdigit() else (1, p) for p in _VERSION_RE.findall(version.lower())
    )


def _children(tree: Tree, path: str) -> Mapping[str, Inode]:
    found = resolve_link(tree.root, path)
    if found is None or found[1].children is None:
        return {}
    return found[1].children


def find_kernels(tree: Tree) -> tuple[Kernel, ...]:
    """Kernels as Debian/Ubuntu (/boot/vmlinuz-V + initrd.img-V), Alpine
    (/boot/vmlinuz-FLAVOR + initramfs-FLAVOR), Fedora/RHEL (/lib/modules/V/vmlinuz +
    /boot/initramfs-V.img; bootc images: /usr/lib/modules/V/initramfs.img) lay them out,
    plus the /vmlinuz and /boot/vmlinuz links."""
    found: dict[str, Kernel] = {}
    boot = _children(tree, "/boot")

    def initrd_for(version: str) -> str | None:
        for name in (
            f"initrd.img-{version}",
            f"initramfs-{version}.img",
            f"initramfs-{version}",
            f"initrd-{version}",
            f"initrd-{version}.img",
        ):
            if name in boot and _is_file(tree, f"/boot/{name}"):
                return f"/boot/{name}"
        for base in ("/usr/lib/modules", "/lib/modules"):  # bootc images keep it there
            if _is_file(tree, f"{base}/{version}/initramfs.img"):
                return f"{base}/{version}/initramfs.img"
        return None

    for name in sorted(boot):
        if name.startswith("vmlinuz-") and _is_file(tree, f"/boot/{name}"):
            version = name.removeprefix("vmlinuz-")
            found[version] = Kernel(version, f"/boot/{name}", initrd_for(version))
    modules = sorted(
        set(_children(tree, "/lib/modules")) | set(_children(tree, "/usr/lib/modules"))
    )
    for version in modules:
        if version in found:
            continue
        for base in ("/lib/modules", "/usr/lib/modules"):
            path = f"{base}/{version}/vmlinuz"
            if _is_file(tree, path):
                found[version] = Kernel(version, path, initrd_for(version))
                break
    _name_flavours(tree, found, modules)
    if not found:
        for link, initrd_link in (
            ("/vmlinuz", "/initrd.img"),
            ("/boot/vmlinuz", "/boot/initrd.img"),
        ):
            target = resolve_link(tree.root, link)
            if target is not None and target[1].kind is Kind.FILE:
                initrd = resolve_link(tree.root, initrd_link)
                found[target[0]] = Kernel(
                    posixpath.basename(target[0]).removeprefix("vmlinuz-") or "default",
                    target[0],
                    initrd[0] if initrd is not None and initrd[1].kind is Kind.FILE else None,
                )
                break
    return tuple(sorted(found.values(), key=lambda k: version_key(k.version), reverse=True))


def _name_flavours(tree: Tree, found: dict[str, Kernel], modules: list[str]) -> None:
    """Give a kernel named by its flavour its release: Alpine's /boot/vmlinuz-lts (its
    modules in /lib/modules/6.6.58-0-lts), Arch's /boot/vmlinuz-linux (a copy of
    /usr/lib/modules/6.11.5-arch1-1/vmlinuz, which it then stands for, with its
    initramfs-linux.img). Its release is the one of the modules directories that holds a
    kernel of its very size, else the one whose name ends in -FLAVOUR, else, for the
    image's only kernel, its only modules directory; a name that matches none, or that is
    a release already (whatever modules there are), is left as it is."""
    in_modules = {v for v in modules if (k := found.get(v)) is not None and k.path.endswith(
        f"/{v}/vmlinuz"
    )}  # fmt: skip
    unclaimed = [v for v in modules if v not in found or v in in_modules]
    flavours = [
        k
        for k in found.values()
        if k.version not in modules
        and k.path.startswith("/boot/")
        and not _RELEASE.match(k.version)  # 6.1.0-18 is a release, if another's
    ]
    for kernel in flavours:
        size = _size(tree, kernel.path)
        choices = (
            [v for v in unclaimed if v in in_modules and _size(tree, found[v].path) == size],
            [v for v in unclaimed if v.endswith(f"-{kernel.version}")],
            # the image's only kernel, and the only modules (none of another's vmlinuz)
            [v for v in unclaimed if v not in found] if len(found) == 1 else [],
        )
        release = next((c[0] for c in choices if len(c) == 1), None)
        if release is None:
            continue
        twin = found.get(release)
        del found[kernel.version]
        initrd = kernel.initrd or (twin.initrd if twin is not None else None)
        found[release] = Kernel(release, kernel.path, initrd)
        unclaimed.remove(release)


_RELEASE = re.compile(r"\d+\.\d+")


def _size(tree: Tree, path: str) -> int:
    found = resolve_link(tree.root, path)
    return found[1].size if found is not None else -1


def _is_file(tree: Tree, path: str) -> bool:
    found = resolve_link(tree.root, path)
    return found is not None and found[1].kind is Kind.FILE


# Names the real /sbin/init has under each init (the link's target, resolved in the tree):
# Debian's runit-init links /sbin/init to /lib/runit/runit-init, Void's to runit-init;
# sysvinit-core ships /sbin/init itself; Alpine links it to /bin/busybox.
RUNIT_NAMES = ("runit-init", "runit")
BUSYBOX_NAMES = ("busybox", "busybox.static")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox", "/bin/busybox.static")
INIT_CANDIDATES = ("/sbin/init", "/usr/sbin/init", "/bin/init")
OPENRC_PATHS = ("/sbin/openrc", "/usr/sbin/openrc", "/bin/openrc", "/usr/bin/openrc")


def init_entry(tree: Tree) -> str | None:
    """The first of the kernel's init paths that leads to a file, as named (not resolved)."""
    for candidate in INIT_CANDIDATES:
        found = resolve_link(tree.root, candidate)
        if found is not None and found[1].kind is Kind.FILE:
            return candidate
    return None


def detect_init(tree: Tree) -> tuple[InitSystem, str | None]:
    """Which init /sbin/init (or the usual alternatives) really is, by the name of the
    file it resolves to (a hardlink of busybox counts as busybox)."""
    for candidate in INIT_CANDIDATES:
        found = resolve_link(tree.root, candidate)
        if found is None or found[1].kind is not Kind.FILE:
            continue
        real, inode = found
        name = posixpath.basename(real)
        if name == "systemd" or "/systemd/" in real:
            return InitSystem.SYSTEMD, real
        if name in BUSYBOX_NAMES or _same_file(tree, inode, BUSYBOX_PATHS):
            return InitSystem.BUSYBOX, real
        if name in RUNIT_NAMES:
            return InitSystem.RUNIT, real
        if name == "openrc-init":
            return InitSystem.OPENRC, real
        return InitSystem.SYSVINIT, real
    for path in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd"):
        if _is_file(tree, path):
            return InitSystem.SYSTEMD, path
    return InitSystem.NONE, None


def busybox_path(tree: Tree, init_path: str | None) -> str:
    """A path that runs busybox itself, for a busybox init: busybox picks its applet by
    the name it is run as, so a hardlink named init (docker's busybox image) would run
    init again. The init's own path when it is named busybox, else the usual places."""
    if init_path is not None and posixpath.basename(init_path) in BUSYBOX_NAMES:
        return init_path
    return next((p for p in BUSYBOX_PATHS if _is_file(tree, p)), "/bin/busybox")


def _same_file(tree: Tree, inode: Inode, paths: tuple[str, ...]) -> bool:
    for path in paths:
        found = resolve_link(tree.root, path)
        if found is not None and found[1] == inode:
            return True
    return False


def uses_openrc(tree: Tree, init: InitSystem) -> bool:
    """Whether OpenRC starts the services: openrc-init runs it, and where sysvinit's or
    busybox's init runs, an installed /sbin/openrc is what their inittab calls (Debian's
    openrc replaces sysv-rc's /etc/init.d/rc and rcS with wrappers of openrc; Alpine's
    inittab runs /sbin/openrc)."""
    if init is InitSystem.OPENRC:
        return True
    if init not in (InitSystem.SYSVINIT, InitSystem.BUSYBOX):
        return False
    return any(lookup(tree.root, path) is not None for path in OPENRC_PATHS)


def describe(tree: Tree) -> OsInfo:
    text = tree.read("/etc/os-release")
    if text is None:
        text = tree.read("/usr/lib/os-release")
    release = parse_os_release(text.decode("utf-8", "replace")) if text else {}
    init, init_path = detect_init(tree)
    return OsInfo(
        release,
        find_kernels(tree),
        init,
        init_path,
        uses_openrc(tree, init),
        init_entry(tree) if init_path is not None else None,
    )
