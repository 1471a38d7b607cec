"""/etc/inittab as the two inits that read it understand it: sysvinit's and busybox's.

sysvinit (inittab(5), Debian's sysvinit-core 3.06): `id:runlevels:action:process`, the id
at most 4 characters and unique, `initdefault` naming the runlevel; without an inittab
init asks for a runlevel on the console and runs no rcS, so a new one starts from the
package's own template (/usr/share/sysvinit/inittab, which sysvinit-core's postinst
copies) or our restatement of it. busybox init (init.c, parse_inittab): `tty::action:process`
with no id or runlevels, and built-in defaults only when there is no inittab.
`sysinit` entries run one after another, in file order, before any others, in both.
"""

from __future__ import annotations

import re

from oci2vm.errors import Oci2vmError
from oci2vm.tree.editor import TreeEditor, text_lines
from oci2vm.tree.osinfo import InitSystem

PATH = "/etc/inittab"
SYSVINIT_TEMPLATE = "/usr/share/sysvinit/inittab"
_LIMIT = 1 << 20
# What busybox init does when there is no /etc/inittab (init.c, parse_inittab), less its
# password-less askfirst shells: an inittab we create ends those defaults, so it restates
# them, above all unmounting at shutdown.
BUSYBOX_DEFAULT = (
    "::sysinit:/etc/init.d/rcS\n"
    "::ctrlaltdel:reboot\n"
    "::shutdown:umount -a -r\n"
    "::shutdown:swapoff -a\n"
    "::restart:init\n"
)
# The lines of Debian's /usr/share/sysvinit/inittab that boot a system, for an image
# with sysvinit's init but neither an inittab nor the template.
SYSVINIT_DEFAULT = (
    "id:2:initdefault:\n"
    "si::sysinit:/etc/init.d/rcS\n"
    "~~:S:wait:/sbin/sulogin --force\n"
    + "".join(f"l{n}:{n}:wait:/etc/init.d/rc {n}\n" for n in range(7))
    + "z6:6:respawn:/sbin/sulogin --force\n"
    "ca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now\n"
)
MAX_ID = 4


def current(edit: TreeEditor, init: InitSystem) -> tuple[str, bool]:
    """The inittab's text, and whether the image had one: else what init would do
    without one, written out (busybox's defaults; sysvinit's template)."""
    text = edit.read_text(PATH, _LIMIT) if edit.get(PATH) is not None else None
    if text is not None:  # (bytes that are no UTF-8 kept as they are: see save())
        return (text if not text or text.endswith("\n") else text + "\n"), True
    if init is InitSystem.BUSYBOX:
        return BUSYBOX_DEFAULT, False
    template = edit.read_text(SYSVINIT_TEMPLATE, _LIMIT)
    return (template if template else SYSVINIT_DEFAULT), False


def save(edit: TreeEditor, text: str, existed: bool) -> None:
    """Write the inittab back (a replaced one keeps its owner and mode)."""
    edit.write_text(PATH, text, mode=None if existed else 0o644, uid=None if existed else 0,
                    gid=None if existed else 0)  # fmt: skip


def entries(text: str) -> list[list[str]]:
    """The inittab's entries, each split in its four fields (comments skipped)."""
    found = []
    for line in text_lines(text):
        line = line.rstrip("\r\n")
        if line.strip() and not line.lstrip().startswith("#"):
            fields = line.split(":", 3)
            if len(fields) == 4:
                found.append(fields)
    return found


def free_id(text: str, wanted: str) -> str:
    """A sysvinit id no entry has: `wanted` cut to 4 characters, else one numbered."""
    taken = {fields[0] for fields in entries(text)}
    first = wanted[-MAX_ID:]
    if first not in taken:
        return first
    for n in range(100):
        candidate = f"{wanted[: MAX_ID - len(str(n))]}{n}"[-MAX_ID:]
        if candidate not in taken:
            return candidate
    raise Oci2vmError(f"/etc/inittab: no free id for an entry like {wanted!r}")


def after_sysinit(text: str, line: str) -> str:
    """`line` inserted after the last sysinit entry (so it runs once those have mounted
    and remounted what they do), or first when there is none."""
    lines = text_lines(text)
    last = -1
    for i, raw in enumerate(lines):
        fields = raw.split(":", 3)
        if not raw.lstrip().startswith("#") and len(fields) == 4 and fields[2] == "sysinit":
            last = i
    lines.insert(last + 1, line)
    return "".join(lines)


def runs(text: str, pattern: str) -> bool:
    """Whether an entry's process matches the regular expression `pattern`."""
    return any(re.search(pattern, fields[3]) for fields in entries(text))
