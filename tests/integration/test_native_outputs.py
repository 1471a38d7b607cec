"""The compiled hot path (setup.py, oci2vm/native.py) and its sources write the same bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixture_images import busybox_fixture, debian_fixture
from oci2vm import native

pytestmark = pytest.mark.fixture


def ext4_of(source: str, out: Path, cache: Path, *, pure: bool) -> bytes:
    env = dict(os.environ, OCI2VM_PURE_PYTHON="1" if pure else "")
    subprocess.run(
        [sys.executable, "-m", "oci2vm.cli", "build", source, "--format", "ext4",
         "-o", str(out), "-q", "--cache-dir", str(cache)],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return hashlib.sha256(out.read_bytes()).digest()


@pytest.mark.parametrize("name", ["busybox", "debian"])
def test_compiled_and_pure_python_write_the_same_bytes(tmp_path: Path, name: str) -> None:
    """A fixture (Debian: two layers, 13k entries, hardlinks, xattrs) written by the
    compiled modules and by their sources: one filesystem, byte for byte."""
    if not native.STATE.compiled:
        pytest.skip(f"nothing compiled to compare ({native.STATE.why})")
    if name == "debian" and os.geteuid() != 0:
        pytest.skip("building the Debian fixture needs root (debootstrap)")
    fx = busybox_fixture() if name == "busybox" else debian_fixture()
    source = f"oci:{fx.oci_layout}:{fx.tag}"
    compiled = ext4_of(source, tmp_path / "compiled.ext4", tmp_path / "cache", pure=False)
    pure = ext4_of(source, tmp_path / "pure.ext4", tmp_path / "cache", pure=True)
    assert compiled == pure
