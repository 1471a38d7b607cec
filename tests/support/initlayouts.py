"""Small trees laid out as each init's packages lay them out (read from Debian bookworm's
sysvinit-core 3.06-4, openrc 0.45.2, runit 2.1.2-54 and runit-init, and Alpine's
busybox init), for the console, first-boot, identity and host-key steps' tests."""

from __future__ import annotations

from support.layouts import Member, directory, file, hardlink, symlink

# The lines of Debian's /usr/share/sysvinit/inittab that matter here.
DEBIAN_INITTAB = (
    b"id:2:initdefault:\n"
    b"si::sysinit:/etc/init.d/rcS\n"
    b"l2:2:wait:/etc/init.d/rc 2\n"
    b"1:2345:respawn:/sbin/getty --noclear 38400 tty1\n"
    b"#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n"
)
# Debian's openrc replaces sysv-rc's /etc/init.d/rc with this wrapper.
OPENRC_RC = b"#!/bin/sh\n# Wrapper of OpenRC called from inittab\nexec /sbin/openrc default\n"
ALPINE_INITTAB = (
    b"::sysinit:/sbin/openrc sysinit\n"
    b"::sysinit:/sbin/openrc boot\n"
    b"::wait:/sbin/openrc default\n"
    b"tty1::respawn:/sbin/getty 38400 tty1\n"
    b"::shutdown:/sbin/openrc shutdown\n"
)


def base() -> list[Member]:
    return [
        directory("bin"),
        directory("sbin"),
        directory("etc"),
        directory("etc/init.d"),
        directory("usr"),
        directory("usr/bin"),
        directory("usr/sbin"),
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    ]


def debian_sysvinit(
    inittab: bytes | None = DEBIAN_INITTAB, *, openrc: bool = False
) -> list[Member]:
    """sysvinit-core's /sbin/init (a file of its own), util-linux's agetty; with
    openrc, Debian's openrc package in place of sysv-rc."""
    members = [*base(), file("sbin/init", b"\x7fELF", mode=0o755)]
    members += [file("sbin/agetty", b"\x7fELF", mode=0o755), symlink("sbin/getty", "agetty")]
    if inittab is not None:
        members.append(file("etc/inittab", inittab))
    if openrc:
        members += [
            file("sbin/openrc", b"\x7fELF", mode=0o755),
            file("sbin/openrc-init", b"\x7fELF", mode=0o755),
            file("etc/init.d/rc", OPENRC_RC, mode=0o755),
            file("etc/init.d/agetty", b"#!/sbin/openrc-run\n", mode=0o755),
            directory("etc/runlevels"),
            directory("etc/runlevels/boot"),
            directory("etc/runlevels/default"),
            directory("etc/runlevels/sysinit"),
        ]
    return members


def debian_runit(*, getty_run: bool = False) -> list[Member]:
    """runit-init's /sbin/init -> /lib/runit/runit-init, runit's /etc/service link and
    runsvdir directories; getty-run's services when asked (enabled on tty1 only, as its
    package ships them before its postinst enables the rest)."""
    members = [
        *base(),
        directory("lib"),
        directory("lib/runit"),
        file("lib/runit/runit-init", b"\x7fELF", mode=0o755),
        file("sbin/runit", b"\x7fELF", mode=0o755),
        file("usr/bin/chpst", b"\x7fELF", mode=0o755),
        symlink("sbin/init", "/lib/runit/runit-init"),
        file("sbin/agetty", b"\x7fELF", mode=0o755),
        directory("etc/runit"),
        file("etc/runit/1", b"#!/bin/sh\n", mode=0o755),
        directory("etc/runit/runsvdir"),
        directory("etc/runit/runsvdir/default"),
        directory("etc/runit/runsvdir/single"),
        symlink("etc/service", "runit/runsvdir/current"),
        directory("etc/sv"),
    ]
    if getty_run:
        run = b"#!/lib/runit/invoke-run\n"
        for tty in ("tty1", "ttyS0"):
            members += [directory(f"etc/sv/getty-{tty}"),
                        file(f"etc/sv/getty-{tty}/run", run, mode=0o755)]  # fmt: skip
        members.append(symlink("etc/runit/runsvdir/default/getty-tty1", "../../../sv/getty-tty1"))
    return members


def openrc_init(*, agetty: bool = True) -> list[Member]:
    """openrc-init as PID 1 (Gentoo's or Alpine's openrc-init), no inittab."""
    members = [
        *base(),
        file("sbin/openrc-init", b"\x7fELF", mode=0o755),
        symlink("sbin/init", "openrc-init"),
        file("sbin/openrc", b"\x7fELF", mode=0o755),
        file("sbin/agetty", b"\x7fELF", mode=0o755),
        directory("etc/runlevels"),
        directory("etc/runlevels/boot"),
        directory("etc/runlevels/default"),
    ]
    if agetty:
        members.append(file("etc/init.d/agetty", b"#!/sbin/openrc-run\n", mode=0o755))
    return members


def busybox(inittab: bytes | None = None, *, linked: bool = True) -> list[Member]:
    """busybox init: /sbin/init a symlink to busybox (Alpine) or a hardlink of it."""
    members = [
        *base(),
        file("bin/busybox", b"\x7fELF", mode=0o755),
        symlink("sbin/getty", "/bin/busybox"),
    ]
    members.append(
        symlink("sbin/init", "/bin/busybox") if linked else hardlink("sbin/init", "bin/busybox")
    )
    if inittab is not None:
        members.append(file("etc/inittab", inittab))
    return members
