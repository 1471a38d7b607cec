"""The cleanup step: the container runtime's markers go, nothing else does."""

from __future__ import annotations

from pathlib import Path

from oci2vm.prepare import cleanup
from oci2vm.tree.model import lookup
from support.layouts import directory, file
from support.prepared import entry, flattened, run_step


def test_runtime_markers_are_removed_and_their_neighbours_kept(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path,
        [
            file(".dockerenv"),
            file(".dockerinit-not-a-marker"),
            directory("run"),
            file("run/.containerenv", b'engine="podman"\n'),
            file("run/keep"),
        ],
    )
    assert run_step(tree, cleanup.STEP) == []
    assert lookup(tree.root, "/.dockerenv") is None
    assert lookup(tree.root, "/run/.containerenv") is None
    assert sorted(entry(tree, "/run").children or {}) == ["keep"]
    assert lookup(tree.root, "/.dockerinit-not-a-marker") is not None


def test_cleanup_of_an_image_without_markers_changes_nothing(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), file("etc/motd", b"hi\n")])
    assert run_step(tree, cleanup.STEP) == []
    assert sorted(tree.root.children or {}) == ["etc"]
