"""A build stopped by a signal or by a full disk leaves nothing behind: no output, no
temporary file, no raw scratch file of a qcow2 build; the exit status is 128 + the
signal's number and the message is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixture_images import FixtureSet, debian_fixture
from support.disks import build
from support.layouts import directory, file, write_layout

pytestmark = pytest.mark.fixture


@pytest.fixture(scope="module")
def debian() -> FixtureSet:
    if os.geteuid() != 0:
        pytest.skip("building the Debian fixture needs root (debootstrap)")
    return debian_fixture()


def start_build(source: str, out: Path, background: bool = False) -> subprocess.Popen[bytes]:
    """Start a build; `background`: with SIGINT and SIGQUIT ignored, as a shell starts a
    job with `&` (a signal ignored stays ignored across exec)."""
    argv = [sys.executable, "-m", "oci2vm.cli", "build", "-q", source, "-o", str(out)]
    if background:
        argv = ["sh", "-c", 'trap "" INT QUIT; exec "$@"', "sh", *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_temporary_files(directory: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until the build has made its temporary files (it is then writing the disk)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.name.startswith(".") for p in directory.iterdir()):
            time.sleep(0.3)  # into the layers
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        time.sleep(0.02)
    raise AssertionError("the build made no temporary file within 60 s")


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1]
)
def test_a_signal_ends_a_qcow2_build_without_leaving_files(
    debian: FixtureSet, tmp_path: Path, signum: signal.Signals
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = start_build(f"oci:{debian.oci_layout}:{debian.tag}", out_dir / "disk.qcow2")
    wait_for_temporary_files(out_dir, proc)
    found = sorted(p.name for p in out_dir.iterdir())
    assert any(name.endswith(".raw") for name in found), found  # the scratch disk exists
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert list(out_dir.iterdir()) == []
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] in (f"oci2vm: stopped by {signum.name}", "oci2vm: interrupted")


def test_a_background_job_stopped_by_sigterm_leaves_no_files(
    debian: FixtureSet, tmp_path: Path
) -> None:
    """SIGINT ignored (`oci2vm build ... &` in a shell script) stays ignored, but
    SIGTERM still unwinds the build and removes its temporary files."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = start_build(f"oci:{debian.oci_layout}:{debian.tag}", out_dir / "root.ext4", True)
    wait_for_temporary_files(out_dir, proc)
    proc.send_signal(signal.SIGINT)  # ignored
    time.sleep(0.2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert list(out_dir.iterdir()) == []
    assert err.decode().strip() == "oci2vm: stopped by SIGTERM"


@pytest.mark.root
def test_a_full_disk_is_a_one_line_error_that_leaves_nothing(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", [[directory("srv"), file("srv/big", os.urandom(4 << 20))]])
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        result = build(f"oci:{tmp_path / 'img'}", "-o", str(small / "root.ext4"))
        leftovers = list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert result.code == 1
    assert "No space left on device: free some space there" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert leftovers == []
