"""The fstab step: root mounted read-write by UUID, replacing the image's fstab."""

from __future__ import annotations

from pathlib import Path

from oci2vm.prepare import fstab
from support.layouts import directory, file
from support.prepared import FS_TIME, FSTAB, content, entry, flattened, run_step


def test_fstab_mounts_root_by_uuid_and_replaces_the_images(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path, [directory("etc"), file("etc/fstab", b"/dev/sda1 / ext3 ro 0 0\n", mode=0o600)]
    )
    assert run_step(tree, fstab.STEP) == []
    assert content(tree, "/etc/fstab") == FSTAB
    written = entry(tree, "/etc/fstab")
    assert (written.mode, written.uid, written.gid) == (0o644, 0, 0)
    assert written.mtime_ns == FS_TIME * 1_000_000_000


def test_fstab_is_written_where_the_image_has_no_etc(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [file("hello")])
    run_step(tree, fstab.STEP)
    assert content(tree, "/etc/fstab") == FSTAB
