"""util/atomic.py: an output appears whole or not at all, and -o is written the way cp
and qemu-img write it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.util.atomic import atomic_output


def test_an_output_appears_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole"


def test_a_symlink_to_a_file_is_written_through_and_a_dangling_one_replaced(
    tmp_path: Path,
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "v1.img").write_bytes(b"old")
    link = tmp_path / "current.img"
    link.symlink_to("versions/v1.img")
    with atomic_output(link) as tmp:
        tmp.write_bytes(b"new")
    assert os.readlink(link) == "versions/v1.img"
    assert (versions / "v1.img").read_bytes() == b"new"
    dangling = tmp_path / "gone.img"
    dangling.symlink_to("nowhere.img")
    with atomic_output(dangling) as tmp:
        tmp.write_bytes(b"made")
    assert not dangling.is_symlink() and dangling.read_bytes() == b"made"


def test_a_special_file_is_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "to-pipe.img"
    link.symlink_to(fifo)
    for out in (fifo, link):
        with pytest.raises(Oci2vmError, match="is a FIFO"), atomic_output(out):
            pass


def test_an_output_name_near_name_max_gets_a_scratch_name_that_fits(tmp_path: Path) -> None:
    out = tmp_path / ("a" * 250 + ".ext4")  # 255 bytes: the longest name Linux takes
    with atomic_output(out) as tmp:
        assert len(tmp.name.encode()) <= 255
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole"


def test_an_output_that_cannot_be_replaced_is_one_line_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """(chattr +i, a mount point, another's file in a sticky directory: os.replace fails.)"""
    out = tmp_path / "disk.img"
    refused = r"disk.img: cannot replace it \(.*\): choose another -o"
    with pytest.raises(Oci2vmError, match=refused), atomic_output(out) as tmp:
        tmp.write_bytes(b"whole")
        out.mkdir()  # (made meanwhile: a non-empty directory is not replaced)
        (out / "x").write_bytes(b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]
