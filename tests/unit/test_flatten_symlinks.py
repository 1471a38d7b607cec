"""Flattening: entries below a symlink go where it leads, as a runtime unpacking the layer
writes them (docker and umoci resolve an entry's parent inside the root). The symlink may
come before the entry in the same layer, or from a layer below (a base image with /lib ->
usr/lib, and a layer built by a tool that writes lib/... without listing lib)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import Kind
from support.flattened import at, content, flatten_layers, paths
from support.layouts import Member, directory, file, hardlink, opaque, symlink, whiteout

MERGED_USR = [directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib")]


@pytest.mark.parametrize("target", ["usr/lib", "/usr/lib", "./usr/../usr/lib/", "../../usr/lib"])
def test_an_entry_below_a_symlink_of_its_own_layer_goes_where_it_leads(
    tmp_path: Path, target: str
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [directory("usr"), directory("usr/lib"), symlink("lib", target), file("lib/x", b"x")],
    )
    assert content(tree, data, "/usr/lib/x") == b"x"
    assert at(tree, "/lib").kind is Kind.SYMLINK
    assert "/lib/x" not in paths(tree)


def test_an_upper_layers_entry_below_a_lower_symlink_goes_where_it_leads(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [*MERGED_USR, file("usr/lib/old", b"old")],
        [directory("lib/sub", mode=0o700), file("lib/sub/new", b"new"), file("lib/top", b"t")],
    )
    assert content(tree, data, "/usr/lib/sub/new") == b"new"
    assert content(tree, data, "/usr/lib/top") == b"t"
    assert content(tree, data, "/usr/lib/old") == b"old"
    assert at(tree, "/usr/lib/sub").mode == 0o700
    assert at(tree, "/lib").kind is Kind.SYMLINK
    assert at(tree, "/lib").target == b"usr/lib"


def test_the_newer_of_two_entries_that_meet_through_a_symlink_wins(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [*MERGED_USR, file("usr/lib/a", b"base"), file("usr/lib/b", b"base")],
        [file("lib/a", b"through"), file("usr/lib/b", b"direct")],
        [file("usr/lib/a", b"direct"), file("lib/b", b"through")],
    )
    assert content(tree, data, "/usr/lib/a") == b"direct"
    assert content(tree, data, "/usr/lib/b") == b"through"


def test_a_file_through_a_symlink_replaces_a_lower_directory_and_what_is_in_it(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [*MERGED_USR, directory("usr/lib/d"), file("usr/lib/d/inner", b"i")],
        [file("lib/d", b"file now")],
    )
    assert content(tree, data, "/usr/lib/d") == b"file now"
    assert "/usr/lib/d/inner" not in paths(tree)


def test_a_file_through_a_symlink_hides_what_lower_layers_put_there(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [directory("usr"), directory("usr/lib"), directory("usr/lib/d"), file("usr/lib/d/in")],
        [symlink("lib", "usr/lib")],
        [file("lib/d", b"file")],
        [directory("usr/lib/d"), file("usr/lib/d/new", b"n")],
    )
    assert content(tree, data, "/usr/lib/d/new") == b"n"
    assert "/usr/lib/d/in" not in paths(tree)


@pytest.mark.parametrize("target", ["usr/lib", "."])
def test_a_file_through_the_symlinks_own_layer_ends_what_that_layer_put_there(
    tmp_path: Path, target: str
) -> None:
    """The symlink's layer lists the directory (and what is in it) before an upper layer's
    file, written through the symlink, replaces it; a newer layer lists the directory
    again, empty: what the symlink's layer put in it is gone (umoci; found by the
    differential test, where the entries stayed)."""
    where = "usr/lib/d" if target == "usr/lib" else "d"
    tree, _data = flatten_layers(
        tmp_path,
        [directory("usr"), directory("usr/lib"), symlink("lib", target), directory(where),
         file(f"{where}/in", b"i"), hardlink(f"{where}/link", "lib")],
        [file("lib/d", b"file")],
        [directory(where)],
    )  # fmt: skip
    assert at(tree, f"/{where}").kind is Kind.DIR
    assert f"/{where}/in" not in paths(tree) and f"/{where}/link" not in paths(tree)
    assert at(tree, "/lib").kind is Kind.SYMLINK


def test_what_the_symlinks_layer_listed_below_it_before_the_symlink_is_gone(
    tmp_path: Path,
) -> None:
    early = [directory("usr"), directory("usr/lib"), file("lib/early", b"e"), directory("lib")]
    tree, _ = flatten_layers(
        tmp_path,
        [*early, symlink("lib", "usr/lib")],
        [file("lib/x", b"x")],
    )
    assert paths(tree) >= {"/usr/lib/x", "/lib"}
    assert "/usr/lib/early" not in paths(tree) and "/lib/early" not in paths(tree)
    assert at(tree, "/usr/lib").mode == 0o755


def test_a_target_the_symlinks_layer_does_not_hold_is_made(tmp_path: Path) -> None:
    tree, data = flatten_layers(tmp_path, [symlink("lib", "usr/lib")], [file("lib/x", b"x")])
    assert content(tree, data, "/usr/lib/x") == b"x"
    assert at(tree, "/usr").kind is Kind.DIR


def test_symlinks_chain_across_layers(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [directory("opt"), directory("opt/lib"), symlink("usr", "opt")],
        [symlink("lib", "usr/lib")],
        [file("lib/x", b"x")],
    )
    assert content(tree, data, "/opt/lib/x") == b"x"
    assert at(tree, "/usr").kind is Kind.SYMLINK and at(tree, "/lib").kind is Kind.SYMLINK


def test_a_directory_entry_after_the_symlink_replaces_it(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [*MERGED_USR, file("lib/through", b"t"), directory("lib"), file("lib/inside", b"i")],
    )
    assert content(tree, data, "/usr/lib/through") == b"t"
    assert content(tree, data, "/lib/inside") == b"i"
    assert at(tree, "/lib").kind is Kind.DIR


def test_a_hardlink_through_a_symlink_shares_the_file_where_it_leads(tmp_path: Path) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [*MERGED_USR, file("usr/lib/x", b"x")],
        [hardlink("y", "lib/x")],
        [hardlink("z", "lib/x")],
    )
    assert at(tree, "/y") == at(tree, "/usr/lib/x") == at(tree, "/z")
    same_layer, _ = flatten_layers(
        tmp_path / "same", [*MERGED_USR, file("usr/lib/x", b"x"), hardlink("y", "lib/x")]
    )
    assert at(same_layer, "/y") == at(same_layer, "/usr/lib/x")


@pytest.mark.parametrize(
    "layers",
    [
        [[symlink("lib", "lib"), file("lib/x")]],
        [[symlink("a", "b"), symlink("b", "a")], [file("a/x")]],
        [[symlink("lib", "lib/sub")], [file("lib/x")]],
    ],
    ids=["itself", "a cycle", "into itself"],
)
def test_a_symlink_loop_is_refused(tmp_path: Path, layers: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(Oci2vmError, match="too many levels of symbolic links"):
        flatten_layers(tmp_path, *layers)


def test_an_upper_layer_writing_one_path_both_ways_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match=r"write both '/lib/x' and '/usr/lib/x'"):
        flatten_layers(tmp_path, MERGED_USR, [file("lib/x"), file("usr/lib/x")])


def test_an_empty_symlink_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match="empty target"):
        flatten_layers(tmp_path, [symlink("lib", ""), file("lib/x")])


def test_an_entry_through_a_file_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match=r"passes through file '/lib'"):
        flatten_layers(tmp_path, [file("lib"), file("lib/x")])


def test_a_whiteout_through_a_lower_symlink_deletes_where_it_leads(tmp_path: Path) -> None:
    tree, _ = flatten_layers(tmp_path, [*MERGED_USR, file("usr/lib/x")], [whiteout("lib/x")])
    assert paths(tree) == {"/", "/usr", "/usr/lib", "/lib"}


def test_a_deletion_older_than_the_entry_written_through_the_symlink_leaves_it(
    tmp_path: Path,
) -> None:
    """Layer 2 deletes and lists /usr again, layer 3 writes through layer 1's symlink:
    usr's directory in the tree is layer 2's, so no newer layer deleted it."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("usr"), directory("usr/lib"), file("usr/lib/old"), symlink("lib", "usr/lib")],
        [whiteout("usr"), directory("usr"), directory("usr/lib")],
        [file("lib/x", b"x")],
    )
    assert content(tree, data, "/usr/lib/x") == b"x"
    assert "/usr/lib/old" not in paths(tree)


def test_a_deletion_newer_than_the_entry_written_through_the_symlink_hides_it(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [*MERGED_USR, file("usr/lib/old")],
        [file("lib/x", b"x")],
        [whiteout("usr"), directory("usr"), directory("usr/lib")],
    )
    assert "/usr/lib/x" not in paths(tree) and "/usr/lib/old" not in paths(tree)


def test_a_hardlink_above_takes_the_entry_moved_through_the_symlink(tmp_path: Path) -> None:
    """Layer 2 replaces layer 1's symlink c/a/a by writing through it (c/a/a/a is c/a/a);
    layer 3 links to c/a/a: the link shares layer 2's file, not layer 1's symlink."""
    tree, _ = flatten_layers(
        tmp_path,
        [directory("c"), directory("c/a"), symlink("c/a/a", "/c/a")],
        [file("c/a/a/a", b"two")],
        [hardlink("l", "c/a/a")],
    )
    assert at(tree, "/l") == at(tree, "/c/a/a")
    assert at(tree, "/l").kind is Kind.FILE


def test_an_entry_moved_through_the_symlink_that_a_newer_layer_hides_twice_is_gone(
    tmp_path: Path,
) -> None:
    """Layer 2 deletes /a (older than layer 3's entry through b), layer 4 replaces it with
    a file and then a directory (newer): only the newest deletion decides."""
    tree, _ = flatten_layers(
        tmp_path,
        [symlink("b", ".")],
        [whiteout("a")],
        [directory("b/a", mode=0o700), file("b/a/f")],
        [file("a"), directory("a", mode=0o750)],
    )
    assert at(tree, "/a").mode == 0o750
    assert "/a/f" not in paths(tree)


# --- a path that an upper layer replaces or deletes: what the layers between wrote below
# it waits for the layer that says what the path was for them (a symlink takes it where it
# leads, as a runtime wrote it; anything else, and it is gone with the path)


@pytest.mark.parametrize(
    "upper",
    [[symlink("lib", "usr/lib")], [whiteout("lib")], [file("lib", b"not a directory")]],
    ids=["the-symlink-again", "whiteout", "file"],
)
def test_an_entry_below_a_lower_symlink_that_an_upper_layer_replaces_stays_where_it_led(
    tmp_path: Path,
    upper: list,  # type: ignore[type-arg]
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [*MERGED_USR, file("usr/lib/old", b"old")],
        [directory("lib/sub", mode=0o700), file("lib/sub/new", b"new"), file("lib/top", b"t")],
        upper,
    )
    assert content(tree, data, "/usr/lib/sub/new") == b"new"
    assert content(tree, data, "/usr/lib/top") == b"t"
    assert content(tree, data, "/usr/lib/old") == b"old"
    assert at(tree, "/usr/lib/sub").mode == 0o700
    assert not any(p.startswith("/lib/") for p in paths(tree))


def test_below_an_opaque_directory_an_entry_through_a_lower_symlink_stays_where_it_led(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [directory("opt"), directory("opt/d"), directory("srv"), symlink("srv/l", "/opt/d")],
        [file("srv/l/x", b"x")],
        [directory("srv"), file("srv/.wh..wh..opq")],
    )
    assert content(tree, data, "/opt/d/x") == b"x"
    assert "/srv/l" not in paths(tree)


def test_a_symlink_deeper_than_the_deleted_path_decides_too(tmp_path: Path) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [directory("usr"), directory("usr/lib"), directory("a"), symlink("a/b", "/usr/lib")],
        [file("a/b/x", b"x"), file("a/y", b"y")],
        [whiteout("a")],
    )
    assert content(tree, data, "/usr/lib/x") == b"x"
    assert "/a" not in paths(tree)


@pytest.mark.parametrize(
    "between",
    [[], [whiteout("lib")], [directory("lib")], [file("lib")]],
    ids=["base-directory", "deleted-between", "directory-between", "file-between"],
)
def test_an_entry_below_a_directory_that_an_upper_layer_deletes_is_gone(
    tmp_path: Path,
    between: list,  # type: ignore[type-arg]
) -> None:
    base = [directory("lib"), file("lib/old")] if not between else MERGED_USR
    layers = [base, between] if between else [base]
    tree, _ = flatten_layers(tmp_path, *layers, [file("lib/x", b"x")], [whiteout("lib")])
    assert not any(p.endswith("/x") for p in paths(tree))


def test_entries_of_two_layers_below_a_replaced_symlink_merge_by_layer_order(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [*MERGED_USR, file("usr/lib/a", b"base")],
        [
            file("lib/a", b"older"),
            file("lib/b", b"older"),
            file("lib/f", b"f"),
            hardlink("lib/g", "lib/f"),
        ],
        [file("lib/b", b"newer")],
        [whiteout("lib")],
    )
    assert content(tree, data, "/usr/lib/a") == b"older"
    assert content(tree, data, "/usr/lib/b") == b"newer"
    assert at(tree, "/usr/lib/f") == at(tree, "/usr/lib/g")
    assert content(tree, data, "/usr/lib/g") == b"f"


def test_a_newer_deletion_where_the_symlink_leads_hides_what_moves_there(tmp_path: Path) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [*MERGED_USR],
        [file("lib/x", b"x")],
        [whiteout("usr/lib"), whiteout("lib")],
    )
    assert not any(p.endswith("/x") for p in paths(tree))


def test_a_hardlink_to_a_lower_file_below_a_replaced_symlink_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match="not supported"):
        flatten_layers(
            tmp_path,
            [*MERGED_USR, file("usr/lib/f", b"f")],
            [hardlink("lib/g", "usr/lib/f")],
            [whiteout("lib")],
        )


def test_an_opaque_root_hides_what_moves_through_a_symlink_below_it(tmp_path: Path) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [directory("c"), symlink("a", "c")],
        [file("a/x", b"x"), symlink("b", ".")],
        [file("b/y", b"y")],  # (b/y is /y)
        [file(".wh..wh..opq")],
    )
    assert paths(tree) == {"/"}


def test_a_hidden_file_through_the_symlink_ends_what_older_layers_put_where_it_leads(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [directory("a"), file("a/old", b"old"), symlink("b", ".")],
        [file("b/a", b"file")],  # (/a, the file, replaces the directory and what is in it)
        [directory("b/a", mode=0o700)],  # (/a, a directory again: empty)
    )
    assert paths(tree) == {"/", "/a", "/b"}
    assert at(tree, "/a").mode == 0o700


@pytest.mark.parametrize("replaced", [False, True], ids=["symlink-kept", "symlink-deleted"])
def test_a_hardlink_takes_the_file_written_through_the_symlink_where_a_newer_layer_hid_it(
    tmp_path: Path, replaced: bool
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [directory("a"), symlink("b", "a")],
        [file("b/f", b"two")],
        [*([whiteout("b")] if replaced else []), hardlink("h", "a/f")],
        [file("a", b"file")],
    )
    assert content(tree, data, "/h") == b"two"
    assert content(tree, data, "/a") == b"file"
    assert ("/b" in paths(tree)) is not replaced


def test_a_hardlink_takes_the_file_written_through_the_symlink_that_a_newer_entry_replaced(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        [symlink("b", ".")],
        [file("b/a", b"two")],  # (/a)
        [whiteout("b"), hardlink("h", "a")],
        [directory("a")],
    )
    assert content(tree, data, "/h") == b"two"
    assert at(tree, "/a").kind is Kind.DIR


def test_an_upper_directory_over_a_symlink_written_through_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match="lists as a directory: not supported"):
        flatten_layers(tmp_path, MERGED_USR, [file("lib/foo")], [directory("lib")])
    # (a layer between that says what lib is settles it; so does the symlink's own layer
    # listing it before writing below it)
    tree, data = flatten_layers(
        tmp_path / "settled",
        MERGED_USR,
        [directory("lib")],
        [file("lib/foo", b"f")],
        [directory("lib")],
    )
    assert content(tree, data, "/lib/foo") == b"f"


def test_a_layer_that_writes_below_a_path_and_then_makes_it_a_symlink_is_not_refused(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(
        tmp_path,
        [directory("b"), directory("a")],
        [file("b/x", b"x"), symlink("b", "a")],  # (b/x went into the directory b, then gone)
        [directory("b")],
    )
    assert at(tree, "/b").kind is Kind.DIR
    assert "/b/x" not in paths(tree) and "/a/x" not in paths(tree)


def test_below_an_opaque_root_a_hardlink_finds_a_file_written_through_a_symlink(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(  # (was refused: the link's target "did not exist")
        tmp_path,
        [directory("b"), symlink("b/a", "../b"), file("b/a/f", b"f")],  # (b/f)
        [hardlink("h", "b/f")],
        [file(".wh..wh..opq")],
    )
    assert paths(tree) == {"/"}


def test_a_newer_directory_moved_by_one_symlink_replaces_another_of_the_same_layer(
    tmp_path: Path,
) -> None:
    """Layer 2 writes c -> . then, through it, a -> a (a loop); layer 3 makes c/a, that
    is /a, a directory; layer 4 writes in it. Applied in order: /a is layer 3's directory
    (with layer 4's file), the loop never followed, and what layers 1 and 2 put at /a gone."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("a"), file("a/old", b"old")],
        [file("a/mine"), symlink("c", "."), symlink("c/a", "a")],
        [directory("c/a", mode=0o700)],
        [file("a/a", b"new")],
    )
    assert at(tree, "/a").kind is Kind.DIR and at(tree, "/a").mode == 0o700
    assert content(tree, data, "/a/a") == b"new"
    assert at(tree, "/c").kind is Kind.SYMLINK
    assert sorted(p for p in paths(tree) if p.startswith("/a/")) == ["/a/a"]


def test_what_layers_between_wrote_through_a_symlink_a_newer_directory_replaces_stays_there(
    tmp_path: Path,
) -> None:
    """Layer 2 writes c -> . and a -> x (through c); layer 3 writes a/f, through a, to
    /x/f; layer 4 makes /a a directory (c/a/), layer 5 writes a/g in it."""
    layers = [
        [directory("x")],
        [symlink("c", "."), symlink("c/a", "x")],
        [directory("a/d", mode=0o700), file("a/d/f", b"f")],
        [directory("c/a")],
        [file("a/d/g", b"g")],
    ]
    tree, data = flatten_layers(tmp_path, *layers)
    assert content(tree, data, "/x/d/f") == b"f" and at(tree, "/x/d").mode == 0o700
    assert content(tree, data, "/a/d/g") == b"g" and at(tree, "/a/d").mode == 0o755
    assert at(tree, "/a").kind is Kind.DIR
    assert "/a/d/f" not in paths(tree) and "/x/d/g" not in paths(tree)
    # The same path written by a layer between and by one after: two places, refused.
    layers[4].append(file("a/d/f", b"again"))
    with pytest.raises(Oci2vmError, match=r"layer 3 writes '/a/d/f' through .* not supported"):
        flatten_layers(tmp_path / "again", *layers)


def test_what_a_layer_wrote_below_a_path_before_making_it_a_symlink_is_gone(
    tmp_path: Path,
) -> None:
    """Layer 2 writes c/b/a, then makes c a symlink to a; layer 3 writes c/b, through c,
    to /a/b. Layer 2's c/b/a went with the directory c, whatever layer 3 put at c/b."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("a"), directory("c"), directory("c/b")],
        [file("c/b/a", b"gone"), symlink("c", "a")],
        [file("c/b", b"b")],
    )
    assert content(tree, data, "/a/b") == b"b"
    assert at(tree, "/c").kind is Kind.SYMLINK
    assert [p for p in paths(tree) if p.startswith(("/a/", "/c/"))] == ["/a/b"]


DEEP = "/".join(["a"] * 2000)  # deeper than Python's recursion limit


@pytest.mark.parametrize(
    ("layers", "kept"),
    [
        ([[*MERGED_USR, file(f"usr/lib/d/{DEEP}/x")], [file(f"lib/d/{DEEP}/y")]], True),
        (
            [
                [*MERGED_USR, file(f"usr/lib/d/{DEEP}/x")],
                [file(f"usr/lib/d/{DEEP}/y")],
                [opaque("lib/d")],
            ],
            False,
        ),
        (
            [
                [directory("c"), symlink("c/l", "../usr/lib"), *MERGED_USR],
                [file(f"c/l/d/{DEEP}/y")],
                [file("c")],
            ],
            True,
        ),
        (
            [
                [directory("x")],
                [symlink("c", "."), symlink("c/a", "x")],
                [file(f"a/{DEEP}/f")],
                [directory("c/a")],
                [file(f"a/{DEEP}/g")],
            ],
            True,
        ),
    ],
    ids=["merged", "pruned", "limbo", "split"],
)
def test_deep_trees_moved_through_symlinks_do_not_overflow_the_stack(
    tmp_path: Path, layers: list[list[Member]], kept: bool
) -> None:
    tree, _ = flatten_layers(tmp_path, *layers)
    depth = max(p.count("/") for p in paths(tree))
    assert depth > 2000 if kept else depth == 3  # (the opaque marker pruned it)


@pytest.mark.parametrize(
    "hiders",
    [
        [[directory("b")]],
        [[directory("b")], [directory("b")]],
        [[whiteout("b")]],
        [[file("b", b"f")]],
        [[directory("b"), whiteout("a")]],  # (layer 2's a/x waits in a limbo then)
    ],
)
def test_a_symlink_on_the_way_that_only_a_newer_layer_replaces_is_followed(
    tmp_path: Path, hiders: list[list[Member]]
) -> None:
    """a -> b -> c (layer 1), layer 2 writes a/x, a newer layer replaces or deletes b:
    layer 2 went through both symlinks to c/x (umoci: so does a runtime), not to b/x."""
    layers = [[directory("c"), symlink("b", "c"), symlink("a", "b")], [directory("a/x")]]
    layers += hiders
    tree, _ = flatten_layers(tmp_path, *layers)
    assert "/c/x" in paths(tree)
    assert not any(p.startswith("/b/") for p in paths(tree))
