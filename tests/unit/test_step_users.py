"""The users step and --add-user / --ssh-key USER=FILE: accounts written consistently."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oci2vm.cli import config_from, parse
from oci2vm.config import Config, UserSpec
from oci2vm.errors import Oci2vmError
from oci2vm.prepare import accounts, users
from oci2vm.tree.model import BytesData, Kind, lookup
from support.layouts import Member, directory, file, symlink
from support.prepared import (
    DEBIAN_PASSWD,
    DEBIAN_SHADOW,
    IDENTITY,
    content,
    entry,
    flattened,
    libc_crypt,
    options,
    run_step,
    target,
    with_data,
)

GROUP = b"root:x:0:\nsudo:x:27:\nusers:x:100:\nuid1000:x:1000:\n"
GSHADOW = b"root:*::\nsudo:*::\nusers:*::\nuid1000:!::\n"


def image(*, gshadow: bool = True, extra: tuple[Member, ...] = ()) -> list[Member]:
    members = [
        directory("etc"),
        file("etc/passwd", DEBIAN_PASSWD),
        file("etc/shadow", DEBIAN_SHADOW, mode=0o640, gid=42),
        file("etc/group", GROUP),
        directory("etc/skel"),
        file("etc/skel/.bashrc", b"# bashrc\n"),
        directory("etc/skel/.config", mode=0o700),
        file("etc/skel/.config/app", b"x=1\n", mode=0o600),
        symlink("etc/skel/.profile-link", ".bashrc"),
        directory("bin"),
        file("bin/bash", b"elf", mode=0o755),
        *extra,
    ]
    if gshadow:
        members.append(file("etc/gshadow", GSHADOW, mode=0o640, gid=42))
    return members


def opts(
    *specs: UserSpec, keys: tuple[tuple[str, tuple[bytes, ...]], ...] = ()
) -> dict[str, object]:
    return {**options(), "config": Config(users=specs), "user_ssh_keys": keys}


def lines(tree: object, path: str) -> list[str]:
    return content(tree, path).decode().splitlines()  # type: ignore[arg-type]


def test_a_new_user_gets_consistent_entries_a_home_and_the_skeleton(tmp_path: Path) -> None:
    tree = flattened(tmp_path, image())
    assert run_step(tree, users.STEP, opts(UserSpec("alice", "s3cret", sudo=True))) == []
    # uid 1000 is free in passwd; gid 1000 is taken by a group, so the next free one.
    assert lines(tree, "/etc/passwd")[-1] == "alice:x:1000:1001:,,,:/home/alice:/bin/bash"
    assert lines(tree, "/etc/group")[-1] == "alice:x:1001:"
    assert "sudo:x:27:alice" in lines(tree, "/etc/group")
    assert lines(tree, "/etc/gshadow")[-1] == "alice:!::"
    assert "sudo:*::alice" in lines(tree, "/etc/gshadow")
    name, hashed, *rest = lines(tree, "/etc/shadow")[-1].split(":")
    assert (name, rest) == ("alice", ["", "0", "99999", "7", "", "", ""])
    assert libc_crypt("s3cret", hashed) == hashed
    shadow = entry(tree, "/etc/shadow")
    assert (shadow.mode & 0o7777, shadow.gid) == (0o640, 42)  # the image's own
    home = entry(tree, "/home/alice")
    assert (home.kind, home.mode & 0o7777, home.uid, home.gid) == (Kind.DIR, 0o700, 1000, 1001)
    bashrc = entry(tree, "/home/alice/.bashrc")
    assert (bashrc.uid, bashrc.gid, bashrc.mode & 0o7777) == (1000, 1001, 0o644)
    assert content(tree, "/home/alice/.bashrc") == b"# bashrc\n"
    app = entry(tree, "/home/alice/.config/app")
    assert (app.uid, app.mode & 0o7777) == (1000, 0o600)
    assert content(tree, "/home/alice/.config/app") == b"x=1\n"
    assert entry(tree, "/home/alice/.config").uid == 1000
    assert entry(tree, "/home/alice/.profile-link").target == b".bashrc"


def test_users_take_the_next_free_ids_and_no_password_means_star(tmp_path: Path) -> None:
    tree = flattened(tmp_path, image(gshadow=False))
    run_step(tree, users.STEP, opts(UserSpec("alice"), UserSpec("bob")))
    passwd = lines(tree, "/etc/passwd")
    assert passwd[-2:] == [
        "alice:x:1000:1001:,,,:/home/alice:/bin/bash",
        "bob:x:1001:1002:,,,:/home/bob:/bin/bash",
    ]
    assert lines(tree, "/etc/shadow")[-1] == "bob:*::0:99999:7:::"
    assert lookup(tree.root, "/etc/gshadow") is None  # Alpine has none: none is made


def test_a_hash_is_deterministic_and_differs_between_users(tmp_path: Path) -> None:
    hashes = []
    for run in ("a", "b"):
        tree = flattened(tmp_path / run, image())
        run_step(tree, users.STEP, opts(UserSpec("alice", "pw"), UserSpec("bob", "pw")))
        hashes.append([line.split(":")[1] for line in lines(tree, "/etc/shadow")[-2:]])
    assert hashes[0] == hashes[1]
    assert hashes[0][0] != hashes[0][1]  # the salt is derived from the name as well


def test_an_existing_user_gets_only_the_password_and_sudo(tmp_path: Path) -> None:
    passwd = DEBIAN_PASSWD + b"alice:!:1000:1000:Alice:/home/alice:/bin/zsh\n"
    extra = (file("etc/passwd", passwd), directory("home"),
             directory("home/alice", mode=0o750, uid=1000, gid=1000))  # fmt: skip
    tree = flattened(tmp_path, image(extra=extra))
    run_step(tree, users.STEP, opts(UserSpec("alice", "pw", sudo=True)))
    assert lines(tree, "/etc/passwd")[-1] == "alice:x:1000:1000:Alice:/home/alice:/bin/zsh"
    assert lines(tree, "/etc/group") == [*GROUP.decode().replace("sudo:x:27:", "sudo:x:27:alice")
                                         .splitlines()]  # fmt: skip
    name, hashed = lines(tree, "/etc/shadow")[-1].split(":")[:2]
    assert name == "alice" and libc_crypt("pw", hashed) == hashed
    assert lookup(tree.root, "/home/alice/.bashrc") is None
    assert entry(tree, "/home/alice").mode & 0o7777 == 0o750


def test_sudo_falls_back_to_wheel_and_says_when_there_is_neither(tmp_path: Path) -> None:
    wheel = (file("etc/group", b"root:x:0:\nwheel:x:10:root\n"),)
    tree = flattened(tmp_path / "a", image(gshadow=False, extra=wheel))
    assert run_step(tree, users.STEP, opts(UserSpec("alice", sudo=True))) == []
    assert "wheel:x:10:root,alice" in lines(tree, "/etc/group")
    bare = (file("etc/group", b"root:x:0:\n"),)
    tree = flattened(tmp_path / "b", image(gshadow=False, extra=bare))
    assert run_step(tree, users.STEP, opts(UserSpec("alice", sudo=True))) == [
        "--add-user alice:sudo: the image has no sudo or wheel group"
    ]


def test_a_named_users_ssh_keys_are_owned_by_them(tmp_path: Path) -> None:
    tree = flattened(tmp_path, image())
    keys = (("alice", (b"ssh-ed25519 AAAA a@h", b"ssh-rsa BBBB")),)
    run_step(tree, users.STEP, opts(UserSpec("alice"), keys=keys))
    ssh = entry(tree, "/home/alice/.ssh")
    assert (ssh.mode & 0o7777, ssh.uid, ssh.gid) == (0o700, 1000, 1001)
    auth = entry(tree, "/home/alice/.ssh/authorized_keys")
    assert (auth.mode & 0o7777, auth.uid, auth.gid) == (0o600, 1000, 1001)
    assert (
        content(tree, "/home/alice/.ssh/authorized_keys") == b"ssh-ed25519 AAAA a@h\nssh-rsa BBBB\n"
    )
    with pytest.raises(Oci2vmError, match=r"no user 'carol'"):
        run_step(flattened(tmp_path / "b", image()), users.STEP,
                 opts(keys=(("carol", (b"ssh-rsa X",)),)))  # fmt: skip


def test_an_image_without_passwd_is_a_clear_error(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/hostname", b"x\n")])
    with pytest.raises(Oci2vmError, match=r"the image has no /etc/passwd"):
        run_step(tree, users.STEP, opts(UserSpec("alice")))


def test_the_step_applies_only_when_asked(tmp_path: Path) -> None:
    tree = flattened(tmp_path, image())
    assert run_step(tree, users.STEP, opts()) == []
    assert content(tree, "/etc/passwd") == DEBIAN_PASSWD
    assert lookup(tree.root, "/home") is None
    assert IDENTITY  # the salt's context is the build identity (see the determinism test)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("alice", UserSpec("alice")),
        ("alice:pw", UserSpec("alice", "pw")),
        ("alice:sudo", UserSpec("alice", None, True)),
        ("alice:p:w:sudo", UserSpec("alice", "p:w", True)),
        ("alice:pw:sudo:", UserSpec("alice", "pw:sudo:")),
        ("svc-1_x", UserSpec("svc-1_x")),
    ],
)
def test_user_specs_parse(text: str, spec: UserSpec) -> None:
    assert UserSpec.parse(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Alice", "expected a user name"),
        ("", "expected a user name"),
        ("1abc:pw", "expected a user name"),
        ("root:pw", "use --root-password"),
        ("alice:", "the password is empty"),
    ],
)
def test_bad_user_specs_are_refused(text: str, message: str) -> None:
    with pytest.raises(Oci2vmError, match=message):
        UserSpec.parse(text)


def test_cli_takes_add_user_and_ssh_keys_for_root_and_users(tmp_path: Path) -> None:
    root_key = tmp_path / "a=b.pub"  # an existing file whose name has '=' stays root's
    root_key.write_text("ssh-rsa X\n")
    argv = ["build", "img", "-o", "d.img", "--add-user", "alice:pw:sudo", "--add-user", "bob",
            "--ssh-key", "alice=~/k.pub", "--ssh-key", str(root_key), "--ssh-key", "k2.pub",
            "-u", "nobody"]  # fmt: skip
    config = config_from(parse(argv))
    assert config.users == (UserSpec("alice", "pw", True), UserSpec("bob"))
    assert config.user_ssh_keys == (("alice", Path("~/k.pub")),)
    assert config.ssh_keys == (root_key, Path("k2.pub"))
    assert config.user == "nobody"  # the workload's user is another option


def test_cli_refuses_a_bad_add_user(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["build", "img", "-o", "d.img", "--add-user", "Bad Name"])
    assert "expected a user name" in capsys.readouterr().err


def test_config_defaults_have_no_users() -> None:
    config = Config()
    assert (config.users, config.user_ssh_keys) == ((), ())
    assert dataclasses.replace(config, users=(UserSpec("x"),)).users == (UserSpec("x"),)


@pytest.mark.parametrize("where", ["etc-symlinked", "passwd-over-capture-limit"])
def test_accounts_out_of_reach_of_the_capture_are_read_back_and_kept(
    tmp_path: Path, where: str
) -> None:
    # Flattening keeps the bytes of small /etc/* files; /etc -> usr/etc, or a passwd of
    # thousands of users, are read back from where they were streamed instead of being
    # taken for empty files (which the steps rewrote with their own lines alone).
    extra = b""
    if where == "passwd-over-capture-limit":
        extra = b"".join(b"u%d:x:%d:100::/home/u:/bin/sh\n" % (i, 2000 + i) for i in range(9000))
    etc = "usr/etc" if where == "etc-symlinked" else "etc"
    members = [
        directory("usr"),
        directory(etc),
        file(f"{etc}/passwd", DEBIAN_PASSWD + extra),
        file(f"{etc}/shadow", DEBIAN_SHADOW, mode=0o640, gid=42),
        file(f"{etc}/group", GROUP),
        directory("bin"),
        file("bin/bash", b"elf", mode=0o755),
    ]
    if where == "etc-symlinked":
        members.append(symlink("etc", "usr/etc"))
    tree, edit = with_data(tmp_path, members)
    goal = target(tree, {**opts(UserSpec("bob", "pw")), "root_password": "secret"})
    for step in (accounts.STEP, users.STEP):
        step.apply(edit, goal)
    passwd = (edit.read_file("/etc/passwd") or b"").decode().splitlines()
    image_lines = (DEBIAN_PASSWD + extra).decode().splitlines()
    assert passwd[: len(image_lines)] == image_lines and passwd[-1].startswith("bob:x:")
    shadow = (edit.read_file("/etc/shadow") or b"").decode()
    assert "\ndaemon:*:" in shadow and shadow.startswith("root:$6$") and "\nbob:$6$" in shadow
    assert b"\nusers:x:100:" in (edit.read_file("/etc/group") or b"")


@pytest.mark.parametrize("spec", ["add-user", "ssh-key"])
@pytest.mark.parametrize(
    "bad", ["bob:x:notanumber:100::/home/bob:/bin/sh", "bob:x:1000", "bob:x:\u00b2:1:::"]
)
def test_an_existing_user_with_a_malformed_entry_is_refused(
    tmp_path: Path, spec: str, bad: str
) -> None:
    passwd = DEBIAN_PASSWD + bad.encode() + b"\n"
    tree = flattened(tmp_path, [*image(), file("etc/passwd", passwd)])
    given = opts(UserSpec("bob", "pw")) if spec == "add-user" else opts(keys=(("bob", (b"k",)),))
    with pytest.raises(Oci2vmError, match=rf"malformed entry for 'bob': '{bad}'$"):
        run_step(tree, users.STEP, given)


def test_a_symlinked_shadow_is_replaced_by_a_file_as_private_as_its_target(
    tmp_path: Path,
) -> None:
    members = [
        *image(),
        directory("usr"),
        directory("usr/share"),
        file("usr/share/shadow", DEBIAN_SHADOW, mode=0o640, gid=42),
        symlink("etc/shadow", "../usr/share/shadow"),
    ]
    tree, edit = with_data(tmp_path, members)
    users.STEP.apply(edit, target(tree, opts(UserSpec("bob", "pw"))))
    shadow = entry(tree, "/etc/shadow")
    assert (shadow.kind, shadow.mode, shadow.uid, shadow.gid) == (Kind.FILE, 0o640, 0, 42)
    assert content(tree, "/etc/shadow").startswith(DEBIAN_SHADOW)


def test_other_entries_with_odd_ids_are_left_alone_when_adding_a_user(tmp_path: Path) -> None:
    # '²' passes str.isdigit() but not int(): such a line of another user, or group, is
    # kept as it is and only its id is not counted as taken.
    odd = b"odd:x:\xc2\xb2:\xc2\xb2::/:/bin/sh\n"
    group = GROUP + b"oddgroup:x:\xc2\xb2:\n"
    members = [*image(), file("etc/passwd", DEBIAN_PASSWD + odd), file("etc/group", group)]
    tree = flattened(tmp_path, members)
    run_step(tree, users.STEP, opts(UserSpec("alice")))
    assert lines(tree, "/etc/passwd")[-2:] == [
        odd.decode().strip(),
        "alice:x:1000:1001:,,,:/home/alice:/bin/bash",
    ]


ARCH_SUDOERS = b"root ALL=(ALL:ALL) ALL\n# %wheel ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n"


def test_a_sudo_group_no_rule_grants_gets_one(tmp_path: Path) -> None:
    """Arch's and Alpine's sudo ship the wheel rule commented out: joining wheel alone
    lets the user run nothing through sudo."""
    sudo = (file("etc/group", b"root:x:0:\nwheel:x:998:\n"), directory("usr"),
            directory("usr/bin"), file("usr/bin/sudo", b"elf", mode=0o4755))  # fmt: skip
    for name, sudoers, where in (
        ("dropin", ARCH_SUDOERS, users.SUDOERS_DROPIN),
        ("appended", b"root ALL=(ALL) ALL\n", users.SUDOERS),
    ):
        extra = (*sudo, file("etc/sudoers", sudoers, mode=0o440))
        tree = flattened(tmp_path / name, image(gshadow=False, extra=extra))
        notes = run_step(tree, users.STEP, opts(UserSpec("alice", sudo=True)))
        assert notes == ["sudo: no rule of the image's lets wheel run commands: added "
                         "'%wheel ALL=(ALL:ALL) ALL'"], name  # fmt: skip
        assert b"\n%wheel ALL=(ALL:ALL) ALL\n" in b"\n" + content(tree, where), name
        assert entry(tree, where).mode & 0o7777 == 0o440, name
    # openSUSE: the file in /usr/etc (it includes /etc/sudoers.d); none anywhere: a note.
    vendor = (*sudo, directory("usr/etc"), file("usr/etc/sudoers", ARCH_SUDOERS, mode=0o440))
    tree = flattened(tmp_path / "vendor", image(gshadow=False, extra=vendor))
    notes = run_step(tree, users.STEP, opts(UserSpec("alice", sudo=True)))
    assert len(notes) == 1 and b"%wheel ALL" in content(tree, users.SUDOERS_DROPIN)
    assert lookup(tree.root, users.SUDOERS) is None
    tree = flattened(tmp_path / "none", image(gshadow=False, extra=sudo))
    notes = run_step(tree, users.STEP, opts(UserSpec("alice", sudo=True)))
    assert notes == ["sudo: the image has no /etc/sudoers, so no rule for wheel was added"]
    granted = (*sudo, file("etc/sudoers", b"%wheel ALL=(ALL) NOPASSWD: ALL\n", mode=0o440))
    tree = flattened(tmp_path / "granted", image(gshadow=False, extra=granted))
    assert run_step(tree, users.STEP, opts(UserSpec("alice", sudo=True))) == []
    assert lookup(tree.root, users.SUDOERS_DROPIN) is None


def test_app_mode_and_a_missing_shell_are_said_not_silently_accepted(tmp_path: Path) -> None:
    """distroless/wolfi: no shell to log in with, and in app mode no login at all."""
    import dataclasses as dc

    from oci2vm.config import InitMode
    from oci2vm.prepare import accounts as accounts_step
    from oci2vm.tree.editor import TreeEditor
    from support.prepared import FS_TIME

    members = [m for m in image(gshadow=False) if m.info.name != "bin/bash"]
    tree = flattened(tmp_path, members)
    goal = dc.replace(target(tree, opts(UserSpec("bob", "pw"))), mode=InitMode.APP)
    notes = users.STEP.apply(TreeEditor(tree, FS_TIME), goal)
    assert notes[0].startswith("--add-user: the image has no shell (/bin/bash, /bin/sh)")
    assert notes[1] == accounts_step.APP_MODE_LOGIN.format("--add-user")
    assert lines(tree, "/etc/passwd")[-1].endswith(":/home/bob:/bin/sh")
    goal = dc.replace(goal, root_password="pw")
    notes = accounts_step.STEP.apply(TreeEditor(tree, FS_TIME), goal)
    assert notes == [accounts_step.APP_MODE_LOGIN.format("--root-password")]


def test_accounts_keep_other_lines_byte_for_byte_and_split_at_newlines_only(
    tmp_path: Path,
) -> None:
    passwd = DEBIAN_PASSWD + b"ann:x:1500:1500:Ann\xc2\x85toor:x:0:0:r:/root:/bin/sh\n"
    passwd += b"jo:x:1501:1501:Jos\xe9:/home/jo:/bin/sh\n"
    others = [m for m in image() if m.info.name not in ("etc", "etc/passwd")]
    tree = flattened(tmp_path, [directory("etc"), file("etc/passwd", passwd), *others])
    run_step(tree, users.STEP, opts(UserSpec("bob", "pw")))
    written = content(tree, "/etc/passwd")
    assert written.startswith(passwd)
    assert written[len(passwd) :] == b"bob:x:1000:1001:,,,:/home/bob:/bin/bash\n"
    assert b"\ntoor:" not in written


def test_a_home_already_in_the_image_is_kept_as_it_is(tmp_path: Path) -> None:
    """As adduser: an existing home is not given to the user nor filled from /etc/skel
    (a home that is a symlink to /etc gets no dotfiles there)."""
    extra = (directory("home"), directory("home/bob"), file("home/bob/.bashrc", b"mine\n"),
             symlink("home/carol", "/etc"))  # fmt: skip
    tree = flattened(tmp_path, image(extra=extra))
    notes = run_step(tree, users.STEP, opts(UserSpec("bob"), UserSpec("carol")))
    assert notes == [
        "--add-user bob: /home/bob is in the image already, kept as it is",
        "--add-user carol: /home/carol is in the image already, kept as it is",
    ]
    assert not isinstance(entry(tree, "/home/bob/.bashrc").data, BytesData)  # (not skel's)
    assert (entry(tree, "/home/bob").uid, entry(tree, "/home/bob").mode & 0o7777) == (0, 0o755)
    assert lookup(tree.root, "/etc/.bashrc") is None


def test_a_skeleton_deeper_than_the_recursion_limit_is_copied(tmp_path: Path) -> None:
    deep = [directory("etc/skel" + "/d" * n) for n in range(1, 1200)]
    tree = flattened(tmp_path, image(extra=(*deep, file("etc/skel" + "/d" * 1199 + "/f", b"f"))))
    run_step(tree, users.STEP, opts(UserSpec("alice")))
    assert content(tree, "/home/alice" + "/d" * 1199 + "/f") == b"f"


@pytest.mark.parametrize(("home", "words"), [("", "no home directory"), ("/", None)])
def test_ssh_keys_for_a_user_whose_home_is_the_root_or_nothing(
    tmp_path: Path, home: str, words: str | None
) -> None:
    passwd = DEBIAN_PASSWD + f"svc:x:999:999::{home}:/usr/sbin/nologin\n".encode()
    members = [m for m in image() if m.info.name != "etc/passwd"]
    tree = flattened(tmp_path, [*members, file("etc/passwd", passwd)])
    keys = (("svc", (b"ssh-ed25519 AAAA s@h",)),)
    if words is not None:
        with pytest.raises(Oci2vmError, match=words):
            run_step(tree, users.STEP, opts(keys=keys))
        return
    run_step(tree, users.STEP, opts(keys=keys))
    assert content(tree, "/.ssh/authorized_keys") == b"ssh-ed25519 AAAA s@h\n"
    assert entry(tree, "/.ssh/authorized_keys").uid == 999
