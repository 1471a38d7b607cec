"""SSH host keys taken out of the image and made at first boot instead, so that two VMs
built from one image never share a host key (a key baked into a public image is known to
everyone who pulled it).

What the distributions ship (their packages, read for this): Debian's openssh-server
makes the keys in its postinst only, and its ssh.service and /etc/init.d/ssh refuse to
start without them; Fedora's openssh-server has sshd-keygen@.service (pulled in by
sshd.service) that makes missing keys at boot; Alpine's /etc/init.d/sshd runs
`ssh-keygen -A` before starting. So a systemd image without a keygen unit gets one of ours
(a oneshot `ssh-keygen -A`, which makes every missing default key type), and a SysV or
OpenRC script that does not make keys gets one guarded line that does. Under runit
(Debian's runit-services has its own /etc/sv/ssh, which runs in place of the init script)
and where no script starts sshd, the first-boot commands make them.
"""

from __future__ import annotations

from oci2vm.prepare import firstboot
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind
from oci2vm.tree.osinfo import InitSystem

SSHD = "/usr/sbin/sshd"
SSH_DIR = "/etc/ssh"
UNIT_NAME = "oci2vm-ssh-keygen.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
# Units of the image that already make missing host keys at boot (Fedora, RHEL; Arch's
# sshdgenkeys.service, which its sshd.service wants).
KEYGEN_UNITS = (
    "sshd-keygen@.service", "sshd-keygen.service", "sshd-keygen.target", "sshdgenkeys.service",
)  # fmt: skip
INIT_SCRIPTS = ("/etc/init.d/ssh", "/etc/init.d/sshd")
SCRIPT_LIMIT = 1 << 20
FRAGMENT = "20-ssh-host-keys"
MAKE_KEYS = (
    "# SSH host keys of this machine's own.\n"
    "[ ! -x /usr/bin/ssh-keygen ] || /usr/bin/ssh-keygen -A\n"
)
KEYGEN_LINE = b"[ -e /etc/ssh/ssh_host_ed25519_key ] || /usr/bin/ssh-keygen -A  # added by oci2vm\n"
UNIT = b"""\
# Written by oci2vm: the image's SSH host keys were removed, so that every machine made
# from it has its own; this makes them at first boot.
[Unit]
Description=Generate SSH host keys
Before=ssh.service sshd.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""


def host_keys(edit: TreeEditor) -> list[str]:
    """The host key files in /etc/ssh (ssh_host_*_key and their .pub), sorted."""
    ssh = edit.directory(SSH_DIR)  # (followed where it is a symlink: ../usr/etc/ssh)
    if ssh is None or ssh.children is None:
        return []
    return sorted(
        name
        for name in ssh.children
        if name.startswith("ssh_host_") and (name.endswith("_key") or name.endswith("_key.pub"))
    )


def apply(edit: TreeEditor, target: Target) -> list[str]:
    if edit.get(SSHD) is None:
        return []
    removed = host_keys(edit)
    for name in removed:
        edit.remove(f"{SSH_DIR}/{name}")
    init = target.os.init
    if init is InitSystem.SYSTEMD:
        made = _systemd_unit(edit)
    else:
        made = init is not InitSystem.RUNIT and _init_script(edit)
        if not made and firstboot.supported(target.os):
            firstboot.add(edit, FRAGMENT, MAKE_KEYS)
            made = True
    notes = []
    if removed:
        notes.append(
            f"the image's SSH host keys were removed ({len(removed)} files in {SSH_DIR}): "
            "each VM makes its own at first boot"
        )
    if not made:
        notes.append(
            "nothing in the image makes SSH host keys at boot and oci2vm knows no way to "
            "add it for this init: run `ssh-keygen -A` in the VM before starting sshd"
        )
    return notes


def _systemd_unit(edit: TreeEditor) -> bool:
    if any(edit.get(f"{d}/{u}") is not None for d in UNIT_DIRS for u in KEYGEN_UNITS):
        return True
    edit.write(UNIT_PATH, UNIT, mode=0o644, uid=0, gid=0)
    edit.mkdir("/etc/systemd/system/multi-user.target.wants")
    edit.symlink(WANTS_LINK, f"/etc/systemd/system/{UNIT_NAME}")
    return True


def _init_script(edit: TreeEditor) -> bool:
    """A guarded `ssh-keygen -A` right after the shebang of the image's ssh init script,
    unless the script makes keys already (Alpine's does)."""
    made = False
    for path in INIT_SCRIPTS:
        script = edit.read_file(path, SCRIPT_LIMIT)
        if script is None:
            continue
        if b"ssh-keygen" in script:
            made = True
            continue
        first, newline, rest = script.partition(b"\n")
        inode = edit.get(path)
        if not first.startswith(b"#!") or inode is None or inode.kind is not Kind.FILE:
            continue  # a link's target is edited where it lives, not here
        edit.write(path, first + newline + KEYGEN_LINE + rest)
        made = True
    return made


STEP = Step("hostkeys", apply, system_mode)
