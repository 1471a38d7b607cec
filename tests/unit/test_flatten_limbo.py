"""Flattening where newer layers hide the way: what upper layers wrote through a
symlink (their own, a lower layer's, one of a layer between) when a newer layer deletes,
replaces or empties a directory on the way, as docker and umoci unpack it (most found by
the differential test against umoci, tests/integration/test_flatten_differential.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import Kind
from support.flattened import at, content, flatten_layers, paths
from support.layouts import Member, directory, file, hardlink, opaque, symlink, whiteout


@pytest.mark.parametrize("listed", [False, True])
def test_a_write_through_a_symlink_in_a_replaced_implicit_directory_goes_where_it_leads(
    tmp_path: Path, listed: bool
) -> None:
    """Layer 2 writes a symlink a/a -> ../b, listing a or not; layer 3 writes a/a/x
    through it (a runtime puts x at /b/x); layer 4 replaces a with a file. Unlisted, what
    a was for layer 3 is known only below layer 2, whose own entries wait in a limbo too:
    oci2vm dropped x silently (found by the differential test, seed 424242), then refused;
    now layer 3 meets layer 2's symlink as a runtime does."""
    layers = [
        [directory("a"), directory("b"), directory("b/x")],
        [*([directory("a")] if listed else []), symlink("a/a", "../b")],
        [file("a/a/x", b"through")],
        [file("a")],
    ]
    tree, data = flatten_layers(tmp_path, *layers)
    assert content(tree, data, "/b/x") == b"through"
    assert at(tree, "/a").kind is Kind.FILE
    assert paths(tree) == {"/", "/a", "/b", "/b/x"}


def test_a_layer_between_decides_by_its_newest_entry_in_the_limbo(tmp_path: Path) -> None:
    """As above with two layers between: the newer one's directory at a/a (unlisted a)
    is what layer 4 met, so its x is gone with a; below it, the newer one's symlink
    a/a/d -> ../../c takes layer 4's a/a/d/y to /c/y."""
    layers = [
        [directory("a"), directory("b"), directory("c")],
        [symlink("a/a", "../b")],
        [directory("a/a"), symlink("a/a/d", "../../c")],
        [file("a/a/x", b"gone"), file("a/a/d/y", b"through")],
        [file("a")],
    ]
    tree, data = flatten_layers(tmp_path, *layers)
    assert content(tree, data, "/c/y") == b"through"
    assert paths(tree) == {"/", "/a", "/b", "/c", "/c/y"}


@pytest.mark.parametrize(
    "hider",
    [[whiteout("b")], [file("b", b"a file now")], [directory("b"), opaque("b")]],
    ids=["whiteout", "file", "opaque"],
)
def test_what_a_layer_wrote_through_its_symlink_survives_when_upper_layers_hide_the_way(
    tmp_path: Path, hider: list[Member]
) -> None:
    """b/a -> ../c, then b/a/f: the runtime wrote c/f, which an upper layer deleting or
    replacing b leaves (and a middle layer's hardlink to it is served)."""
    lower = [directory("b"), directory("c"), symlink("b/a", "../c"), file("b/a/f", b"x")]
    tree, data = flatten_layers(tmp_path, lower, [hardlink("h", "c/f")], hider)
    assert content(tree, data, "/c/f") == b"x"
    assert at(tree, "/h") == at(tree, "/c/f")  # one inode (a view per lookup)
    assert not {"/b/a", "/b/a/f"} & paths(tree)


def test_a_symlink_written_through_its_layers_symlink_is_a_hardlinks_target_under_opaque(
    tmp_path: Path,
) -> None:
    """b/a -> ../b makes b/a/b the path b/b: a link to b/b in the layer above gets that
    symlink although the top layer's opaque marker empties b."""
    tree, _ = flatten_layers(
        tmp_path,
        [directory("b"), symlink("b/a", "../b"), symlink("b/a/b", "a")],
        [hardlink("a/a/a", "b/b")],
        [directory("b"), opaque("b")],
    )
    link = at(tree, "/a/a/a")
    assert (link.kind, link.target) == (Kind.SYMLINK, b"a")
    assert paths(tree) == {"/", "/a", "/a/a", "/a/a/a", "/b"}


def test_entries_moved_through_a_lower_symlink_follow_a_symlink_of_a_layer_between(
    tmp_path: Path,
) -> None:
    """Layer 1: a/a -> /c/a; layer 2: c -> d; layer 3 writes a/a/b/ and a/a/f, which a
    runtime puts where a/a leads once layer 2's symlink is followed too: /d/a/b, /d/a/f
    (refused as 'not a directory for some of them', or dropped, before)."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("a"), directory("d"), directory("d/a"), symlink("a/a", "/c/a")],
        [symlink("c", "d")],
        [directory("a/a/b"), file("a/a/f", b"x")],
    )
    assert content(tree, data, "/d/a/f") == b"x"
    assert at(tree, "/d/a/b").kind is Kind.DIR
    assert at(tree, "/a/a").kind is Kind.SYMLINK and at(tree, "/c").kind is Kind.SYMLINK


def test_entries_moved_through_a_lower_symlink_follow_their_own_layers_earlier_symlink(
    tmp_path: Path,
) -> None:
    """Layer 1: a/a -> /c/x; layer 2: c -> d, then a/a/f (through layer 1's symlink, then
    its own: /d/x/f). Had layer 2 written c after a/a/f, f would have gone with the
    directory c that c's symlink replaced: that order is refused (which of its entries
    came before, oci2vm does not keep)."""
    lower = [directory("a"), directory("d"), symlink("a/a", "/c/x")]
    tree, data = flatten_layers(tmp_path / "1", lower, [symlink("c", "d"), file("a/a/f", b"1")])
    assert content(tree, data, "/d/x/f") == b"1"
    assert at(tree, "/c").target == b"d"
    # ... also when a newer layer replaced that symlink since: f went through it before
    tree, data = flatten_layers(
        tmp_path / "3", lower, [symlink("c", "d"), file("a/a/f", b"1")], [file("c", b"c")]
    )
    assert content(tree, data, "/d/x/f") == b"1"
    assert at(tree, "/c").kind is Kind.FILE
    # ... and when a newer layer's opaque marker empties a (f waits in a limbo then)
    opaque_a = [directory("a"), opaque("a")]
    tree, data = flatten_layers(
        tmp_path / "4", lower, [symlink("c", "d"), file("a/a/f", b"1")], opaque_a
    )
    assert content(tree, data, "/d/x/f") == b"1"
    assert "/a/a" not in paths(tree)
    with pytest.raises(Oci2vmError, match=r"upper layers write below '/a/a'.*not supported"):
        flatten_layers(tmp_path / "2", lower, [file("a/a/f", b"1"), symlink("c", "d")])


def test_a_layers_whiteout_leaves_what_it_writes_there_through_a_lower_symlink(
    tmp_path: Path,
) -> None:
    """Layer 2 whites out b and writes a/b/new through layer 1's a -> . (so /b/new):
    the whiteout hides layer 1's b/old only (whiteouts touch the layers below); layer 3
    then replaces a. Was refused ('which other upper layers delete')."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("b"), file("b/old", b"o"), symlink("a", ".")],
        [whiteout("b"), directory("a/b"), file("a/b/new", b"n")],
        [file("a", b"file")],
    )
    assert content(tree, data, "/b/new") == b"n"
    assert paths(tree) == {"/", "/a", "/b", "/b/new"}


def test_a_link_gets_the_entry_a_lower_symlink_moves_onto_its_target_later(
    tmp_path: Path,
) -> None:
    """Layer 3 writes b/b/a, which layer 1's b/b -> ../b puts on /b/a over layer 2's
    entry there; layer 4 links h to b/a: a runtime links layer 3's file. oci2vm resolved
    the link at layer 2 (its entry at /b/a) before layer 1 moved layer 3's onto it."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("b"), symlink("b/b", "../b")],
        [file("b/a", b"layer 2")],
        [file("b/b/a", b"layer 3")],
        [hardlink("h", "b/a")],
    )
    assert content(tree, data, "/h") == content(tree, data, "/b/a") == b"layer 3"
    assert at(tree, "/h") == at(tree, "/b/a")


@pytest.mark.parametrize("hider", [[file("a", b"now a file")], [whiteout("a")]])
def test_an_entry_that_left_a_replaced_directory_through_a_lower_symlink_stays(
    tmp_path: Path, hider: list[Member]
) -> None:
    """Layer 2 lists a/ and writes a/a/b, which layer 1's a/a -> /d puts at /d/b; layer 3
    replaces or deletes a: /d/b is not in a (dropped silently before). Layer 2 said what
    a was, not what a/a was: that waits for layer 1."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("a"), directory("d"), symlink("a/a", "/d")],
        [directory("a"), file("a/a/b", b"x")],
        hider,
    )
    assert content(tree, data, "/d/b") == b"x"
    assert "/a/a" not in paths(tree)


def test_a_link_to_an_entry_hidden_where_a_lower_symlink_took_it_is_served(
    tmp_path: Path,
) -> None:
    """Layer 2: c -> ., then a/a/b through layer 1's a/a -> /c/a (so /a/b); layer 3 links
    h to a/b; layer 4 makes a a file. h keeps layer 2's file (it was refused: 'does not
    exist')."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("a"), symlink("a/a", "/c/a")],
        [directory("a"), symlink("c", "."), file("a/a/b", b"x")],
        [hardlink("h", "a/b")],
        [file("a", b"a file")],
    )
    assert content(tree, data, "/h") == b"x"
    assert at(tree, "/a").kind is Kind.FILE
