"""Converted disks are deterministic: qemu-img's random identifiers in VMDK, VDI and VHDX
files are replaced by derived ones, and the files stay what qemu-img reads as the same
disk (its own check and comparison with the raw one)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from oci2vm.config import OutputFormat
from oci2vm.disk.convert import _Meter, convert, settle_identifiers
from oci2vm.errors import Oci2vmError
from support.programs import requires

pytestmark = requires("qemu-img")

NAMESPACE = uuid.UUID("0b5d7a2e-5a33-4d1f-9b8e-2f1a1c9e7d11")


def derive(label: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, label)


def raw_disk(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(64 << 20)
        for at in (0, 1 << 20, 40 << 20):
            f.seek(at)
            f.write(b"data at %d\n" % at * 100)
    return path


def qemu_img(*args: str | Path) -> str:
    done = subprocess.run(
        ["qemu-img", *map(str, args)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("fmt", [OutputFormat.VMDK, OutputFormat.VDI, OutputFormat.VHDX])
def test_two_conversions_settle_to_the_same_bytes_and_the_same_disk(
    tmp_path: Path, fmt: OutputFormat
) -> None:
    raw = raw_disk(tmp_path / "disk.raw")
    outs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        out = tmp_path / name / f".disk.{fmt.value}.tmp"  # (named as atomic_output names it)
        convert(raw, out, fmt)
        outs.append(out)
    assert outs[0].read_bytes() != outs[1].read_bytes()  # qemu-img's random ids
    for out in outs:
        settle_identifiers(out, fmt, derive, f"disk.{fmt.value}")
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert "No errors were found" in qemu_img("check", outs[0])
    assert "Images are identical" in qemu_img("compare", "-f", "raw", raw, outs[0])
    if fmt is OutputFormat.VMDK:
        head = outs[0].read_bytes()[:4096]
        assert b'SPARSE "disk.vmdk"\n' in head
        assert f"CID={derive('vmdk-cid').int & 0xFFFFFFFF:08x}\n".encode() in head


def test_a_file_that_is_not_what_qemu_img_writes_is_a_bug(tmp_path: Path) -> None:
    odd = tmp_path / "odd.vdi"
    odd.write_bytes(bytes(4096))
    with pytest.raises(RuntimeError, match="VDI oci2vm does not know"):
        settle_identifiers(odd, OutputFormat.VDI, derive, "odd.vdi")


def test_the_meter_counts_the_disk_once_whatever_qemu_img_prints_per_read(
    tmp_path: Path,
) -> None:
    """qemu-img -p's meter, read as the bytes of the disk converted: the whole disk by the
    end, never twice, and the same bytes out as a conversion without it."""
    raw = raw_disk(tmp_path / "disk.raw")
    steps: list[int] = []
    convert(raw, tmp_path / "meter.qcow2", OutputFormat.QCOW2, compress=True, advance=steps.append)
    convert(raw, tmp_path / "quiet.qcow2", OutputFormat.QCOW2, compress=True)
    assert sum(steps) == raw.stat().st_size and all(n > 0 for n in steps)
    assert (tmp_path / "meter.qcow2").read_bytes() == (tmp_path / "quiet.qcow2").read_bytes()
    # the meter's lines split anywhere between reads
    seen: list[int] = []
    meter = _Meter(1000, seen.append)
    for piece in (
        b"    (0.00/100%)\r",
        b"    (12.",
        b"50/100%)\r    (12.50/100%)\r    (100.00/1",
        b"00%)\r\n",
    ):
        meter.feed(piece)
    assert seen == [125, 875]


def test_a_failed_conversion_is_named_by_qemu_img_s_last_line(tmp_path: Path) -> None:
    raw = raw_disk(tmp_path / "disk.raw")
    with pytest.raises(Oci2vmError, match=r"^qemu-img failed: .*nosuch/x.qcow2"):
        convert(raw, tmp_path / "nosuch/x.qcow2", OutputFormat.QCOW2, advance=lambda n: None)


def test_qemu_img_running_out_of_space_is_told_as_a_full_disk(tmp_path: Path) -> None:
    from oci2vm.pipeline import no_space_is_an_error

    out = tmp_path / "x.qcow2"
    said = "qemu-img failed: qemu-img: error while writing at byte 7: No space left on device"
    full = rf"^{out}: No space left on device: free some space"
    with pytest.raises(Oci2vmError, match=full), no_space_is_an_error(out):
        raise Oci2vmError(said)
    other = r"^qemu-img failed: Invalid argument$"
    with pytest.raises(Oci2vmError, match=other), no_space_is_an_error(out):
        raise Oci2vmError("qemu-img failed: Invalid argument")
