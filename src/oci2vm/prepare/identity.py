"""What makes one machine distinct, taken out of the image so that every VM built from it
gets its own at first boot: the machine ID, D-Bus's copy of it, and saved random seeds.

Facts from machine-id(5): systemd 247 and later take an /etc/machine-id holding the word
`uninitialized` as "first boot" (units with ConditionFirstBoot run, presets apply) and
write a fresh ID there; an empty file would give a new ID each boot without first-boot
semantics. systemd also reads /var/lib/dbus/machine-id when it is not a symlink, so a copy
left there would bring the image's ID back.

Other inits have nothing that writes a machine ID, so an emptied one would stay empty in
every VM: a first-boot fragment writes one from the kernel's random UUID instead (the
format machine-id(5) gives: 32 lowercase hex digits and a newline).
"""

from __future__ import annotations

from oci2vm.prepare import firstboot
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind
from oci2vm.tree.osinfo import InitSystem

MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"
FIRST_BOOT = b"uninitialized\n"
RANDOM_SEEDS = ("/var/lib/systemd/random-seed", "/var/lib/urandom/random-seed")
FRAGMENT = "10-machine-id"
MAKE_MACHINE_ID = """\
# A machine ID of this machine's own (machine-id(5)), from the kernel's random UUID less
# its dashes, with the shell's builtins alone (an image may lack tr).
if [ ! -s /etc/machine-id ]; then
	read -r uuid < /proc/sys/kernel/random/uuid
	id=$(IFS=-; set -- $uuid; printf %s "$@")
	[ ${#id} -eq 32 ] && printf '%s\\n' "$id" > /etc/machine-id && chmod 0444 /etc/machine-id
fi
"""


def apply(edit: TreeEditor, target: Target) -> list[str]:
    systemd = target.os.init is InitSystem.SYSTEMD
    old = edit.get(MACHINE_ID)
    if systemd or old is not None:
        content = FIRST_BOOT if systemd else b""
        if old is not None and old.kind is Kind.FILE:
            edit.write(MACHINE_ID, content)  # keeps the image's owner and mode
        else:
            edit.remove(MACHINE_ID)  # a symlink (to /run, say) is replaced by a file
            edit.write(MACHINE_ID, content, mode=0o444, uid=0, gid=0)
    dbus = edit.get(DBUS_MACHINE_ID)
    if dbus is not None and dbus.kind is Kind.FILE:  # a symlink to /etc/machine-id stays
        edit.remove(DBUS_MACHINE_ID)
    for path in RANDOM_SEEDS:
        edit.remove(path)
    if not systemd and firstboot.supported(target.os):
        firstboot.add(edit, FRAGMENT, MAKE_MACHINE_ID)
    return []


STEP = Step("identity", apply, system_mode)
