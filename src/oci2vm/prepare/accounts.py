"""Root's password, stored hashed (SHA-512 crypt) in /etc/shadow, never in clear; and a
note when the build gives nobody a way to log in."""

from __future__ import annotations

import re

from oci2vm.config import InitMode
from oci2vm.prepare.passwords import derived_salt, sha512_crypt
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor

# In app mode oci2vm's init runs the workload and nothing else: no getty, no sshd of the
# image's unless the workload is one.
APP_MODE_LOGIN = (
    "{} is written, but in app mode only the image's Entrypoint and Cmd run (no getty, no "
    "services): a login works if the workload offers one; --init system boots the image's "
    "init, if it has one"
)


def apply(edit: TreeEditor, target: Target) -> list[str]:
    if target.root_password is not None:
        set_root_password(edit, target.root_password, target.identity)
        if target.mode is InitMode.APP:
            return [APP_MODE_LOGIN.format("--root-password")]
        return []
    logins = (
        target.ssh_keys
        or target.user_ssh_keys
        or any(user.password is not None for user in target.config.users)
    )
    if not logins and target.mode is InitMode.SYSTEM:  # app mode has no login
        return [
            "nobody can log in: no --root-password, --ssh-key or --add-user with a password "
            "was given (the image's own accounts are unchanged)"
        ]
    return []


def set_root_password(edit: TreeEditor, password: str, identity: str) -> None:
    """Store root's password hashed in /etc/shadow, pointing /etc/passwd there. The other
    lines stay as they are, byte for byte."""
    hashed = sha512_crypt(password, derived_salt(password, identity))
    passwd = edit.read_text("/etc/passwd") or ""
    if not re.search(r"^root:", passwd, re.M):
        passwd = "root:x:0:0:root:/root:/bin/sh\n" + passwd
        edit.write_text("/etc/passwd", passwd, mode=0o644, uid=0, gid=0)
    elif re.search(r"^root:(?!x:)", passwd, re.M):
        # A hash in passwd itself would win over shadow, and an empty field means no
        # password at all: anything but 'x' points it there.
        passwd = re.sub(r"^root:[^:\n]*:", "root:x:", passwd, count=1, flags=re.M)
        edit.write_text("/etc/passwd", passwd)
    shadow = edit.read_text("/etc/shadow") or ""
    line_re = re.compile(r"^root:[^:\n]*:(.*)$", re.M)
    if line_re.search(shadow):
        shadow = line_re.sub(lambda m: f"root:{hashed}:{m[1]}", shadow, count=1)
    else:
        # The last-change field stays empty: 0 would force a new password at first login.
        shadow = f"root:{hashed}::0:99999:7:::\n" + shadow
    edit.write_text("/etc/shadow", shadow, new_mode=0o600)


STEP = Step("accounts", apply)
