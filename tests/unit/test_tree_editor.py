"""The tree editor's rules: what writing, linking, creating and removing entries does to a
flattened tree, through symlinked parents too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import BytesData, Inode, Kind, new_dir, walk
from support.layouts import Member, directory, file, hardlink, symlink
from support.prepared import FS_TIME, content, entry, flattened

# -- the tree editor -------------------------------------------------------------------------


def test_write_replacing_a_file_keeps_owner_mode_and_xattrs(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("etc"),
            file("etc/shadow", b"old\n", mode=0o640, uid=3, gid=42, mtime=1),
        ],
    )
    entry(tree, "/etc/shadow").xattrs = {"security.selinux": b"shadow_t\0"}
    edit = TreeEditor(tree, FS_TIME)
    written = edit.write("/etc/shadow", b"new content\n")
    inode = entry(tree, "/etc/shadow")
    assert inode == written
    assert (inode.kind, inode.mode, inode.uid, inode.gid) == (Kind.FILE, 0o640, 3, 42)
    assert inode.xattrs == {"security.selinux": b"shadow_t\0"}
    assert inode.mtime_ns == FS_TIME * 1_000_000_000
    assert inode.size == len(b"new content\n")
    assert inode.data == BytesData(b"new content\n")
    assert edit.read_file("/etc/shadow") == b"new content\n"
    assert tree.read("/etc/shadow") == b"new content\n"


def test_write_with_given_mode_and_owner_overrides_the_replaced_file(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/fstab", b"x", mode=0o600, uid=7)])
    TreeEditor(tree, FS_TIME).write("/etc/fstab", b"y", mode=0o644, uid=0, gid=0)
    inode = entry(tree, "/etc/fstab")
    assert (inode.mode, inode.uid, inode.gid, inode.data) == (0o644, 0, 0, BytesData(b"y"))


def test_write_new_file_creates_missing_parents(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [file("a", b"x")])
    TreeEditor(tree, FS_TIME).write("/new/dir/f", b"")
    for path in ("/new", "/new/dir"):
        parent = entry(tree, path)
        assert (parent.kind, parent.mode, parent.uid, parent.gid) == (Kind.DIR, 0o755, 0, 0)
        assert parent.mtime_ns == FS_TIME * 1_000_000_000
    created = entry(tree, "/new/dir/f")
    assert (created.kind, created.mode, created.size, created.data) == (Kind.FILE, 0o644, 0, None)


def test_write_over_a_hardlink_replaces_only_that_path(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path, [directory("etc"), file("etc/a", b"one"), hardlink("etc/b", "etc/a")]
    )
    old = entry(tree, "/etc/a")
    assert entry(tree, "/etc/b") == old
    TreeEditor(tree, FS_TIME).write("/etc/b", b"two")
    assert entry(tree, "/etc/a") == old
    assert entry(tree, "/etc/b") != old
    assert content(tree, "/etc/a") == b"one"
    assert content(tree, "/etc/b") == b"two"


def test_write_replaces_a_symlink_with_a_file(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), symlink("etc/hostname", "/run/hostname")])
    TreeEditor(tree, FS_TIME).write("/etc/hostname", b"vm\n")
    inode = entry(tree, "/etc/hostname")
    assert (inode.kind, inode.mode, inode.target) == (Kind.FILE, 0o644, None)
    assert content(tree, "/etc/hostname") == b"vm\n"


def test_write_through_a_symlinked_directory_lands_in_its_target(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("var"), directory("run"), symlink("var/run", "/run")])
    edit = TreeEditor(tree, FS_TIME)
    edit.write("/var/run/x", b"data")
    edit.mkdir("/var/run/d", mode=0o700)
    assert sorted(entry(tree, "/run").children or {}) == ["d", "x"]
    assert content(tree, "/run/x") == b"data"
    assert entry(tree, "/run/d").mode == 0o700
    assert entry(tree, "/var/run").kind is Kind.SYMLINK
    assert edit.get("/var/run/x") == entry(tree, "/run/x")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([symlink("var/run", "/nowhere")], "cannot write /var/run/x: run is a dangling symlink"),
        (
            [symlink("var/run", "../var/loop"), symlink("var/loop", "run")],
            "cannot write /var/run/x: run is a dangling symlink",
        ),
        (
            [file("var/log", b"f"), symlink("var/run", "log")],
            "cannot write /var/run/x: run is not a directory in the image",
        ),
    ],
)
def test_write_through_a_broken_symlink_is_an_error(
    tmp_path: Path, members: list[Member], message: str
) -> None:
    tree = flattened(tmp_path, [directory("var"), *members])
    before = {p: (i.kind, i.target) for p, i in walk(tree.root)}
    edit = TreeEditor(tree, FS_TIME)
    with pytest.raises(Oci2vmError) as raised:
        edit.write("/var/run/x", b"")
    assert str(raised.value) == message
    with pytest.raises(Oci2vmError):
        edit.mkdir("/var/run/d")
    assert edit.get("/var/run/x") is None
    assert {p: (i.kind, i.target) for p, i in walk(tree.root)} == before


def test_write_over_a_directory_or_under_a_file_is_an_error(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/passwd", b"x")])
    edit = TreeEditor(tree, FS_TIME)
    with pytest.raises(Oci2vmError, match=r"^cannot write /etc: it is a directory in the image"):
        edit.write("/etc", b"")
    with pytest.raises(Oci2vmError, match=r"^cannot link /etc: it is a directory in the image"):
        edit.symlink("/etc", "/x")
    with pytest.raises(Oci2vmError, match=r"^cannot write /etc/passwd/x: passwd is not a dir"):
        edit.write("/etc/passwd/x", b"")
    assert entry(tree, "/etc").kind is Kind.DIR
    assert content(tree, "/etc/passwd") == b"x"


def test_mkdir_creates_or_returns_the_existing_directory(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("root", mode=0o750, uid=5), file("f")])
    edit = TreeEditor(tree, FS_TIME)
    existing = entry(tree, "/root")
    assert edit.mkdir("/root", mode=0o700) == existing
    assert (existing.mode, existing.uid) == (0o750, 5)
    made = edit.mkdir("/root/.ssh", mode=0o700, uid=1, gid=2)
    assert entry(tree, "/root/.ssh") == made
    assert (made.kind, made.mode, made.uid, made.gid, made.children) == (
        Kind.DIR,
        0o700,
        1,
        2,
        {},
    )
    with pytest.raises(Oci2vmError, match=r"^cannot create directory /f: a file is there"):
        edit.mkdir("/f")


def test_mkdir_keeps_a_symlink_to_a_directory_as_dpkg_does(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib"),
                                symlink("dangling", "nowhere")])  # fmt: skip
    edit = TreeEditor(tree, FS_TIME)
    assert edit.mkdir("/lib") == entry(tree, "/usr/lib")
    assert entry(tree, "/lib").kind is Kind.SYMLINK
    edit.mkdir("/lib/modules")
    assert entry(tree, "/usr/lib/modules").kind is Kind.DIR
    with pytest.raises(Oci2vmError, match="a symlink is there"):
        edit.mkdir("/dangling")


def test_symlink_creates_or_replaces(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/mtab", b"x")])
    edit = TreeEditor(tree, FS_TIME)
    edit.symlink("/etc/mtab", "../proc/self/mounts")
    edit.symlink("/etc/new/link", "/target")
    for path, target in (("/etc/mtab", b"../proc/self/mounts"), ("/etc/new/link", b"/target")):
        inode = entry(tree, path)
        assert (inode.kind, inode.mode, inode.target, inode.size) == (
            Kind.SYMLINK,
            0o777,
            target,
            len(target),
        )
        assert inode.mtime_ns == FS_TIME * 1_000_000_000


def test_remove_drops_the_entry(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/motd", b"hi"), file(".dockerenv")])
    edit = TreeEditor(tree, FS_TIME)
    assert edit.read_file("/etc/motd") == b"hi"
    assert edit.remove("/etc/motd") is True
    assert edit.remove("/.dockerenv") is True
    assert edit.read_file("/etc/motd") is None
    assert sorted(entry(tree, "/").children or {}) == ["etc"]
    assert entry(tree, "/etc").children == {}
    assert edit.remove("/etc/motd") is False
    assert edit.remove("/no/such/dir/file") is False
    assert edit.read_file("/etc/motd") is None


def test_get_and_read_follow_symlinked_parent_directories(tmp_path: Path) -> None:
    """Merged /usr: /lib and /sbin are links into /usr; looking through them is no write."""
    tree = flattened(
        tmp_path,
        [
            directory("usr"),
            directory("usr/lib"),
            file("usr/lib/os-release", b"ID=test\n"),
            directory("usr/sbin"),
            file("usr/sbin/agetty", b"elf"),
            symlink("lib", "usr/lib"),
            symlink("sbin", "usr/sbin"),
            directory("etc"),
            symlink("etc/os-release", "../usr/lib/os-release"),
        ],
    )
    edit = TreeEditor(tree, FS_TIME)
    assert edit.get("/sbin/agetty") == entry(tree, "/usr/sbin/agetty")
    assert edit.get("/lib/missing") is None
    assert edit.get("/etc/os-release") == entry(tree, "/etc/os-release")  # the link itself
    assert edit.read_file("/etc/os-release") == b"ID=test\n"  # followed, as open(2) would
    assert edit.read_file("/lib/os-release") == b"ID=test\n"  # captured as /usr/lib/os-release


def test_graft_merges_directories_through_a_symlink_at_any_depth(tmp_path: Path) -> None:
    """A package's tree grafted into the image's: directories merge (through a symlink
    as dpkg unpacks), a file replaces a file, and trees that meet deeper than Python's
    recursion limit merge all the way (made low here: 300 frames)."""
    deep = ["usr/lib" + "/d" * n for n in range(1, 500)]
    tree = flattened(
        tmp_path,
        [
            directory("usr"),
            directory("usr/lib"),
            symlink("lib", "usr/lib"),
            file("usr/lib/a", b"a"),
            *[directory(path) for path in deep],
        ],
    )
    edit = TreeEditor(tree, FS_TIME)
    package = new_dir()
    node = package
    for _ in range(500):
        assert node.children is not None
        node.children["d"] = node = new_dir()
    assert package.children is not None and node.children is not None
    node.children["f"] = Inode(Kind.FILE, size=1, data=BytesData(b"f"))
    package.children["a"] = Inode(Kind.FILE, size=1, data=BytesData(b"b"))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        edit.graft("/lib", package)
    finally:
        sys.setrecursionlimit(limit)
    assert entry(tree, "/lib").kind is Kind.SYMLINK
    assert edit.read_file("/usr/lib/a") == b"b"
    assert edit.read_file("/usr/lib/" + "d/" * 500 + "f") == b"f"
    assert entry(tree, "/" + deep[-1]) is not None
    with pytest.raises(Oci2vmError, match=r"^cannot place /usr: it is a directory in the image$"):
        edit.graft("/usr", Inode(Kind.FILE))


def test_dot_dot_in_a_path_is_taken_by_name_and_the_root_is_no_file(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("home"), directory("srv")])
    edit = TreeEditor(tree, FS_TIME)
    edit.write("/home/../srv/./x", b"x")
    assert edit.read_file("/srv/x") == b"x"
    assert lookup_names(tree) == ["/home", "/srv", "/srv/x"]
    assert edit.get("/home/..") is tree.root and edit.get("/") is tree.root
    with pytest.raises(
        Oci2vmError, match=r"^cannot replace '/home/\.\.': it is the root directory$"
    ):
        edit.write("/home/..", b"x")


def lookup_names(tree: object) -> list[str]:
    return sorted(path for path, _ in walk(tree.root) if path != "/")  # type: ignore[attr-defined]


def test_a_dangling_link_into_var_gets_its_directory_as_tmpfiles_would(tmp_path: Path) -> None:
    """Fedora's atomic and bootc images: /root -> var/roothome, /home -> var/home, made by
    systemd-tmpfiles at boot, not in the image. A home or root's .ssh goes there."""
    tree = flattened(tmp_path, [directory("var"), symlink("root", "var/roothome"),
                                symlink("home", "/var/home")])  # fmt: skip
    edit = TreeEditor(tree, FS_TIME)
    assert edit.mkdir("/root", mode=0o700) == entry(tree, "/var/roothome")
    edit.mkdir("/root/.ssh", mode=0o700)
    edit.write("/home/alice/.profile", b"x")
    assert entry(tree, "/var/roothome").mode == 0o700
    assert entry(tree, "/var/roothome/.ssh").kind is Kind.DIR
    assert content(tree, "/var/home/alice/.profile") == b"x"
    assert (entry(tree, "/root").kind, entry(tree, "/home").kind) == (Kind.SYMLINK, Kind.SYMLINK)
