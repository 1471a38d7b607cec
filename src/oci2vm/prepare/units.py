"""Enabling a service the way `systemctl enable` and `update-rc.d`/`rc-update` would, by
writing the symlinks ourselves: nothing in the image runs on the host.

systemctl enable reads the unit's [Install] section: a link in TARGET.wants/ for each
WantedBy=, in TARGET.requires/ for each RequiredBy=, an alias link for each Alias=, and the
units named by Also= enabled in turn (systemd.unit(5), "[Install] Section Options").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Inode

UNIT_DIRS = ("/lib/systemd/system", "/usr/lib/systemd/system")
ETC_UNITS = "/etc/systemd/system"
DEFAULT_WANTED_BY = ("multi-user.target",)
_UNIT_LIMIT = 1 << 16


def unit_path(edit: TreeEditor, name: str) -> str | None:
    """Where the image ships unit `name`, or None."""
    for base in UNIT_DIRS:
        if edit.get(f"{base}/{name}") is not None:
            return f"{base}/{name}"
    return None


def install_section(text: str) -> dict[str, list[str]]:
    """The [Install] section's settings, each a list of the words its lines name."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "Install" and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).extend(value.split())
    return found


# A unit name as systemd takes it (unit_name_is_valid(): no '/', so no path): an image's
# [Install] words that are none are left out, as systemctl refuses them.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+\.[a-z]+")


def enable_unit(edit: TreeEditor, name: str, skip: tuple[str, ...] = ()) -> bool:
    """Enable unit `name` as systemctl enable would (units in `skip` are not followed
    through Also=, nor those met before); False when the image has no such unit."""
    if unit_path(edit, name) is None:
        return False
    todo, seen = [name], {*skip, name}
    while todo:
        unit = todo.pop()
        path = unit_path(edit, unit)
        if path is None:  # (an Also= unit the image does not have)
            continue
        text = (edit.read_file(path, _UNIT_LIMIT) or b"").decode("utf-8", "replace")
        install = {
            key: [word for word in words if _UNIT_NAME.fullmatch(word)]
            for key, words in install_section(text).items()
        }
        _link_unit(edit, unit, path, install)
        for also in reversed(install.get("Also", [])):  # (depth first, in their order)
            if also not in seen and not enabled(edit, also):
                seen.add(also)
                todo.append(also)
    return True


def _link_unit(edit: TreeEditor, name: str, path: str, install: Mapping[str, list[str]]) -> None:
    """The links of systemctl enable for unit `name` at `path`, from its [Install]."""
    wanted = install.get("WantedBy") or ([] if install.get("RequiredBy") else DEFAULT_WANTED_BY)
    links = [f"{t}.wants/{name}" for t in wanted]
    links += [f"{t}.requires/{name}" for t in install.get("RequiredBy", [])]
    links += [alias for alias in install.get("Alias", []) if alias != name]
    edit.mkdir("/etc/systemd")
    edit.mkdir(ETC_UNITS)
    for link in links:
        directory, _, _ = link.rpartition("/")
        if directory:
            edit.mkdir(f"{ETC_UNITS}/{directory}")
        edit.symlink(f"{ETC_UNITS}/{link}", path)


def enabled(edit: TreeEditor, name: str) -> bool:
    """Whether some .wants/ or .requires/ directory under /etc/systemd/system holds `name`."""
    units = edit.directory(ETC_UNITS)
    if units is None or units.children is None:
        return False
    return any(
        (found := edit.directory(f"{ETC_UNITS}/{directory}")) is not None
        and found.children is not None
        and name in found.children
        for directory in units.children
        if directory.endswith((".wants", ".requires"))
    )


def lsb_default_start(text: str) -> list[str]:
    """The runlevels an init script's LSB header starts it in (Default-Start:)."""
    for line in text.splitlines():
        if line.startswith("# Default-Start:"):
            return line.removeprefix("# Default-Start:").split()
    return []


def enable_sysv(edit: TreeEditor, script: str, order: int) -> None:
    """S-links for /etc/init.d/`script` in the rcN.d of its Default-Start runlevels, when
    no rc directory links it yet. Debian's startpar orders scripts by /etc/init.d/.depend.*
    when insserv wrote them; the number orders them otherwise."""
    etc = edit.get("/etc")
    for name, child in sorted((etc.children or {}).items() if etc else ()):
        links: Mapping[str, Inode] = child.children or {}
        if name.startswith("rc") and name.endswith(".d") and script in {n[3:] for n in links}:
            return
    text = (edit.read_file(f"/etc/init.d/{script}", _UNIT_LIMIT) or b"").decode("utf-8", "replace")
    for level in lsb_default_start(text) or ["2", "3", "4", "5"]:
        edit.mkdir(f"/etc/rc{level}.d")
        edit.symlink(f"/etc/rc{level}.d/S{order:02d}{script}", f"../init.d/{script}")


def openrc_boot_scripts(edit: TreeEditor) -> bool:
    """Whether the image has OpenRC's own boot scripts (Alpine's, Gentoo's: devfs and
    the rest), not Debian's openrc, which runs the LSB scripts."""
    return edit.get("/etc/init.d/devfs") is not None


def enable_openrc(edit: TreeEditor, script: str, runlevel: str = "default") -> bool:
    """/etc/runlevels/RUNLEVEL/SCRIPT, as rc-update add does, unless some runlevel has it;
    whether it added one."""
    levels = edit.get("/etc/runlevels")
    for child in (levels.children or {}).values() if levels else ():
        if child.children and script in child.children:
            return False
    edit.mkdir("/etc/runlevels")
    edit.mkdir(f"/etc/runlevels/{runlevel}")
    edit.symlink(f"/etc/runlevels/{runlevel}/{script}", f"/etc/init.d/{script}")
    return True


RUNSVDIR = "/etc/runit/runsvdir/default"  # what runsvdir runs (Void's /var/service)
SV = "/etc/sv"


def enable_runit(edit: TreeEditor, service: str) -> bool:
    """Link /etc/sv/SERVICE into the default runsvdir, unless it is there; whether it
    added the link."""
    enabled = edit.get(RUNSVDIR)
    if enabled is not None and service in (enabled.children or {}):
        return False
    for directory in ("/etc/runit", "/etc/runit/runsvdir", RUNSVDIR):
        edit.mkdir(directory)
    edit.symlink(f"{RUNSVDIR}/{service}", f"{SV}/{service}")
    return True
