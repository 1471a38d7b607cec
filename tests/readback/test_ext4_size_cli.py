"""`oci2vm build` at the ext4 writer's limits, end to end: a --size beyond 16 TiB is one
line naming the maximum (in the disk's terms for a disk), an image of 100,000 empty files
builds at the default size, and a chain of 3,000 directories builds and inspects; e2fsck
reads the results."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.disks import Layout, build, build_ok, cli, e2fsck_clean
from support.layouts import Member, directory, file, write_layout
from support.programs import DISK_TOOLS, requires

pytestmark = requires("e2fsck", "debugfs")


def _one_line_error(result_err: str, outdir: Path) -> str:
    lines = result_err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("oci2vm: error: "), result_err
    assert list(outdir.iterdir()) == []
    return lines[0]


@pytest.mark.parametrize("size", ["20T", "1000000000000T"])
def test_an_ext4_size_beyond_16_tib_names_the_maximum(tmp_path: Path, size: str) -> None:
    write_layout(tmp_path / "img", [[file("a", b"x")]])
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = build(f"oci:{tmp_path / 'img'}", "-o", str(outdir / "fs.ext4"), "--size", size)
    assert result.code == 1, result
    line = _one_line_error(result.err, outdir)
    assert re.search(
        r"--size \d+ bytes is beyond what oci2vm's ext4 holds: at most 16 TiB "
        r"\(17592186044416 bytes\); pass a smaller --size$",
        line,
    ), line


@requires(*DISK_TOOLS)
def test_a_disk_size_beyond_16_tib_of_root_names_the_largest_disk(
    layout: Layout, tmp_path: Path
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = build(layout.source, "-o", str(outdir / "disk.img"), "--size", "20T")
    assert result.code == 1, result
    line = _one_line_error(result.err, outdir)
    found = re.search(
        r"--size 21990232555520 bytes leaves (\d+) bytes for the root filesystem, beyond "
        r"what oci2vm's ext4 holds \(16 TiB\): pass a --size of at most (\d+) bytes$",
        line,
    )
    assert found, line
    root, most = int(found[1]), int(found[2])
    assert 21990232555520 - most == root - (1 << 44)


def test_100000_empty_files_build_at_the_default_size(tmp_path: Path) -> None:
    members: list[Member] = []
    for d in range(100):
        members.append(directory(f"d{d:02d}"))
        members.extend(file(f"d{d:02d}/f{i:04d}") for i in range(1000))
    write_layout(tmp_path / "img", [members])
    image = tmp_path / "many.ext4"
    report = build_ok(f"oci:{tmp_path / 'img'}", "-o", str(image))
    e2fsck_clean(image)
    filesystem = report["filesystem"]
    assert filesystem["inodes"] - filesystem["free_inodes"] == 11 + 100 + 100_000


def test_a_chain_of_directories_as_deep_as_path_max_builds_and_inspects(tmp_path: Path) -> None:
    depth = 2044  # /d/.../d/bottom: 4095 bytes, what Linux's PATH_MAX allows
    members = [directory("/".join(["d"] * n)) for n in range(1, depth + 1)]
    members.append(file("/".join(["d"] * depth) + "/bottom", b"found\n"))
    write_layout(tmp_path / "img", [members])
    image = tmp_path / "deep.ext4"
    report = build_ok(f"oci:{tmp_path / 'img'}", "-o", str(image))
    e2fsck_clean(image)
    assert report["entries"] == depth + 1
    inspected = cli("inspect", f"oci:{tmp_path / 'img'}")
    assert inspected.code == 0, inspected.err
    assert "Entries:    2045 (1 files, 2044 dirs," in inspected.out
