"""Layers flattened the way the unit tests need them: written as an OCI layout, read
back through oci2vm.sources, merged by oci2vm.layers.flatten with a sink that keeps each
file's bytes (and fails if any file's data is delivered twice)."""

from __future__ import annotations

from pathlib import Path

from oci2vm.layers.flatten import flatten
from oci2vm.sources import Fetch, resolve
from oci2vm.tree.model import DataReader, Inode, Tree, lookup, walk
from support.layouts import Layer, write_layout


def flatten_layers(
    tmp_path: Path, *layers: Layer, compression: str = "gzip"
) -> tuple[Tree, dict[Inode, bytes]]:
    """The tree of `layers` (bottom first) and each delivered file's bytes by inode."""
    write_layout(tmp_path / "img", list(layers), compression=compression)
    image = resolve(f"oci:{tmp_path / 'img'}", Fetch())
    data: dict[Inode, bytes] = {}

    def sink(inode: Inode, stream: DataReader) -> None:
        assert inode not in data, "data delivered twice"
        pieces = []
        while piece := stream.view(1 << 20):
            pieces.append(bytes(piece))
        data[inode] = b"".join(pieces)

    return flatten(image, sink=sink), data


def paths(tree: Tree) -> set[str]:
    return {p for p, _ in walk(tree.root)}


def at(tree: Tree, path: str) -> Inode:
    inode = lookup(tree.root, path)
    assert inode is not None, f"{path} is not in the tree"
    return inode


def content(tree: Tree, data: dict[Inode, bytes], path: str) -> bytes:
    return data.get(at(tree, path), b"")
