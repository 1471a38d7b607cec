"""busybox-init: a small system image whose /sbin/init is busybox, as Buildroot or a hand-made
busybox system has it: Debian's static busybox, the applets a login and a network need at
the paths `busybox --list-full` gives, root in passwd/shadow/group (password locked), and an
/etc/init.d/rcS mounting the kernel's filesystems. No /etc/inittab (busybox init's defaults
run rcS; oci2vm writes one with the serial getty), no kernel, no /etc/os-release."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .assemble import PATH_ENV
from .busybox import fetch_busybox, one_layer_image
from .tarentry import TarEntry, resolve_links

# Bump a version whenever its recipe changes: the cache is keyed by it, so the fixture rebuilds.
BUSYBOX_INIT_VERSION = 1

# Where busybox 1.35 (Debian's busybox-static) installs each applet (`busybox --list-full`).
INIT_APPLETS = (
    "bin/ash", "bin/cat", "bin/chmod", "bin/chown", "bin/cp", "bin/date", "bin/df",
    "bin/dmesg", "bin/echo", "bin/false", "bin/grep", "bin/hostname", "bin/kill", "bin/ln",
    "bin/login", "bin/ls", "bin/mkdir", "bin/mknod", "bin/mount", "bin/mv", "bin/ping",
    "bin/ps", "bin/pwd", "bin/rm", "bin/rmdir", "bin/sed", "bin/sh", "bin/sleep", "bin/stat",
    "bin/stty", "bin/su", "bin/sync", "bin/touch", "bin/true", "bin/umount", "bin/uname",
    "bin/vi", "sbin/getty", "sbin/halt", "sbin/ifconfig", "sbin/init", "sbin/ip",
    "sbin/klogd", "sbin/mdev", "sbin/modprobe", "sbin/poweroff", "sbin/reboot", "sbin/route",
    "sbin/swapoff", "sbin/swapon", "sbin/sysctl", "sbin/syslogd", "sbin/udhcpc", "usr/bin/[",
    "usr/bin/awk", "usr/bin/cut", "usr/bin/env", "usr/bin/find", "usr/bin/free",
    "usr/bin/head", "usr/bin/id", "usr/bin/nc", "usr/bin/nslookup", "usr/bin/passwd",
    "usr/bin/sha256sum", "usr/bin/tail", "usr/bin/test", "usr/bin/tr", "usr/bin/tty",
    "usr/bin/uptime", "usr/bin/wc", "usr/bin/wget", "usr/bin/which", "usr/bin/whoami",
    "usr/bin/xargs", "usr/sbin/chroot", "usr/sbin/nologin",
)  # fmt: skip

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
SHADOW = "root:*:19675:0:99999:7:::\nnobody:*:19675:0:99999:7:::\n"  # no password login
GROUP = "root:x:0:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n"
HOSTNAME = "busybox-init\n"
PROFILE = f"export {PATH_ENV}\n"  # login shells of any user find /sbin's applets too
# busybox init with no /etc/inittab runs /etc/init.d/rcS as ::sysinit: (init.c).
RCS = """#!/bin/sh
# busybox-init's boot script: the kernel's filesystems, as a busybox system mounts them,
# then the root read-write, /etc/fstab, the hostname and the loopback interface.
mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts devpts /dev/pts
mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -o remount,rw /
[ -f /etc/fstab ] && mount -a
[ -s /etc/hostname ] && hostname -F /etc/hostname
ip link set lo up
"""
BUSYBOX_INIT_CONFIG: dict[str, object] = {"Env": [PATH_ENV], "Cmd": ["/bin/sh"]}
DIRS = (
    ("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("etc/init.d", 0o755), ("home", 0o755),
    ("proc", 0o555), ("root", 0o700), ("run", 0o755), ("sbin", 0o755), ("sys", 0o555),
    ("tmp", 0o1777), ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755), ("var", 0o755),
    ("var/log", 0o755),
)  # fmt: skip


def init_entries(busybox: bytes) -> list[TarEntry]:
    """The one layer's members, in walk order; applets are links to /bin/busybox, as
    `busybox --install -s` makes them."""
    entries = [TarEntry(path, "dir", mode=mode) for path, mode in DIRS]
    entries += [
        TarEntry("bin/busybox", "file", mode=0o755, data=busybox),
        *(TarEntry(a, "symlink", mode=0o777, linkname="/bin/busybox") for a in INIT_APPLETS),
        TarEntry("etc/group", "file", data=GROUP.encode()),
        TarEntry("etc/hostname", "file", data=HOSTNAME.encode()),
        TarEntry("etc/init.d/rcS", "file", mode=0o755, data=RCS.encode()),
        TarEntry("etc/passwd", "file", data=PASSWD.encode()),
        TarEntry("etc/profile", "file", data=PROFILE.encode()),
        TarEntry("etc/shadow", "file", mode=0o600, data=SHADOW.encode()),
    ]
    return resolve_links(entries)


def build_busybox_init(out: Path, cache: Path) -> dict[str, object]:
    deb, busybox = fetch_busybox(cache)
    facts, entry_count = one_layer_image(
        out, "busybox-init", init_entries(busybox), BUSYBOX_INIT_CONFIG, [], oci_archive=False
    )
    facts.update(
        name="busybox-init",
        entries=entry_count,
        busybox_deb=deb,
        busybox_sha256=hashlib.sha256(busybox).hexdigest(),
        applets=list(INIT_APPLETS),
    )
    return facts
