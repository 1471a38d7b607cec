"""An image whose upper layer writes below its base's merged-/usr symlinks (lib/..., as a
build tool's layer does) written as ext4: what moved through the symlink reads back where
it leads, the files it replaced leave their blocks free, and e2fsck finds it clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.ext4check import debugfs, fsck
from support.layouts import Member, directory, file, hardlink, symlink, write_layout
from support.programs import requires

pytestmark = requires("e2fsck", "debugfs")


def _built(tmp_path: Path, layers: list[list[Member]]) -> Path:
    """The layers as an OCI layout, built by oci2vm as ext4; e2fsck finds it clean."""
    write_layout(tmp_path / "img", layers)
    image = tmp_path / "root.ext4"
    oci2vm = Path(sys.executable).with_name("oci2vm")
    subprocess.run(
        [oci2vm, "build", "-q", "--format", "ext4", "-o", image, f"oci:{tmp_path / 'img'}:latest"],
        check=True,
        capture_output=True,
    )
    fsck(image)
    return image


def test_entries_written_through_a_lower_symlink_read_back_where_it_leads(
    tmp_path: Path,
) -> None:
    base = [directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib")]
    base += [file("usr/lib/old", b"o" * 5000), file("usr/lib/a", b"base" * 3000)]
    tool = [file("lib/a", b"through" * 2000), directory("lib/sub"), file("lib/sub/x", b"x" * 9000)]
    image = _built(tmp_path, [base, tool, [hardlink("y", "lib/sub/x")]])
    x, y, lib, listing, a = debugfs(  # (cat last: its output ends without a newline)
        image,
        ["stat /usr/lib/sub/x", "stat /y", "stat /lib", "ls /usr/lib", "cat /usr/lib/a"],
        tmp_path,
    )
    assert a == b"through" * 2000
    assert b"Links: 2" in x and x.split(b"\n")[0] == y.split(b"\n")[0]  # one inode
    assert b"Type: symlink" in lib and b'Fast link dest: "usr/lib"' in lib
    assert set(listing.split()) >= {b"a", b"old", b"sub"}


def test_entries_written_through_a_symlink_an_upper_layer_replaces_read_back_where_it_led(
    tmp_path: Path,
) -> None:
    """Their data is read again once the base says lib was a symlink (the tool layer had
    streamed by, its files hidden below the upper layer's lib), and written then."""
    base = [directory("usr"), directory("usr/lib"), symlink("lib", "usr/lib")]
    base += [file("usr/lib/old", b"o" * 5000), file("usr/lib/a", b"base" * 3000)]
    tool = [file("lib/a", b"through" * 2000), directory("lib/sub"), file("lib/sub/x", b"x" * 9000)]
    tool += [file("lib/z", b"z" * 70000)]
    upper = [symlink("lib", "usr/lib"), file("usr/lib/new", b"n" * 3000)]
    image = _built(tmp_path, [base, tool, upper])
    listing, a = debugfs(image, ["ls /usr/lib", "cat /usr/lib/a"], tmp_path)
    assert set(listing.split()) >= {b"a", b"old", b"sub", b"z", b"new"}
    assert a == b"through" * 2000  # (cat last: its output ends without a newline)
    assert debugfs(image, ["cat /usr/lib/sub/x"], tmp_path) == [b"x" * 9000]
    assert debugfs(image, ["cat /usr/lib/z"], tmp_path) == [b"z" * 70000]
