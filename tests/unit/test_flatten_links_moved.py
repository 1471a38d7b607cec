"""Flattening: hardlinks whose target reaches its path only when a lower layer's symlink
moves upper layers' entries where it leads. A runtime applying the layers in order links
to what stands at the target when it reaches the link; these stacks are checked against
`umoci raw unpack` by the differential test (tests/integration), which found them."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import Kind
from support.flattened import at, content, flatten_layers, paths
from support.layouts import Member, directory, file, hardlink, opaque, symlink, whiteout

# /c/a leads to /b: what upper layers write below c/a lands in /b.
THROUGH = [directory("b"), directory("c"), symlink("c/a", "../b")]


@pytest.mark.parametrize(
    "later",
    [directory("c/a/b"), file("c/a/b", b"newer")],
    ids=["a directory", "a file"],
)
def test_a_link_takes_a_file_written_through_the_symlink_that_its_own_layer_then_replaced(
    tmp_path: Path, later: Member
) -> None:
    tree, data = flatten_layers(
        tmp_path,
        THROUGH,
        [file("c/a/b", b"between")],
        [hardlink("a", "b/b"), later],
    )
    assert content(tree, data, "/a") == b"between"
    replaced = at(tree, "/b/b")
    assert replaced != at(tree, "/a")
    assert replaced.kind is (Kind.DIR if later.info.isdir() else Kind.FILE)


def test_a_link_takes_the_file_its_own_layer_wrote_through_the_symlink_before_it(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(
        tmp_path, THROUGH, [file("b/b", b"lower")], [file("c/a/b", b"mine"), hardlink("a", "b/b")]
    )
    assert at(tree, "/a") == at(tree, "/b/b")
    assert content(tree, data, "/a") == b"mine"
    # Written after the link, the layer's own file replaces the target the link took.
    tree, data = flatten_layers(
        tmp_path / "after",
        THROUGH,
        [file("b/b", b"lower")],
        [hardlink("a", "b/b"), file("c/a/b", b"mine")],
    )
    assert content(tree, data, "/a") == b"lower"
    assert content(tree, data, "/b/b") == b"mine"


def test_a_link_takes_what_its_own_layer_wrote_through_the_symlink_then_replaced(
    tmp_path: Path,
) -> None:
    tree, data = flatten_layers(
        tmp_path, THROUGH, [file("c/a/b", b"mine"), hardlink("a", "b/b"), directory("c/a/b")]
    )
    assert content(tree, data, "/a") == b"mine"
    assert at(tree, "/b/b").kind is Kind.DIR


def test_a_link_takes_the_newest_file_written_before_it_through_two_symlinks(
    tmp_path: Path,
) -> None:
    """c/a leads to e, e to d: layer 3's c/a/b is /d/b, which layer 4 links and replaces."""
    tree, data = flatten_layers(
        tmp_path,
        [directory("d"), symlink("e", "d")],
        [directory("c"), symlink("c/a", "../e")],
        [file("c/a/b", b"first")],
        [file("c/a/b", b"second")],
        [hardlink("a", "d/b"), directory("c/a/b")],
    )
    assert content(tree, data, "/a") == b"second"
    assert at(tree, "/d/b").kind is Kind.DIR


def test_a_link_to_a_file_written_through_the_symlink_only_after_its_layer_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(Oci2vmError, match=r"hardlink '/a' points to '/b/b', which does not exist"):
        flatten_layers(
            tmp_path, THROUGH, [hardlink("a", "b/b"), directory("c/a/b")], [file("c/a/b")]
        )


def test_a_link_in_a_replaced_directory_stays_out_of_the_symlink_beside_it(
    tmp_path: Path,
) -> None:
    """Layer 3 writes c/b, a link to a lower file, and c/a/d through c/a; layer 4 makes c a
    file. Only c/a/d leaves c: to /b/d. (The link went with c.)"""
    tree, data = flatten_layers(
        tmp_path,
        [*THROUGH, file("x", b"x")],
        [directory("c/b"), hardlink("c/b/l", "x"), directory("c/a/d"), file("c/a/d/f", b"f")],
        [file("c", b"c")],
    )
    assert content(tree, data, "/b/d/f") == b"f"
    assert content(tree, data, "/c") == b"c"
    # A link to a lower file that the symlink would move is refused, not left behind.
    with pytest.raises(Oci2vmError, match=r"hardlink to a lower file below '/c/a' goes where"):
        flatten_layers(
            tmp_path / "moved", THROUGH, [file("x", b"x")], [hardlink("c/a/l", "x")], [file("c")]
        )


def test_what_the_symlinks_target_loses_in_a_layer_between_is_gone_and_newer_entries_stay(
    tmp_path: Path,
) -> None:
    """Layer 2 writes c/a/a/ (to /b/a), layer 3 deletes /b (or makes it a file, then a
    directory again; or hides what is in it), layer 4 writes c/a/b (to /b/b)."""
    lower = [*THROUGH, file("b/a", b"lower")]
    written = [directory("c/a/a"), file("c/a/a/x", b"gone")]
    for number, between in enumerate(
        [[file("b"), directory("b")], [directory("b"), whiteout("b/a")]]
    ):
        tree, data = flatten_layers(
            tmp_path / str(number), lower, written, between, [file("c/a/b", b"new")]
        )
        assert content(tree, data, "/b/b") == b"new"
        assert not any(p.startswith("/b/a") for p in paths(tree)), between
    # The deleting layer also writes through the symlink: which came first is not known.
    with pytest.raises(Oci2vmError, match=r"layer 3 deletes on the way to '/b'"):
        flatten_layers(
            tmp_path / "same",
            lower,
            written,
            [file("b"), directory("b"), file("c/a/y")],
            [file("c/a/b")],
        )


@pytest.mark.parametrize("marker", [opaque("c/a"), whiteout("c/a/b")], ids=["opaque", "whiteout"])
def test_a_link_keeps_the_file_a_later_marker_through_the_symlink_deletes(
    tmp_path: Path, marker: Member
) -> None:
    """Layer 2 writes c/a/b (to /b/b); layer 3 links a to /b/b, then deletes it through
    c/a: the link keeps the file (found by the differential fuzzer, seed 5)."""
    tree, data = flatten_layers(
        tmp_path,
        [*THROUGH, file("b/a")],
        [file("c/a/b", b"between")],
        [hardlink("a", "b/b"), marker],
    )
    assert content(tree, data, "/a") == b"between"
    assert "/b/b" not in paths(tree)
