"""Login users (--add-user) and their SSH keys (--ssh-key USER=FILE), written into
passwd, shadow, group and gshadow consistently, as adduser would: the next free uid from
1000, a group of the same name, a home from /etc/skel owned by the user.

Debian's adduser (bookworm, 3.13x) makes homes 0700 (DIR_MODE) and takes uids from
FIRST_UID=1000 to LAST_UID=59999; the shadow fields after the hash follow its defaults
(max 99999 days, warn 7). A user with no password gets '*' (no password login, while key
login still works: '!' would lock the account for sshd without PAM).
"""

from __future__ import annotations

import re

from oci2vm.config import InitMode, UserSpec
from oci2vm.errors import Oci2vmError
from oci2vm.prepare.accounts import APP_MODE_LOGIN
from oci2vm.prepare.passwords import derived_salt, sha512_crypt
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, resolve_link

FIRST_ID, LAST_ID = 1000, 59999
SKEL = "/etc/skel"
SKEL_FILE_LIMIT = 1 << 20
SHELLS = ("/bin/bash", "/bin/sh")  # the new users' login shell: the first the image has
SUDO_GROUPS = ("sudo", "wheel")  # Debian's, then Fedora's and Alpine's
_ID = re.compile(r"[0-9]{1,10}")  # a uid or gid field (str.isdigit() takes '²' too)


def applies(target: Target) -> bool:
    return bool(target.config.users or target.user_ssh_keys)


def _table(edit: TreeEditor, path: str) -> list[list[str]] | None:
    """The file's lines split in fields (at newlines only, its bytes as they are)."""
    text = edit.read_text(path)
    if text is None:
        return None
    return [line.split(":") for line in text.split("\n") if line]


def _ids(rows: list[list[str]]) -> set[int]:
    """The ids (third field) of the passwd or group rows that have a well-formed one."""
    return {int(r[2]) for r in rows if len(r) > 2 and _ID.fullmatch(r[2])}


def _store(edit: TreeEditor, path: str, rows: list[list[str]], mode: int) -> None:
    """Write the rows back: a file that was there keeps its owner and mode (shadow:
    root:shadow 0640), else root's with `mode`."""
    edit.write_text(path, "".join(":".join(row) + "\n" for row in rows), new_mode=mode)


def _free(used: set[int]) -> int:
    for number in range(FIRST_ID, LAST_ID + 1):
        if number not in used:
            return number
    raise Oci2vmError(f"--add-user: no free id left between {FIRST_ID} and {LAST_ID}")


class Accounts:
    """The four account files of the tree, edited in memory and stored at the end."""

    def __init__(self, edit: TreeEditor) -> None:
        passwd = _table(edit, "/etc/passwd")
        if passwd is None:
            raise Oci2vmError(
                "--add-user: the image has no /etc/passwd: oci2vm cannot add users to it"
            )
        self.passwd = passwd
        self.shadow = _table(edit, "/etc/shadow")
        self.group = _table(edit, "/etc/group") or []
        self.gshadow = _table(edit, "/etc/gshadow")

    def find(self, name: str) -> list[str] | None:
        """The user's passwd row; one whose ids are no numbers is an error (no tool
        could log it in or own its files)."""
        row = next((row for row in self.passwd if row[0] == name), None)
        if row is not None and (
            len(row) < 7 or not (_ID.fullmatch(row[2]) and _ID.fullmatch(row[3]))
        ):
            raise Oci2vmError(
                f"the image's /etc/passwd has a malformed entry for {name!r}: "
                f"{':'.join(row)[:200]!r}"
            )
        return row

    def add(self, name: str, shell: str) -> tuple[int, int]:
        uid = _free(_ids(self.passwd))
        gids = _ids(self.group)
        own = next((r for r in self.group if r[0] == name and len(r) > 2), None)
        if own is not None and _ID.fullmatch(own[2]):
            gid = int(own[2])
        else:
            gid = uid if uid not in gids else _free(gids)
            self.group.append([name, "x", str(gid), ""])
            if self.gshadow is not None:
                self.gshadow.append([name, "!", "", ""])
        self.passwd.append([name, "x", str(uid), str(gid), ",,,", f"/home/{name}", shell])
        if self.shadow is not None:
            self.shadow.append([name, "*", "", "0", "99999", "7", "", "", ""])
        return uid, gid

    def set_password(self, name: str, hashed: str) -> None:
        row = self.find(name)
        assert row is not None
        if self.shadow is None:
            self.shadow = []
        entry = next((r for r in self.shadow if r[0] == name and len(r) > 1), None)
        if entry is None:
            self.shadow.append([name, hashed, "", "0", "99999", "7", "", "", ""])
        else:
            entry[1] = hashed
        row[1] = "x"  # a hash or nothing in passwd itself would win over shadow

    def join(self, name: str) -> str | None:
        """Add the user to the image's sudo group (sudo, else wheel): its name or None."""
        for group in SUDO_GROUPS:
            if not any(r[0] == group and len(r) >= 3 for r in self.group):
                continue
            for table in (self.group, self.gshadow or []):
                for row in table:
                    if row[0] == group and len(row) >= 3:
                        if len(row) == 3:
                            row.append("")  # 'sudo:x:27' without its members field
                        members = [m for m in row[-1].split(",") if m]
                        if name not in members:
                            row[-1] = ",".join([*members, name])
            return group
        return None

    def store(self, edit: TreeEditor) -> None:
        _store(edit, "/etc/passwd", self.passwd, 0o644)
        _store(edit, "/etc/group", self.group, 0o644)
        if self.shadow is not None:
            _store(edit, "/etc/shadow", self.shadow, 0o600)
        if self.gshadow is not None:
            _store(edit, "/etc/gshadow", self.gshadow, 0o600)


def apply(edit: TreeEditor, target: Target) -> list[str]:
    accounts = Accounts(edit)
    notes: list[str] = []
    shell = next((s for s in SHELLS if resolve_link(edit.tree.root, s) is not None), SHELLS[-1])
    if target.config.users:
        if resolve_link(edit.tree.root, shell) is None:
            notes.append(
                f"--add-user: the image has no shell ({', '.join(SHELLS)}): the user's is "
                f"{shell}, and a login fails until one is installed"
            )
        if target.mode is InitMode.APP:
            notes.append(APP_MODE_LOGIN.format("--add-user"))
    for spec in target.config.users:
        notes += _add_user(edit, accounts, spec, shell, target.identity)
    accounts.store(edit)
    for name, keys in target.user_ssh_keys:
        _authorize(edit, accounts, name, keys)
    return notes


def _add_user(
    edit: TreeEditor, accounts: Accounts, spec: UserSpec, shell: str, identity: str
) -> list[str]:
    notes = []
    if accounts.find(spec.name) is None:
        uid, gid = accounts.add(spec.name, shell)
        home = f"/home/{spec.name}"
        edit.mkdir("/home")
        if edit.get(home) is None:
            edit.mkdir(home, mode=0o700, uid=uid, gid=gid)
            _copy_skel(edit, SKEL, home, uid, gid)
        else:  # as adduser: not copied from /etc/skel, not given to the user
            notes.append(f"--add-user {spec.name}: {home} is in the image already, kept as it is")
    if spec.password is not None:
        salt = derived_salt(spec.password, f"{identity}:{spec.name}")
        accounts.set_password(spec.name, sha512_crypt(spec.password, salt))
    if spec.sudo:
        group = accounts.join(spec.name)
        if group is None:
            notes.append(f"--add-user {spec.name}:sudo: the image has no sudo or wheel group")
        else:
            notes += _grant(edit, group)
    return notes


SUDO_PROGRAMS = ("/usr/bin/sudo", "/bin/sudo", "/usr/sbin/sudo")
SUDOERS = "/etc/sudoers"
SUDOERS_DROPIN = "/etc/sudoers.d/oci2vm"
VENDOR_SUDOERS = "/usr/etc/sudoers"
_INCLUDEDIR = re.compile(r"^[ \t]*[@#]includedir[ \t]+/etc/sudoers\.d[ \t]*$", re.M)


def _grant(edit: TreeEditor, group: str) -> list[str]:
    """Let the group run anything through sudo when no rule of the image's does: Arch's
    and Alpine's sudo ship the wheel line commented out (Debian's grants %sudo)."""
    if not any(edit.get(p) is not None for p in SUDO_PROGRAMS):
        return []
    sudoers = edit.read_text(SUDOERS) or ""
    # openSUSE's sudo keeps its file in /usr/etc, read when /etc has none.
    vendor = "" if edit.get(SUDOERS) is not None else edit.read_text(VENDOR_SUDOERS) or ""
    texts = [sudoers, vendor]
    dropins = edit.directory("/etc/sudoers.d")
    for name in sorted((dropins.children or {}) if dropins is not None else {}):
        texts.append(edit.read_text(f"/etc/sudoers.d/{name}") or "")
    rule = re.compile(rf"^[ \t]*%{re.escape(group)}[ \t]+\S", re.M)
    if any(rule.search(text) for text in texts):
        return []
    line = f"%{group} ALL=(ALL:ALL) ALL"
    if _INCLUDEDIR.search(sudoers) or _INCLUDEDIR.search(vendor):
        edit.mkdir("/etc/sudoers.d", mode=0o750)
        edit.write(SUDOERS_DROPIN, f"# Written by oci2vm: --add-user NAME:sudo.\n{line}\n".encode(),
                   mode=0o440, uid=0, gid=0)  # fmt: skip
    elif edit.get(SUDOERS) is not None:
        text = f"{sudoers.rstrip(chr(10))}\n{line}\n" if sudoers else f"{line}\n"
        edit.write_text(SUDOERS, text, new_mode=0o440)
    else:
        return [f"sudo: the image has no /etc/sudoers, so no rule for {group} was added"]
    return [f"sudo: no rule of the image's lets {group} run commands: added '{line}'"]


def _copy_skel(edit: TreeEditor, source: str, dest: str, uid: int, gid: int) -> None:
    """Copy /etc/skel's tree into a new home, owned by the user (a walk by a stack of its
    own, in name order: an image's skel may be deeper than Python's recursion limit)."""
    skel = edit.directory(source)
    if skel is None or skel.children is None:
        return
    todo = [(f"{source}/{n}", f"{dest}/{n}", i) for n, i in sorted(skel.children.items())]
    todo.reverse()
    while todo:
        src, dst, inode = todo.pop()
        mode = inode.mode & 0o7777
        if inode.kind is Kind.DIR:
            edit.mkdir(dst, mode=mode, uid=uid, gid=gid)
            below = sorted((inode.children or {}).items(), reverse=True)
            todo.extend((f"{src}/{n}", f"{dst}/{n}", child) for n, child in below)
        elif inode.kind is Kind.SYMLINK and inode.target is not None:
            edit.symlink(dst, inode.target.decode("utf-8", "surrogateescape"))
        elif inode.kind is Kind.FILE:
            data = edit.read_file(src, SKEL_FILE_LIMIT)
            if data is not None:
                edit.write(dst, data, mode=mode, uid=uid, gid=gid)


def _authorize(edit: TreeEditor, accounts: Accounts, name: str, keys: tuple[bytes, ...]) -> None:
    row = accounts.find(name)
    if row is None:
        raise Oci2vmError(f"--ssh-key {name}=...: the image has no user {name!r} (add it "
                          "with --add-user)")  # fmt: skip
    uid, gid, home = int(row[2]), int(row[3]), row[5]
    if not home.startswith("/"):
        raise Oci2vmError(f"--ssh-key {name}=...: the image's /etc/passwd gives {name!r} no "
                          f"home directory (an absolute path): {home!r}")  # fmt: skip
    if edit.get(home) is None:
        edit.mkdir(home, mode=0o700, uid=uid, gid=gid)
    edit.mkdir(f"{home}/.ssh", mode=0o700, uid=uid, gid=gid)
    edit.write(f"{home}/.ssh/authorized_keys", b"".join(k + b"\n" for k in keys),
               mode=0o600, uid=uid, gid=gid)  # fmt: skip


STEP = Step("users", apply, applies)
