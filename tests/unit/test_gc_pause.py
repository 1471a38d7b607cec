"""The cyclic collector is paused while a tree is flattened and while the ext4 writer
finishes (util/gcpause.py): its full passes over a growing tree of millions of objects made
the build's time grow faster than its entries."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from oci2vm.fs.ext4 import Ext4Writer
from oci2vm.tree.model import BytesData, DataReader, Inode, Kind, new_dir
from oci2vm.util.gcpause import cycle_collection_paused
from support.ext4check import FS_TIME, FS_UUID, HASH_SEED
from support.flattened import flatten_layers
from support.layouts import file


def test_the_collector_is_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with cycle_collection_paused():
        assert not gc.isenabled()
        with cycle_collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block leaves it as it found it
    assert gc.isenabled()


def test_the_collector_is_restored_after_an_error() -> None:
    with pytest.raises(ValueError), cycle_collection_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with cycle_collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_flattening_runs_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states: list[bool] = []
    real = Inode.__init__

    def noting(self: Inode, *args: object, **kwargs: object) -> None:
        states.append(gc.isenabled())
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Inode, "__init__", noting)
    tree, _data = flatten_layers(tmp_path, [file("a", b"x"), file("b", b"y")])
    monkeypatch.undo()
    assert tree.entries == 2 and states and not any(states)
    assert gc.isenabled()


def test_finish_runs_with_the_collector_paused(tmp_path: Path) -> None:
    states: list[bool] = []

    root = new_dir()
    assert root.children is not None
    root.children["f"] = Inode(Kind.FILE, size=1, data=BytesData(b"a"))
    with (tmp_path / "fs.ext4").open("w+b") as out:
        writer = Ext4Writer(out, uuid=FS_UUID, hash_seed=HASH_SEED, fs_time=FS_TIME)
        original = writer.write_file

        def noting(inode: Inode, data: DataReader) -> None:
            states.append(gc.isenabled())
            original(inode, data)

        writer.write_file = noting  # type: ignore[method-assign]
        writer.finish(root)  # the file has no streamed data: finish() writes it
    assert states == [False]
    assert gc.isenabled()
