"""A busybox init with nothing to boot the system. Alpine's minirootfs (alpine:latest)
keeps an inittab that runs OpenRC, which the image does not have (busybox init then says
"can't run '/sbin/openrc'" at every boot and shutdown); images of busybox alone have no
/etc/init.d/rcS, the script busybox runs when there is no inittab. OpenRC's boot services
or an rcS would mount /dev/pts (without it no terminal can be opened: no SSH login, no
`script`), /dev/shm and /run, bring the loopback up and set the hostname.

So: the inittab's entries whose program is not in the image are commented out, and when no
sysinit entry is left, one runs oci2vm's boot script by busybox's own shell (the image's
/bin/sh may be missing). Entries of a command line that busybox hands to a shell (one with
shell characters in it) are left as they are.
"""

from __future__ import annotations

import posixpath
import re

from oci2vm.prepare import inittab
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor, text_lines
from oci2vm.tree.model import Kind, resolve_link
from oci2vm.tree.osinfo import InitSystem, busybox_path

SCRIPT = "/etc/oci2vm/boot.sh"
BOOT_SCRIPT = b"""\
# Written by oci2vm: what a booted system needs, which nothing in this image does (its
# busybox init has neither OpenRC nor /etc/init.d/rcS to run). Run by busybox's shell,
# with busybox's path as its argument: its applets may have no links in the image.
bb=${1:-/bin/busybox}
mounted() {
    [ -r /proc/mounts ] || return 1
    while read -r _ dir _; do [ "$dir" = "$1" ] && return 0; done < /proc/mounts
    return 1
}
$bb mount -o remount,rw / 2>/dev/null
mounted /proc || $bb mount -t proc proc /proc
mounted /sys || $bb mount -t sysfs sysfs /sys
$bb mkdir -p /dev/pts /dev/shm /run
mounted /dev/pts || $bb mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mounted /dev/shm || $bb mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
mounted /run || $bb mount -t tmpfs -o mode=0755,nosuid,nodev run /run
$bb ip link set lo up 2>/dev/null || $bb ifconfig lo 127.0.0.1 up
[ -s /etc/hostname ] && $bb hostname -F /etc/hostname
exit 0
"""
# busybox init (init.c, init_exec): a command with any of these runs by /bin/sh -c.
_SHELL_CHARS = re.compile(r"[~`!$^&*()=|\\{}\[\];\"'<>?]")


def applies(target: Target) -> bool:
    return system_mode(target) and target.os.init is InitSystem.BUSYBOX and not target.os.openrc


def apply(edit: TreeEditor, target: Target) -> list[str]:
    original, existed = inittab.current(edit, InitSystem.BUSYBOX)
    kept, dropped = [], []
    for line in text_lines(original):
        program = _missing_program(edit, line)
        if program is None:
            kept.append(line)
        else:
            kept.append(f"# oci2vm: {program} is not in the image\n# {line}")
            dropped.append(program)
    text = "".join(kept)
    notes = []
    if dropped:
        missing = ", ".join(sorted(set(dropped)))
        notes.append(f"/etc/inittab: the entries that run {missing} are commented out: "
                     "the image has no such program")  # fmt: skip
    if not any(fields[2] == "sysinit" for fields in inittab.entries(text)):
        busybox = busybox_path(edit.tree, target.os.init_path)
        edit.mkdir("/etc/oci2vm")
        edit.write(SCRIPT, BOOT_SCRIPT, mode=0o644, uid=0, gid=0)
        text = inittab.after_sysinit(text, f"::sysinit:{busybox} sh {SCRIPT} {busybox}\n")
    if text != original:
        inittab.save(edit, text, existed)
    return notes


def _missing_program(edit: TreeEditor, line: str) -> str | None:
    """The absolute program an inittab entry runs, when the image has no such file."""
    if line.lstrip().startswith("#"):
        return None
    fields = line.rstrip("\n").split(":", 3)
    if len(fields) != 4 or _SHELL_CHARS.search(fields[3]):
        return None
    words = fields[3].split()
    program = words[0].removeprefix("-") if words else ""
    if not program.startswith("/"):
        return None
    found = resolve_link(edit.tree.root, posixpath.normpath(program))
    return None if found is not None and found[1].kind is Kind.FILE else program


STEP = Step("busyboxboot", apply, applies)
