"""The tree's rows (tree/columns.py): every value an Inode can hold comes back exactly, a
directory behaves as a dict of its entries (checked against one over random operations),
and an inode placed in another tree's store moves there with what is below it."""

from __future__ import annotations

import random

from oci2vm.fs.ext4.placements import Placements
from oci2vm.tree.columns import FIRST, LAST, Store
from oci2vm.tree.model import BytesData, Inode, Kind, LayerData, StreamedData, new_dir


def test_values_past_a_columns_width_come_back_exactly() -> None:
    big = Inode(
        Kind.FILE,
        mode=0o170777,
        uid=1 << 40,
        gid=0xFFFFFFFF,  # the column's own sentinel
        mtime_ns=1 << 70,
        atime_ns=-(1 << 63),
        ctime_ns=-5,
        size=(1 << 63) + 1,
        layer=40_000,
        writer_key=-1,
    )
    assert (big.mode, big.uid, big.gid, big.mtime_ns) == (0o170777, 1 << 40, 0xFFFFFFFF, 1 << 70)
    assert (big.atime_ns, big.ctime_ns, big.size, big.layer) == (
        -(1 << 63),
        -5,
        (1 << 63) + 1,
        40_000,
    )
    big.uid, big.mtime_ns, big.atime_ns = 7, -1, None
    assert (big.uid, big.mtime_ns, big.atime_ns) == (7, -1, None)
    assert not {key for key in big.store.wide if key[1] == big.row and key[0] in (3, 5, 11)}


def test_times_are_none_until_a_row_has_one() -> None:
    store = Store()
    a = Inode(Kind.FILE, store=store)
    assert a.atime_ns is None and a.ctime_ns is None and store.times == [None, None]
    b = Inode(Kind.FILE, atime_ns=5, store=store)
    c = Inode(Kind.FILE, store=store)
    assert (a.atime_ns, b.atime_ns, c.atime_ns) == (None, 5, None)


def test_a_streamed_file_keeps_its_size_when_its_size_changes() -> None:
    inode = Inode(Kind.FILE, size=10, data=StreamedData(10))
    assert inode.data == StreamedData(10) and not inode.store.other
    inode.size = 20
    assert inode.data == StreamedData(10)
    sparse = Inode(Kind.FILE, size=9, data=LayerData(0, 512, 3, ((6, 3),)))
    assert sparse.data == LayerData(0, 512, 3, ((6, 3),))


def test_a_directory_is_a_dict_of_its_entries() -> None:
    rng = random.Random(13)
    root = new_dir()
    assert root.children is not None
    model: dict[str, int] = {}
    files = [Inode(Kind.FILE, size=i, store=root.store) for i in range(40)]
    names = [f"n{i}" for i in range(60)] + ["\udcff raw", "é", ""]
    for _ in range(3000):
        name = rng.choice(names)
        if rng.random() < 0.6:
            size = rng.randrange(40)
            root.children[name] = files[size]
            model[name] = size
        else:
            assert (root.children.pop(name, None) is None) == (model.pop(name, None) is None)
        assert {n: c.size for n, c in root.children.items()} == model
        assert list(root.children) == list(model)  # insertion order, as a dict keeps it
    assert len(root.children) == len(model) and bool(root.children) == bool(model)
    for name in names:
        got = root.children.get(name)
        assert (got.size if got else None) == model.get(name)
    root.children = {}
    assert not root.children and root.store.live == 0


def test_many_directories_share_one_table() -> None:
    store = Store()
    dirs = [new_dir(store=store) for _ in range(50)]
    for d, directory in enumerate(dirs):
        assert directory.children is not None
        for i in range(200):
            directory.children[str(i)] = Inode(Kind.FILE, size=d * 1000 + i, store=store)
    for d, directory in enumerate(dirs):
        assert directory.children is not None
        assert [c.size for c in directory.children.values()] == [d * 1000 + i for i in range(200)]
        for i in range(0, 200, 2):
            del directory.children[str(i)]
    assert store.live == 50 * 100
    assert [c.size for c in dirs[7].children.values()] == [7001 + 2 * i for i in range(100)]  # type: ignore[union-attr]


def test_a_subtree_placed_in_another_tree_moves_with_its_hardlinks() -> None:
    theirs = new_dir()
    assert theirs.children is not None
    shared = Inode(Kind.FILE, size=4, data=BytesData(b"data"), xattrs={"user.a": b"1"})
    sub = new_dir(mode=0o700)
    assert sub.children is not None
    sub.children["one"] = shared
    sub.children["two"] = shared
    theirs.children["sub"] = sub
    ours = new_dir()
    assert ours.children is not None
    ours.children["copied"] = theirs.children["sub"]
    copied = ours.children["copied"]
    assert copied.store is ours.store and copied.mode == 0o700 and copied.children is not None
    one, two = copied.children["one"], copied.children["two"]
    assert one == two and one.data == BytesData(b"data") and one.xattrs == {"user.a": b"1"}
    assert shared.now() == one  # a view of the old row finds the new one
    ours.children["again"] = shared.now()
    assert ours.children["again"] == one  # one inode still: a third name


def test_a_file_streamed_in_another_tree_keeps_its_placement_when_grafted() -> None:
    placements = Placements()
    theirs = new_dir()
    assert theirs.children is not None
    theirs.children["f"] = Inode(Kind.FILE, size=1)
    streamed = theirs.children["f"]
    key = placements.add(streamed, [(0, 100, 1)])
    ours = new_dir()
    assert ours.children is not None
    ours.children["f"] = streamed
    grafted = ours.children["f"]
    assert grafted.store is ours.store and placements.key(grafted) == key
    assert placements.inode(key) == grafted
    assert placements.key(Inode(Kind.FILE, writer_key=key)) is None


def test_count_entries_counts_names_below_the_root_not_removed_ones() -> None:
    from oci2vm.tree.model import count_entries, walk

    root = new_dir()
    kids = root.children
    assert kids is not None
    shared = Inode(Kind.FILE, size=1)
    for d in range(3):
        sub = new_dir()
        kids[f"d{d}"] = sub
        assert sub.children is not None
        for f in range(4):
            sub.children[f"f{f}"] = Inode(Kind.FILE)
        sub.children["link"] = shared  # a hardlink counts once per name
    del kids["d1"].children["f2"]  # type: ignore[union-attr]
    kids["gone"] = new_dir()
    del kids["gone"]
    assert count_entries(root) == len(list(walk(root))) - 1 == 3 + 3 * 5 - 1


def test_a_directory_emptied_from_the_front_keeps_its_first_entry_live() -> None:
    """has_entries() looks at one entry: removed ones at the head are passed as they go,
    and the order of what is left (and of what comes after) is kept."""
    store = Store()
    root = new_dir(store=store)
    kids = root.children
    assert kids is not None
    for i in range(50):
        kids[f"f{i}"] = Inode(Kind.FILE)
    del kids["f10"], kids["f11"]  # tombstones in the middle
    for i in range(10):
        del kids[f"f{i}"]
        assert store.d_inode[store.cols[FIRST][root.row]] >= 0  # a live entry
    assert list(kids)[:2] == ["f12", "f13"] and len(kids) == 38
    for i in range(12, 50):
        del kids[f"f{i}"]
    assert not kids and store.cols[FIRST][root.row] == store.cols[LAST][root.row] == -1
    kids["again"] = Inode(Kind.FILE)
    kids["f3"] = Inode(Kind.FILE)
    assert kids and list(kids) == ["again", "f3"]
    del kids["f3"]
    assert list(kids) == ["again"]
    kids["last"] = Inode(Kind.FILE)
    assert list(kids) == ["again", "last"]
