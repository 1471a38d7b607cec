"""The mount points every init needs, made where an image lacks them."""

from __future__ import annotations

from pathlib import Path

from oci2vm.prepare import mountpoints
from oci2vm.tree.model import Kind
from support.layouts import directory, file
from support.prepared import entry, flattened, run_step


def test_missing_mount_points_are_made_and_what_the_image_has_is_kept(tmp_path: Path) -> None:
    # An image FROM scratch has none of them; busybox's rcS stops without a /dev.
    tree = flattened(tmp_path, [directory("proc", mode=0o700), file("run", b"not a dir")])
    assert run_step(tree, mountpoints.STEP) == []
    made = {p: (entry(tree, p).kind, entry(tree, p).mode) for p in ("/sys", "/dev", "/tmp")}
    assert made == {"/sys": (Kind.DIR, 0o555), "/dev": (Kind.DIR, 0o755),
                    "/tmp": (Kind.DIR, 0o1777)}  # fmt: skip
    assert (entry(tree, "/proc").kind, entry(tree, "/proc").mode) == (Kind.DIR, 0o700)
    assert entry(tree, "/run").kind is Kind.FILE
