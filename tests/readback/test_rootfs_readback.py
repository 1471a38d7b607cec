"""The ext4 root filesystem read back through the Linux kernel's own ext4 driver (a
read-only loop mount, root only) equals an independent flattening of the same image:
`umoci raw unpack` for the Debian fixture, the fixture's own expected tree for the
busybox image that holds every flattening case. Also: e2fsck is clean, and two builds are
byte-identical."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fixture_images import FixtureSet, busybox_fixture, debian_fixture
from oci2vm.cli import main
from support.programs import requires
from support.treecompare import Record, differences, directory_records, expected_records

pytestmark = pytest.mark.fixture


def build_ext4(source: str, out: Path) -> Path:
    assert main(["build", source, "--format", "ext4", "-o", str(out), "-q"]) == 0
    return out


def e2fsck_clean(image: Path) -> None:
    proc = subprocess.run(
        ["e2fsck", "-fn", str(image)], check=False, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@contextmanager
def mounted(image: Path, where: Path) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-o", "ro,loop", str(image), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def comparable(records: dict[str, Record]) -> dict[str, Record]:
    """What ext4 adds that no layer holds: lost+found; the root directory's times are
    the filesystem's own."""
    return {p: r for p, r in records.items() if p not in ("/", "/lost+found")}


@pytest.mark.root
@requires("e2fsck", "mount", "umount")
def test_busybox_ext4_through_the_kernel_equals_expected_tree(tmp_path: Path) -> None:
    fx: FixtureSet = busybox_fixture()
    image = build_ext4(f"oci:{fx.oci_layout}:{fx.tag}", tmp_path / "busybox.ext4")
    e2fsck_clean(image)
    with mounted(image, tmp_path / "mnt") as root:
        ours = directory_records(root)
    diff = differences(comparable(ours), comparable(expected_records(fx)))
    assert not diff, "\n".join(diff)
    assert (ours["/lost+found"]["kind"], ours["/lost+found"]["mode"]) == ("dir", 0o700)


@pytest.mark.root
@requires("e2fsck", "mount", "umount", "umoci")
def test_debian_ext4_through_the_kernel_equals_umoci(tmp_path: Path) -> None:
    fx = debian_fixture()
    image = build_ext4(f"oci:{fx.oci_layout}:{fx.tag}", tmp_path / "debian.ext4")
    e2fsck_clean(image)
    unpacked = tmp_path / "umoci"
    subprocess.run(
        ["umoci", "raw", "unpack", "--image", f"{fx.oci_layout}:{fx.tag}", str(unpacked)],
        check=True,
        capture_output=True,
    )
    try:
        theirs = directory_records(unpacked)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    with mounted(image, tmp_path / "mnt") as root:
        ours = directory_records(root)
    diff = differences(comparable(ours), comparable(theirs))
    assert not diff, "\n".join(diff)
    assert len(comparable(ours)) == fx.entries


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    fx = busybox_fixture()
    digests = set()
    for name in ("one.ext4", "two.ext4"):
        image = build_ext4(f"oci:{fx.oci_layout}:{fx.tag}", tmp_path / name)
        digests.add(hashlib.sha256(image.read_bytes()).hexdigest())
    assert len(digests) == 1
