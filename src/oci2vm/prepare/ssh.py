"""SSH public keys for root's authorized_keys, read and checked before anything is built;
and the image's SSH server enabled when it is installed but nothing starts it (pacman, apk
and xbps enable no service on install, as Debian's and Fedora's packages do)."""

from __future__ import annotations

from pathlib import Path

from oci2vm.config import InitMode
from oci2vm.errors import Oci2vmError
from oci2vm.prepare import inittab, units
from oci2vm.prepare.accounts import APP_MODE_LOGIN
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import InitSystem
from oci2vm.util.smallfiles import read_small
from oci2vm.util.units import KIB

SSH_SERVERS = ("/usr/sbin/sshd", "/usr/sbin/dropbear")
KEYS_LIMIT = 256 * KIB  # an authorized_keys file of a thousand keys fits


def read_ssh_keys(paths: tuple[Path, ...]) -> tuple[bytes, ...]:
    keys = []
    for path in paths:
        text = read_small(path, KEYS_LIMIT, "--ssh-key")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines or not all(_key_line(line) for line in lines):
            raise Oci2vmError(f"--ssh-key {path}: not a public key (expected 'TYPE KEY [COMMENT]')")
        keys.extend(lines)
    return tuple(keys)


def _key_line(line: bytes) -> bool:
    """An authorized_keys line: words, no PEM armour (a private key given by mistake), no
    control bytes (a binary file, a NUL that would cut the line short for sshd)."""
    printable = line.translate(None, _CONTROL) == line
    return b" " in line and not line.startswith(b"-----") and printable


_CONTROL = bytes(range(32)).replace(b"\t", b"") + b"\x7f"


# What each init runs an SSH server as: systemd units (a socket counts: Ubuntu's
# ssh.socket), OpenRC and sysvinit scripts, runit services.
SYSTEMD_UNITS = ("sshd.service", "ssh.service", "dropbear.service")
SYSTEMD_STARTERS = (*SYSTEMD_UNITS, "ssh.socket", "sshd.socket", "dropbear.socket")
SCRIPTS = ("sshd", "ssh", "dropbear")


def applies(target: Target) -> bool:
    return bool(target.ssh_keys or target.config.user_ssh_keys)


# Under busybox init without OpenRC nothing else would start it: an inittab entry does,
# after the sysinit entries (the host keys are made at first boot by then).
BUSYBOX_ENTRIES = {
    "/usr/sbin/sshd": "::respawn:/bin/sh -c 'mkdir -p /run/sshd /var/empty; exec "
    "/usr/sbin/sshd -D -e'\n",
    "/usr/sbin/dropbear": "::respawn:/usr/sbin/dropbear -F -R -E\n",
}


def apply(edit: TreeEditor, target: Target) -> list[str]:
    notes = _root_keys(edit, target) if target.ssh_keys else []
    if not any(edit.get(p) is not None for p in SSH_SERVERS):
        return notes
    if target.mode is InitMode.APP:
        return [*notes, APP_MODE_LOGIN.format("--ssh-key")]
    return [*notes, *enable_server(edit, target)]


def enable_server(edit: TreeEditor, target: Target) -> list[str]:
    """Start the image's SSH server at boot, where nothing does yet."""
    init = target.os.init
    if init is InitSystem.SYSTEMD:
        if any(units.enabled(edit, name) for name in SYSTEMD_STARTERS):
            return []
        name = next((n for n in SYSTEMD_UNITS if units.unit_path(edit, n) is not None), None)
        if name is None or not units.enable_unit(edit, name):
            return ["the image's SSH server has no systemd unit to start it: start it yourself"]
        return [f"enabled {name}: the image has an SSH server that nothing started"]
    if init is InitSystem.BUSYBOX and not target.os.openrc:
        return _busybox_entry(edit)
    script = next((n for n in SCRIPTS if edit.get(f"/etc/init.d/{n}") is not None), None)
    if target.os.openrc and script is not None:
        if not units.enable_openrc(edit, script):
            return []
        return [f"enabled OpenRC's {script} in the default runlevel: nothing started it"]
    if init is InitSystem.RUNIT:
        service = next((n for n in SCRIPTS if edit.get(f"{units.SV}/{n}/run") is not None), None)
        if service is None or not units.enable_runit(edit, service):
            return []
        return [f"enabled the runit service {service}: nothing started it"]
    if init is InitSystem.SYSVINIT and script is not None:
        units.enable_sysv(edit, script, 20)
    return []


def _busybox_entry(edit: TreeEditor) -> list[str]:
    text, existed = inittab.current(edit, InitSystem.BUSYBOX)
    if inittab.runs(text, r"\b(sshd|dropbear)\b"):
        return []
    server = next(p for p in SSH_SERVERS if edit.get(p) is not None)
    inittab.save(edit, text + BUSYBOX_ENTRIES[server], existed)
    return [f"/etc/inittab: {server} respawned by busybox init (nothing else would start it)"]


def _root_keys(edit: TreeEditor, target: Target) -> list[str]:
    edit.mkdir("/root", mode=0o700)
    edit.mkdir("/root/.ssh", mode=0o700)
    edit.write(
        "/root/.ssh/authorized_keys",
        b"".join(key + b"\n" for key in target.ssh_keys),
        mode=0o600,
        uid=0,
        gid=0,
    )
    if not any(edit.get(p) is not None for p in SSH_SERVERS):
        return ["the image has no SSH server: the key only helps once one is installed"]
    return []


STEP = Step("ssh", apply, applies)
