"""What keeps the memory a tree and the ext4 writer hold per entry small (issue 13): the tree
is rows of typed arrays (tree/columns.py), and the writer keeps a file's placement compactly."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from oci2vm.fs.ext4.inode import MAX_EXTENT_LEN, pack_leaves
from oci2vm.fs.ext4.placements import Placements
from oci2vm.layers.flatten import flatten
from oci2vm.sources import Fetch, resolve
from oci2vm.tree.model import BytesData, Inode, Kind, LayerData, StreamedData, new_dir
from support.ext4check import build
from support.ext4trees import every_case_tree
from support.flattened import at, flatten_layers
from support.layouts import directory, file, write_layout


def test_a_flattened_tree_holds_rows_not_objects(tmp_path: Path) -> None:
    # 3000 files: what the tree keeps per entry, measured as the interpreter allocates it.
    layer = [directory("d", mtime=1)] + [file(f"d/file{i:05}", b"x", mtime=2) for i in range(3000)]
    write_layout(tmp_path / "img", [layer])
    image = resolve(f"oci:{tmp_path / 'img'}", Fetch())
    tracemalloc.start()
    try:
        tree = flatten(image, sink=lambda inode, data: None)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tree.entries == 3001
    assert held / 3001 < 120  # ~260 with an object, a str and a dict slot per entry


def test_one_extent_files_keep_no_leaf_entries() -> None:
    store = Placements()
    empty, one, far, several = (Inode(Kind.FILE) for _ in range(4))
    assert store.add(empty, []) == 0
    assert store.add(one, [(0, 100, 3)]) == 1
    assert store.add(far, [(0, 1 << 33, MAX_EXTENT_LEN + 1)]) == 2  # split in two leaves
    assert store.add(several, [(0, 100, 1), (5, 200, 2)]) == 3
    assert store._packed.keys() == {2, 3}
    assert [store.key(i) for i in (empty, one, far, several)] == [0, 1, 2, 3]
    assert store.packed(0) == b"" and list(store.runs(0)) == [] and store.extent_count(0) == 0
    assert store.packed(1) == pack_leaves([(0, 100, 3)]) and list(store.runs(1)) == [(100, 3)]
    assert store.extent_count(2) == 2
    assert list(store.runs(3)) == [(100, 1), (200, 2)] and store.extent_count(3) == 2
    assert store.packed(3) == pack_leaves([(0, 100, 1), (5, 200, 2)])


def test_a_key_another_store_gave_is_not_taken_for_ones_own() -> None:
    first, second = Placements(), Placements()
    a, b = Inode(Kind.FILE), Inode(Kind.FILE)
    first.add(a, [])
    first.add(b, [(0, 7, 1)])
    assert second.key(b) is None  # b's key is 1, beyond what the second store holds
    second.add(b, [])
    assert second.key(a) is None  # a's key is 0, where the second store holds b
    assert first.key(b) is None  # b's key is now the second store's


def test_one_tree_written_by_two_writers_gives_one_image(tmp_path: Path) -> None:
    root = every_case_tree()
    build(root, tmp_path / "1.ext4")
    build(root, tmp_path / "2.ext4")
    assert (tmp_path / "1.ext4").read_bytes() == (tmp_path / "2.ext4").read_bytes()


def test_delivered_files_keep_a_flag_not_a_data_record(tmp_path: Path) -> None:
    tree, data = flatten_layers(tmp_path, [file("a", b"one"), file("b", b"two"), file("c", b"4")])
    a, b, c = at(tree, "/a"), at(tree, "/b"), at(tree, "/c")
    assert a.data == b.data == StreamedData(3)
    assert c.data == StreamedData(1)
    assert not tree.root.store.other  # the size column says it
    assert (data[a], data[b], data[c]) == (b"one", b"two", b"4")


def test_without_a_sink_files_keep_where_their_bytes_are(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", [[file("a", b"one")]])
    tree = flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()))
    assert at(tree, "/a").data == LayerData(0, 512, 3)


def test_views_of_one_row_are_one_inode() -> None:
    root = new_dir()
    assert root.children is not None
    root.children["a"] = Inode(Kind.FILE, size=3)
    first, second = root.children["a"], root.children["a"]
    assert first == second and hash(first) == hash(second) and first is not second
    assert len({first, second}) == 1 and first != root


def test_what_one_kind_has_shares_one_slot() -> None:
    directory_ = Inode(Kind.DIR, children={})
    assert directory_.children == {} and directory_.data is None and directory_.target is None
    directory_.data = None  # clears only data, which it does not hold
    directory_.target = None
    directory_.rdev_major = 0
    assert directory_.children == {}
    regular = Inode(Kind.FILE, data=BytesData(b"x"), size=1)
    assert regular.data == BytesData(b"x") and regular.children is None
    regular.data = None
    assert regular.data is None
    link = Inode(Kind.SYMLINK, target=b"/x", size=2)
    assert (link.target, link.data, link.children, link.rdev_major) == (b"/x", None, None, 0)
    device = Inode(Kind.CHAR, rdev_major=1, rdev_minor=3)
    assert (device.rdev_major, device.rdev_minor, device.target) == (1, 3, None)
    device.rdev_minor = 5
    assert (device.rdev_major, device.rdev_minor) == (1, 5)
    device.rdev_major, device.rdev_minor = 0, 0
    assert (device.rdev_major, device.rdev_minor, device.data) == (0, 0, None)


def test_an_inode_shows_what_is_not_default() -> None:
    inode = Inode(Kind.SYMLINK, mode=0o777, target=b"t", size=1)
    assert repr(inode) == "Inode(kind=<Kind.SYMLINK: 'symlink'>, mode=511, size=1, target=b't')"
