"""/boot/grub/grub.cfg: an entry per kernel the image holds, newest first, with the root
found by UUID and the console on screen and on the architecture's first serial port.

When the tree keeps Debian's kernel links (/vmlinuz and /initrd.img, or in /boot), a first,
default entry boots through them: the kernel packages installed in the guest later move
them (linux-base's linux-update-symlinks, run by every linux-image postinst and postrm),
so the next boot takes the new kernel with no grub.cfg rewritten. GRUB's ext2 driver
follows symlinks, relative and absolute (those from the filesystem's root, which is the
guest's /). The build's own entries stay after it as fallbacks.
"""

from __future__ import annotations

import re

from oci2vm.boot import grub
from oci2vm.config import FIRSTBOOT_OFF
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, resolve_link
from oci2vm.tree.osinfo import InitSystem

KERNEL_IMG_CONF = "/etc/kernel-img.conf"
# linux-base's DebianLinux.pm image_stem(): vmlinux on a few architectures, vmlinuz elsewhere.
IMAGE_STEMS = ("vmlinuz", "vmlinux")
FOLLOW_TITLE = "Linux (newest installed, via {})"
_CONF_LINE = re.compile(r"^\s*(\w+)\s*=\s*(.*?)\s*$")


def apply(edit: TreeEditor, target: Target) -> list[str]:
    unlabeled = selinux_unlabeled(edit)  # (before /boot/grub is made: it has no label)
    edit.mkdir("/boot")
    edit.mkdir("/boot/grub")
    entries = [grub.BootEntry(k.version, k.path, k.initrd) for k in target.os.kernels]
    first = following_entry(edit) if entries else None
    notes = []
    words = []
    if target.os.init is InitSystem.SYSTEMD:
        # The machine-id is "uninitialized" (identity.py): a first boot, on which
        # systemd-firstboot asks on the console for what the image lacks (a time zone, a
        # locale) and waits for a key, where no one is there to press one.
        words.append(FIRSTBOOT_OFF)
    if unlabeled:
        words.append("enforcing=0")
        notes.append(
            f"SELinux is enforcing in /etc/selinux/config, and {unlabeled}: the disk boots it "
            "permissive (enforcing=0 in grub.cfg); to enforce, relabel (`fixfiles -F onboot`, "
            "reboot) and drop enforcing=0"
        )
    extra = " ".join(words)
    cfg = grub.grub_cfg(
        entries,
        target.root_uuid,
        serial_console=target.serial_console,
        read_only=False,
        first=first,
        cmdline_extra=extra,
    )
    edit.write("/boot/grub/grub.cfg", cfg.encode(), mode=0o644, uid=0, gid=0)
    return notes


SELINUX_CONFIG = "/etc/selinux/config"
LABEL = "security.selinux"
_SELINUX_LINE = re.compile(r"^\s*(SELINUX|SELINUXTYPE)\s*=\s*(\S+)", re.M)


def selinux_unlabeled(edit: TreeEditor) -> str:
    """Why the kernel would deny logins and services, if it would: /etc/selinux/config
    enforces a policy the image has installed (/etc/selinux/TYPE/policy) while its files
    carry no security.selinux labels, or only some do (a labelled image, and what the
    preparation steps added: a file without a label is unlabeled_t, which confined
    daemons may not read). "" when none."""
    text = (edit.read_file(SELINUX_CONFIG, 64 << 10) or b"").decode("utf-8", "replace")
    settings = dict(_SELINUX_LINE.findall(text))
    if settings.get("SELINUX", "").lower() != "enforcing":
        return ""
    if edit.get(f"/etc/selinux/{settings.get('SELINUXTYPE', 'targeted')}/policy") is None:
        return ""
    for path in ("/etc/passwd", "/etc/selinux/config", "/usr/bin", "/etc"):
        found = resolve_link(edit.tree.root, path)
        if found is not None and LABEL in found[1].xattrs:
            break
    else:
        return "the image's files carry no labels (layers seldom do)"
    missing = _without_label(edit)
    if not missing:
        return ""
    return (
        f"files without a label ({len(missing)}, the first {missing[0]}) would be out of "
        "reach of confined services"
    )


def _without_label(edit: TreeEditor) -> list[str]:
    """The files and directories without a security.selinux label, in name order."""
    found = []
    todo = [("", edit.tree.root)]
    while todo:
        path, directory = todo.pop()
        children = directory.children
        if children is None:
            continue
        for name, inode in children.items():
            if inode.kind not in (Kind.FILE, Kind.DIR):
                continue
            if LABEL not in inode.xattrs:
                found.append(f"{path}/{name}")
            if inode.kind is Kind.DIR:
                todo.append((f"{path}/{name}", inode))
    return sorted(found)


def link_dirs(edit: TreeEditor) -> list[str]:
    """Where linux-update-symlinks keeps the links, per /etc/kernel-img.conf (as
    DebianLinux.pm's read_kernelimg_conf reads it): [] when it keeps none (do_symlinks =
    no, or no_symlinks = yes); else image_dest ("/"), or /boot with link_in_boot = yes.
    The other of / and /boot follows, for images whose links were made by hand."""
    conf: dict[str, str] = {}
    text = edit.read_file(KERNEL_IMG_CONF, 64 << 10)
    for line in (text or b"").decode("utf-8", "replace").splitlines():
        found = _CONF_LINE.match(line.split("#", 1)[0])
        if found:
            conf[found.group(1).lower()] = found.group(2)

    def yes(name: str) -> bool:
        return conf.get(name, "").lower() in ("yes", "true", "1")

    if conf.get("do_symlinks", "yes").lower() in ("no", "false", "0") or yes("no_symlinks"):
        return []
    chosen = "/boot/" if yes("link_in_boot") else conf.get("image_dest", "/").rstrip("/") + "/"
    return [chosen] + [d for d in ("/", "/boot/") if d != chosen]


def _points_to_file(edit: TreeEditor, path: str) -> bool:
    """A symlink (what the kernel packages maintain, not a copied file) leading to a
    regular file inside the tree."""
    link = edit.get(path)
    if link is None or link.kind is not Kind.SYMLINK:
        return False
    found = resolve_link(edit.tree.root, path)
    return found is not None and found[1].kind is Kind.FILE


def following_entry(edit: TreeEditor) -> grub.BootEntry | None:
    """The entry booting Debian's kernel and initrd links, when the tree has both (an
    image without an initrd link would boot with none: today's entries serve it)."""
    for directory in link_dirs(edit):
        for stem in IMAGE_STEMS:
            kernel, initrd = f"{directory}{stem}", f"{directory}initrd.img"
            if _points_to_file(edit, kernel) and _points_to_file(edit, initrd):
                return grub.BootEntry("", kernel, initrd, title=FOLLOW_TITLE.format(kernel))
    return None


def applies(target: Target) -> bool:
    """Not when the kernel is booted directly (oci2vm run): no boot loader reads it."""
    return target.boot_outputs is None


STEP = Step("bootcfg", apply, applies)
