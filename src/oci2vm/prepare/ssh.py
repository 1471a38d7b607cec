"""SSH public keys for root's authorized_keys, read and checked before anything is built."""

from __future__ import annotations

from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.util.smallfiles import read_small
from oci2vm.util.units import KIB

SSH_SERVERS = ("/usr/sbin/sshd", "/usr/sbin/dropbear")
KEYS_LIMIT = 256 * KIB  # an authorized_keys file of a thousand keys fits


def read_ssh_keys(paths: tuple[Path, ...]) -> tuple[bytes, ...]:
    keys = []
    for path in paths:
        text = read_small(path, KEYS_LIMIT, "--ssh-key")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines or not all(b" " in line and not line.startswith(b"-----") for line in lines):
            raise Oci2vmError(f"--ssh-key {path}: not a public key (expected 'TYPE KEY [COMMENT]')")
        keys.extend(lines)
    return tuple(keys)


def applies(target: Target) -> bool:
    return bool(target.ssh_keys)


def apply(edit: TreeEditor, target: Target) -> list[str]:
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
