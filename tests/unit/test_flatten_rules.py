"""Flattening as a container runtime shows the result: the cases where a layer hides
what lower layers had (at the root, beneath a type change, in the same layer), the root
directory's own entry, symlink modes, and hardlinks that cannot be made."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import Kind
from support.flattened import at, content, flatten_layers, paths
from support.layouts import Member, directory, file, hardlink, opaque, symlink, whiteout

SECRET = [directory("d"), file("d/secret", b"s3cret"), directory("d/sub"), file("d/sub/x")]


def test_opaque_whiteout_at_the_layer_root_hides_every_lower_entry(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [*SECRET, file("top", b"old"), symlink("l", "d")],
        [file("kept", b"k"), file(".wh..wh..opq", mode=0o600)],
        [file("newest", b"n")],
    )
    assert paths(tree) == {"/", "/kept", "/newest"}
    assert content(tree, data, "/kept") == b"k"


def test_opaque_whiteout_at_the_root_written_with_a_dot_slash(tmp_path: Path) -> None:
    tree, _ = flatten_layers(tmp_path, [file("a"), directory("b")], [file("./.wh..wh..opq")])
    assert paths(tree) == {"/"}


@pytest.mark.parametrize(
    "middle",
    [file("d", b"now a file"), symlink("d", "elsewhere"), hardlink("d", "f")],
    ids=["file", "symlink", "hardlink"],
)
def test_a_path_a_middle_layer_made_a_non_directory_keeps_lower_entries_hidden(
    tmp_path: Path, middle: Member
) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [*SECRET, file("f", b"f")],
        [middle],
        [directory("d", mode=0o700), file("d/new", b"n")],
    )
    assert paths(tree) == {"/", "/d", "/d/new", "/f"}
    assert at(tree, "/d").mode == 0o700


def test_a_non_directory_then_a_directory_of_one_name_in_one_layer_hide_lower_entries(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(tmp_path, SECRET, [file("d", b"x"), directory("d"), file("d/y")])
    assert paths(tree) == {"/", "/d", "/d/y"}


def test_an_entry_listed_twice_in_one_layer_is_the_later_one(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [file("a", b"lower")],
        [file("a", b"first"), hardlink("keep", "a"), file("a", b"second", mode=0o600)],
    )
    assert content(tree, data, "/a") == b"second"
    assert at(tree, "/a").mode == 0o600
    assert content(tree, data, "/keep") == b"first"


@pytest.mark.parametrize("order", ["whiteout first", "file first"])
def test_a_whiteout_and_a_file_of_one_name_in_one_layer_keep_the_file(
    tmp_path: Path, order: str
) -> None:
    pair = [whiteout("d"), file("d", b"new")]
    tree, data = flatten_layers(tmp_path, SECRET, pair if order == "whiteout first" else pair[::-1])
    assert paths(tree) == {"/", "/d"}
    assert content(tree, data, "/d") == b"new"


def test_symlinks_get_mode_0777_whatever_the_header_says(tmp_path: Path) -> None:
    link = symlink("l", "target")
    link.info.mode = 0o4640
    tree, _ = flatten_layers(tmp_path, [link])
    assert at(tree, "/l").mode == 0o777


def test_user_xattrs_stay_on_files_and_directories_only(tmp_path: Path) -> None:
    # Linux refuses user.* attributes on anything else (xattr(7)); containerd skips them
    # when it unpacks. Other namespaces stay wherever they are.
    xattrs = {"SCHILY.xattr.user.a": "1", "SCHILY.xattr.trusted.b": "2"}
    fifo = file("p", pax=xattrs)
    fifo.info.type = tarfile.FIFOTYPE
    members = [file("f", pax=xattrs), directory("d", pax=xattrs), symlink("l", "f", pax=xattrs)]
    tree, _ = flatten_layers(tmp_path, [*members, fifo])
    assert at(tree, "/f").xattrs == at(tree, "/d").xattrs == {"user.a": b"1", "trusted.b": b"2"}
    assert at(tree, "/l").xattrs == at(tree, "/p").xattrs == {"trusted.b": b"2"}


def test_xattrs_linux_does_not_store_are_left_out_with_a_note(tmp_path: Path) -> None:
    """setxattr answers ENOTSUP for namespaces Linux lacks (a macOS tar's com.apple.*) and
    for system.* beyond the ACLs; umoci, containerd and GNU tar go on without them. An
    ACL without entries is its removal to the kernel."""
    acl_header_only = "\x02\x00\x00\x00"
    # owner rwx, user 100 rwx, group r-x, mask r-x, other r-x: what chmod 0755 leaves
    acl = _acl((0x01, 7, 0), (0x02, 7, 100), (0x04, 5, 0), (0x10, 5, 0), (0x20, 5, 0))
    pax = {
        "SCHILY.xattr.user.kept": "1",
        "SCHILY.xattr.com.apple.provenance": "x",
        "SCHILY.xattr.system.data": "y",
        "SCHILY.xattr.system.posix_acl_default": acl_header_only,
        "SCHILY.xattr.system.posix_acl_access": acl,
        "LIBARCHIVE.xattr.com.apple.quarantine": "cQ",  # base64
    }
    tree, _ = flatten_layers(tmp_path, [directory("d", pax=pax), file("f", pax=pax, mode=0o755)])
    for path in ("/d", "/f"):
        assert at(tree, path).xattrs == {
            "user.kept": b"1",
            "system.posix_acl_access": acl.encode("latin-1"),
        }
    assert tree.notes == [
        f"layer 1 ({tree.layer_digests[0][7:19]}): extended attributes Linux does not store "
        "(com.apple.provenance, com.apple.quarantine, system.data and 1 more) on 2 entries "
        "left out, as umoci and tar leave them"
    ]


def _acl(*entries: tuple[int, int, int]) -> str:
    """A POSIX ACL's xattr value as a pax record's text (its bytes as they are)."""
    value = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    return value.decode("utf-8", "surrogateescape")


def test_an_access_acl_is_settled_against_the_mode_as_chmod_after_setxattr_leaves_it(
    tmp_path: Path,
) -> None:
    """containerd sets the xattrs, then the mode: the mode is the layer's, and the ACL's
    owner, mask and other entries follow it (a mask of rwx under a 0644 mode let user 1000
    write a file ls shows as 0644); an ACL that only restates the mode is none (Linux never
    stores one); a default ACL stays on a directory only; a symlink takes no ACL."""
    extended = _acl((0x01, 6, 0), (0x02, 7, 100), (0x04, 4, 0), (0x10, 7, 0), (0x20, 4, 0))
    minimal = _acl((0x01, 7, 0), (0x04, 7, 0), (0x20, 0, 0))
    access, default = (
        "SCHILY.xattr.system.posix_acl_access",
        "SCHILY.xattr.system.posix_acl_default",
    )
    tree, _ = flatten_layers(
        tmp_path,
        [
            file("ext", mode=0o640, pax={access: extended}),
            file("min", mode=0o644, pax={access: minimal}),
            file("def", pax={default: minimal}),
            directory("dir", pax={default: minimal, access: minimal}),
            symlink("ln", "ext", pax={access: extended}),
        ],
    )
    settled = _acl((0x01, 6, 0), (0x02, 7, 100), (0x04, 4, 0), (0x10, 4, 0), (0x20, 0, 0))
    assert at(tree, "/ext").xattrs == {"system.posix_acl_access": settled.encode("latin-1")}
    assert at(tree, "/ext").mode & 0o7777 == 0o640
    assert at(tree, "/min").xattrs == {} and at(tree, "/min").mode & 0o777 == 0o644
    assert at(tree, "/def").xattrs == {}
    assert at(tree, "/dir").xattrs == {"system.posix_acl_default": minimal.encode("latin-1")}
    assert at(tree, "/ln").xattrs == {}


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([(0x01, 7, 0), (0x20, 5, 0)], "needs one owner, group and other entry"),
        ([(0x01, 7, 0), (0x01, 7, 0), (0x04, 5, 0), (0x20, 5, 0)], "needs one owner"),
        ([(0x01, 7, 0), (0x02, 7, 5), (0x04, 5, 0), (0x20, 5, 0)], "named entries without a mask"),
        # (the kernel's posix_acl_valid and posix_acl_from_xattr, as a probe found them)
        (
            [(0x20, 4, 0), (0x10, 7, 0), (0x04, 5, 0), (0x02, 6, 1000), (0x01, 7, 0)],
            "its entries are out of order",
        ),
        (
            [(0x01, 7, 0), (0x02, 0xFF, 1000), (0x04, 5, 0), (0x10, 7, 0), (0x20, 4, 0)],
            "permissions beyond rwx",
        ),
        (
            [(0x01, 7, 0), (0x08, 6, 0xFFFFFFFF), (0x04, 5, 0), (0x10, 7, 0), (0x20, 4, 0)],
            "its entries are out of order",
        ),
        (
            [(0x01, 7, 0), (0x04, 5, 0), (0x08, 6, 0xFFFFFFFF), (0x10, 7, 0), (0x20, 4, 0)],
            "a named entry for id 4294967295",
        ),
    ],
)
def test_an_acl_linux_refuses_is_an_error_naming_the_entry(
    tmp_path: Path, entries: list[tuple[int, int, int]], why: str
) -> None:
    """setxattr answers EINVAL, and containerd's unpack fails."""
    pax = {"SCHILY.xattr.system.posix_acl_access": _acl(*entries)}
    with pytest.raises(
        Oci2vmError, match=rf"'f': system.posix_acl_access: invalid POSIX ACL: {why}"
    ):
        flatten_layers(tmp_path, [file("f", pax=pax)])


def test_an_owner_of_minus_one_is_roots_as_chown_leaves_it(tmp_path: Path) -> None:
    # (uid_t)-1 is chown(2)'s "no change": a runtime unpacking as root leaves the file
    # root's; Linux would read 4294967295 in an inode back as the overflow id.
    tree, _ = flatten_layers(tmp_path, [file("f", uid=(1 << 32) - 1, gid=(1 << 32) - 1)])
    assert (at(tree, "/f").uid, at(tree, "/f").gid) == (0, 0)


# --- the root directory's own entry --------------------------------------------------------


def _root(name: str, mode: int, mtime: int, uid: int, value: str) -> Member:
    return directory(
        name,
        mode=mode,
        uid=uid,
        gid=uid + 1,
        pax={"mtime": f"{mtime}.5", "atime": f"{mtime + 1}", "SCHILY.xattr.user.v": value},
    )


def test_the_newest_layers_root_entry_sets_the_roots_metadata(tmp_path: Path) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [_root("./", 0o700, 1000, 1, "bottom"), file("a")],
        [_root("/", 0o750, 2000, 2, "middle")],
        [file("b")],
    )
    root = tree.root
    assert (root.mode, root.uid, root.gid) == (0o750, 2, 3)
    assert (root.mtime_ns, root.atime_ns) == (2_000_500_000_000, 2_001_000_000_000)
    assert root.xattrs == {"user.v": b"middle"}


def test_of_two_root_entries_in_one_layer_the_later_wins(tmp_path: Path) -> None:
    tree, _ = flatten_layers(
        tmp_path, [_root("./", 0o700, 1000, 1, "a"), file("x"), _root(".", 0o711, 3000, 4, "b")]
    )
    assert (tree.root.mode, tree.root.uid, tree.root.mtime_ns) == (0o711, 4, 3_000_500_000_000)


def test_a_root_entry_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        Oci2vmError, match=r"layer 1 .*'\./' would make the root directory a symlink"
    ):
        flatten_layers(tmp_path, [symlink("./", "/etc")])


# --- whiteouts that cannot be applied --------------------------------------------------------


@pytest.mark.parametrize("name", ["d/.wh.", "d/.wh..", "d/.wh..."])
def test_a_whiteout_without_a_usable_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(Oci2vmError, match=r"layer 2 .*whiteout .* names no entry"):
        flatten_layers(tmp_path, SECRET, [file(name)])


@pytest.mark.parametrize(
    ("marker", "left"),
    [
        (whiteout("l/secret"), {"/d/sub", "/d/sub/x"}),
        (opaque("l"), set()),
        (opaque("l/sub"), {"/d/secret", "/d/sub"}),
    ],
    ids=["whiteout", "opaque", "opaque below"],
)
def test_a_whiteout_through_a_symlinked_directory_deletes_where_it_leads(
    tmp_path: Path, marker: Member, left: set[str]
) -> None:
    """A runtime follows the symlink and deletes in its target: keeping the target's
    entries would resurrect what the layer deletes."""
    for number, layers in enumerate(
        [
            [[*SECRET, symlink("l", "d")], [marker]],  # the symlink in a lower layer
            [SECRET, [symlink("l", "d"), marker]],  # in the marker's layer, before it
        ]
    ):
        tree, _ = flatten_layers(tmp_path / str(number), *layers)
        assert {p for p in paths(tree) if p.startswith("/d/")} == left
        assert at(tree, "/l").kind is Kind.SYMLINK


def test_a_whiteout_below_a_symlink_that_a_later_layer_replaced_applies(tmp_path: Path) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [*SECRET, symlink("l", "d")],
        [directory("l"), file("l/secret")],
        [whiteout("l/secret")],
    )
    assert "/l/secret" not in paths(tree) and "/d/secret" in paths(tree)


@pytest.mark.parametrize("parent", ["p", "p/l"], ids=["grandparent", "parent"])
def test_a_whiteout_below_a_parent_its_own_layer_made_a_file_reaches_nothing(
    tmp_path: Path, parent: str
) -> None:
    """The layer's file at `parent` replaces the lower symlink (and all below it): the
    whiteout under it deletes nothing, as a runtime finds nothing to delete there (found
    by the differential fuzzer: umoci unpacked what oci2vm refused)."""
    tree, _ = flatten_layers(
        tmp_path,
        [*SECRET, directory("p"), symlink("p/l", "../d")],
        [file(parent, b"now a file"), whiteout("p/l/secret")],
    )
    assert paths(tree) >= {"/d/secret", f"/{parent}"}
    assert at(tree, f"/{parent}").kind is Kind.FILE


# --- hardlinks ---------------------------------------------------------------------------------


def test_a_hardlink_to_itself_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match=r"layer 2 .*hardlink '/a' points to itself"):
        flatten_layers(tmp_path, [file("a", b"x")], [hardlink("a", "a")])


@pytest.mark.parametrize(
    "links",
    [
        [hardlink("a", "b"), hardlink("b", "a")],
        [hardlink("a", "b"), hardlink("b", "c"), hardlink("c", "./a")],
    ],
    ids=["two", "three"],
)
def test_a_hardlink_cycle_is_refused(tmp_path: Path, links: list[Member]) -> None:
    with pytest.raises(Oci2vmError, match=r"layer 1 .*hardlinks '/a'.* form a cycle"):
        flatten_layers(tmp_path, links)


@pytest.mark.parametrize(
    "layers",
    [
        [[directory("d"), hardlink("h", "d")]],
        [[directory("d")], [hardlink("h", "d")]],
        [[directory("d"), hardlink("h", "d")], [whiteout("d")]],
    ],
    ids=["same layer", "lower layer", "same layer, hidden above"],
)
def test_a_hardlink_to_a_directory_is_named_as_such(
    tmp_path: Path, layers: list[list[Member]]
) -> None:
    with pytest.raises(Oci2vmError, match=r"hardlink '/h' points to directory '/d'"):
        flatten_layers(tmp_path, *layers)


def test_hardlinks_chained_across_layers_share_the_bottom_file(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [file("a", b"bottom")],
        [hardlink("b", "a")],
        [hardlink("c", "b"), hardlink("d", "c")],
    )
    a = at(tree, "/a")
    assert at(tree, "/b") == a and at(tree, "/c") == a and at(tree, "/d") == a
    assert data[a] == b"bottom"


def test_a_hardlink_listed_before_its_target_links_the_lower_file(tmp_path: Path) -> None:
    """As a runtime applies entries in order: the link is made to what is there then."""
    tree, data = flatten_layers(
        tmp_path, [file("a", b"lower")], [hardlink("h", "a"), file("a", b"upper")]
    )
    assert content(tree, data, "/h") == b"lower"
    assert content(tree, data, "/a") == b"upper"
    assert at(tree, "/h") != at(tree, "/a")


def test_a_hardlink_made_before_its_layer_deletes_the_target_keeps_the_file(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(tmp_path, [file("a", b"kept")], [hardlink("h", "a"), whiteout("a")])
    assert paths(tree) == {"/", "/h"}
    assert content(tree, data, "/h") == b"kept"


@pytest.mark.parametrize(
    "layer",
    [
        [whiteout("d/secret"), hardlink("h", "d/secret")],
        [opaque("d"), hardlink("h", "d/secret")],
        [file("d"), hardlink("h", "d/secret")],
    ],
    ids=["whiteout", "opaque", "replaced parent"],
)
def test_a_hardlink_made_after_its_layer_deleted_the_target_is_refused(
    tmp_path: Path, layer: list[Member]
) -> None:
    with pytest.raises(Oci2vmError, match=r"hardlink '/h' points to '/d/secret', which layer 2"):
        flatten_layers(tmp_path, SECRET, layer)


def test_a_hardlink_to_a_target_a_middle_layer_hid_beneath_a_file_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(Oci2vmError, match=r"hardlink '/h' points to '/d/secret', which layer 2"):
        flatten_layers(tmp_path, SECRET, [file("d")], [directory("d"), hardlink("h", "d/secret")])


def test_a_hardlink_to_a_symlink_shares_the_symlink(tmp_path: Path) -> None:
    tree, _ = flatten_layers(tmp_path, [symlink("s", "t")], [hardlink("h", "s")])
    assert at(tree, "/h") == at(tree, "/s")
    assert at(tree, "/h").kind is Kind.SYMLINK


def test_an_upper_hardlink_links_the_last_of_two_lower_entries_of_its_target(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [file("a", b"first", mode=0o600), file("a", b"second", mode=0o640)],
        [hardlink("b", "a")],
    )
    assert at(tree, "/b") == at(tree, "/a")
    assert content(tree, data, "/b") == b"second"
    assert at(tree, "/b").mode == 0o640


@pytest.mark.parametrize(
    "entry",
    [file("c", b"f"), symlink("c", "a"), hardlink("c", "a")],
    ids=["file", "symlink", "link"],
)
def test_a_layer_that_writes_in_a_directory_then_replaces_it_keeps_the_replacement(
    tmp_path: Path, entry: Member
) -> None:
    tree, _ = flatten_layers(
        tmp_path, [directory("c"), file("c/old"), file("a")], [file("c/new"), entry]
    )
    assert paths(tree) == {"/", "/a", "/c"}
    assert at(tree, "/c").kind is not Kind.DIR


def test_what_a_layer_wrote_in_a_directory_it_then_replaces_stays_out_below_an_upper_one(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [directory("a"), file("a/x"), directory("a/sub"), file("a/sub/y"), symlink("a", "b")],
        [directory("a"), file("a/new")],
    )
    assert paths(tree) == {"/", "/a", "/a/new"}


def test_a_layer_replacing_a_directory_an_upper_layer_writes_in_keeps_the_upper_entries(
    tmp_path: Path,
) -> None:
    lower = [directory("a", mode=0o700), file("a/old"), file("a"), directory("a", mode=0o750)]
    tree, _ = flatten_layers(tmp_path, lower, [file("a/new")])  # its directory left implicit
    assert paths(tree) == {"/", "/a", "/a/new"}
    assert at(tree, "/a").mode == 0o750
    # Its last entry a file: containerd's mkparent fails (ENOTDIR), and so does a build.
    with pytest.raises(Oci2vmError, match="upper layers write below '/a', which is a file"):
        flatten_layers(tmp_path / "2", lower[:-1], [file("a/new")])


def test_a_whiteout_below_a_path_whose_last_entry_is_no_symlink_applies(tmp_path: Path) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [*SECRET, symlink("l", "d")],
        [symlink("l", "d"), directory("l"), file("l/secret")],
        [whiteout("l/secret")],
    )
    assert "/l/secret" not in paths(tree) and "/d/secret" in paths(tree)


def test_a_symlink_a_layer_lists_then_replaces_by_a_directory_upper_layers_write_in_is_no_error(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(
        tmp_path, [symlink("c", "a"), directory("c", mode=0o700), file("c/x")], [file("c/y")]
    )
    assert paths(tree) == {"/", "/c", "/c/x", "/c/y"}
    assert at(tree, "/c").mode == 0o700


def test_hardlinks_to_each_other_over_a_lower_file_are_no_cycle(tmp_path: Path) -> None:
    """As a runtime applies them: b links the lower a, then a links b (the same file)."""
    tree, data = flatten_layers(
        tmp_path, [file("a", b"lower a")], [hardlink("b", "a"), hardlink("a", "b")]
    )
    assert at(tree, "/a") == at(tree, "/b")
    assert content(tree, data, "/a") == b"lower a"


def test_a_whiteout_below_a_symlink_whose_parent_its_layer_then_replaced_is_no_error(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [directory("a"), directory("b"), symlink("b/a", "/a"), file("b", b"file")],
        [whiteout("b/a/x")],
    )
    assert paths(tree) == {"/", "/a", "/b"}


def test_a_whiteout_below_a_symlink_a_layer_between_replaced_reaches_nothing(
    tmp_path: Path,
) -> None:
    """Layer 1: a/c -> a (in directory a); layer 2 makes a a file; layer 3 whites out
    a/c/a, which no longer leads anywhere: nothing to refuse (it was, as a whiteout
    through a symlink)."""
    tree, _ = flatten_layers(
        tmp_path,
        [directory("a"), file("a/a", b"x"), symlink("a/c", "a")],
        [file("a", b"a file")],
        [whiteout("a/c/a")],
    )
    assert paths(tree) == {"/", "/a"}


def test_a_hardlink_to_a_path_a_lower_layer_deletes_is_refused_unless_it_writes_it_again(
    tmp_path: Path,
) -> None:
    """Layer 3 links a/a to a/b, which layer 2 deletes: refused, as the runtime applying
    layer 3 finds nothing there. But layer 2 may write a/b again after its whiteout, here
    through layer 1's symlink a/a -> . (a/a/b is /a/b), which is only known below it."""
    with pytest.raises(Oci2vmError, match=r"^hardlink '/a/a' points to '/a/b', which layer 2 "):
        flatten_layers(
            tmp_path / "gone",
            [directory("a"), file("a/b", b"old")],
            [whiteout("a/b")],
            [hardlink("a/a", "a/b")],
        )
    tree, data = flatten_layers(
        tmp_path / "again",
        [directory("a"), symlink("a/a", "."), file("a/b", b"old")],
        [whiteout("a/b"), file("a/a/b", b"new")],
        [hardlink("a/a", "a/b")],
    )
    assert content(tree, data, "/a/a") == content(tree, data, "/a/b") == b"new"
    assert at(tree, "/a/a") == at(tree, "/a/b")


def test_a_hardlink_whose_target_climbs_out_names_the_link(tmp_path: Path) -> None:
    """The target escapes, not the entry: both are named (as containerd's breakout tests)."""
    with pytest.raises(
        Oci2vmError,
        match=r"hardlink 'localpasswd' points to '\.\./\.\./etc/passwd', which escapes the image",
    ):
        flatten_layers(tmp_path, [hardlink("localpasswd", "../../etc/passwd")])
