"""Layer orders no tar writer makes, that runtimes unpack differently or refuse: an upper
layer writing below a lower layer's file it never makes a directory (ENOTDIR in containerd,
moby and umoci: refused), and a layer writing (or linking) below a lower layer's symlink
before it lists or deletes that path itself (refused; fine without a symlink there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.tree.model import Kind
from support.flattened import at, flatten_layers, paths
from support.layouts import Member, directory, file, hardlink, symlink, whiteout


@pytest.mark.parametrize(
    "lower",
    [
        [file("lib")],
        [directory("lib"), file("lib")],  # (the layer's last entry there wins)
        [file("lib"), directory("lib"), file("lib")],
        [hardlink("lib", "x"), file("x")][::-1],
    ],
)
def test_an_upper_layer_writing_below_a_lower_file_it_never_replaced_is_refused(
    tmp_path: Path, lower: list[Member]
) -> None:
    """containerd, moby and umoci find a non-directory where the parent must be: ENOTDIR."""
    with pytest.raises(
        Oci2vmError,
        match=r"upper layers write below '/lib', which is a file here that they never make "
        r"a directory \(a runtime fails on them: not a directory\)",
    ):
        flatten_layers(tmp_path, lower, [file("lib/x")])


def test_a_lower_file_replaced_by_a_directory_later_in_its_layer_takes_upper_entries(
    tmp_path: Path,
) -> None:
    tree, _ = flatten_layers(tmp_path, [file("lib"), directory("lib")], [file("lib/x")])
    assert {"/lib", "/lib/x"} <= paths(tree)
    tree, _ = flatten_layers(tmp_path / "2", [file("lib")], [directory("lib"), file("lib/x")])
    assert at(tree, "/lib").kind is Kind.DIR


@pytest.mark.parametrize(
    "then", [symlink("d", "real"), file("d", b"F"), directory("d"), whiteout("d")]
)
def test_entries_a_layer_wrote_through_a_lower_symlink_it_then_replaces_are_refused(
    tmp_path: Path, then: Member
) -> None:
    """A runtime wrote d/y through layer 1's symlink, to /real/y, before the entry at d
    replaced it; the tree would have kept y at /d/y or lost it: refused instead."""
    with pytest.raises(
        Oci2vmError,
        match=r"layer 2 \(\w+\) writes or links below '/d' before it lists or deletes that path, "
        r"where "
        r"layer 1 \(\w+\) has a symlink: .* not supported",
    ):
        flatten_layers(tmp_path, [directory("real"), symlink("d", "real")],
                       [file("d/y", b"Y"), then])  # fmt: skip


def test_a_link_through_a_lower_symlink_its_layer_then_lists_is_refused_as_such(
    tmp_path: Path,
) -> None:
    lower = [directory("real"), file("real/a", b"A"), symlink("d", "real")]
    with pytest.raises(Oci2vmError, match=r"links below '/d' .* not supported"):
        flatten_layers(tmp_path, lower, [hardlink("h", "d/a"), symlink("d", "real")])
    tree, data = flatten_layers(tmp_path / "2", lower, [hardlink("h", "d/a")])
    assert data[at(tree, "/h")] == b"A" and at(tree, "/h") == at(tree, "/real/a")


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        # Nothing below d: the runtime made the directory, then kept it or replaced it.
        ([[directory("real")], [file("d/y"), directory("d")]], {"/d", "/d/y", "/real"}),
        ([[directory("real")], [file("d/y"), symlink("d", "real")]], {"/d", "/real"}),
        # A directory below d; or a layer between that deletes or lists the symlink.
        ([[directory("d"), file("d/z")], [file("d/y"), directory("d")]], {"/d", "/d/y", "/d/z"}),
        ([[directory("real"), symlink("d", "real")], [whiteout("d")],
          [file("d/y"), directory("d")]], {"/d", "/d/y", "/real"}),
        ([[directory("real"), symlink("d", "real")], [directory("d")],
          [file("d/y"), directory("d")]], {"/d", "/d/y", "/real"}),
    ],
)  # fmt: skip
def test_a_path_listed_after_what_its_layer_wrote_below_it_is_fine_without_a_lower_symlink(
    tmp_path: Path, layers: list[list[Member]], expected: set[str]
) -> None:
    tree, _ = flatten_layers(tmp_path, *layers)
    assert paths(tree) == {"/", *expected}
