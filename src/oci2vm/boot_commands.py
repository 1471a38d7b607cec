"""`oci2vm run` and `oci2vm check`: boot a disk in QEMU, or build one from a source into
a temporary file first."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oci2vm import vm
from oci2vm.config import Config, OutputFormat
from oci2vm.report import Reporter


class _BuildNotes(Reporter):
    """The temporary build's report goes to stderr as a note: stdout belongs to run and
    check (check --json prints its own report there)."""

    def result(self, data: dict[str, Any], human: str) -> None:
        self.note(human)


@contextmanager
def disk_for(config: Config, reporter: Reporter) -> Iterator[Path]:
    """The disk to boot: the argument itself if it is a file, else a disk built from
    the source into a temporary directory that is removed afterwards."""
    given = Path(config.source)
    if given.is_file():
        yield given
        return
    from oci2vm.build import build

    with tempfile.TemporaryDirectory(prefix="oci2vm-run-") as tmp:
        disk = Path(tmp) / "disk.img"
        reporter.note(f"building {config.source} into a temporary disk")
        quiet_build = dataclasses.replace(config, output=disk, format=OutputFormat.RAW, json=False)
        build(quiet_build, _BuildNotes(quiet=config.quiet, json_output=False))
        yield disk


def run(config: Config, reporter: Reporter) -> int:
    with disk_for(config, reporter) as disk:
        return vm.run_vm(
            disk,
            firmware=config.firmware.value,
            memory_mib=config.memory_mib,
            cpus=config.cpus,
            accel=config.accel.value,
            bus=config.bus.value,
        )


def check(config: Config, reporter: Reporter) -> int:
    with disk_for(config, reporter) as disk:
        reporter.note(f"booting {disk.name} headless, waiting for /{config.expect}/")
        result = vm.check_boot(
            disk,
            expect=config.expect,
            timeout=config.timeout,
            firmware=config.firmware.value,
            bus=config.bus.value,
            accel=config.accel.value,
            memory_mib=config.memory_mib,
            cpus=config.cpus,
        )
    report = {
        "ok": result.ok,
        "seconds": round(result.seconds, 2),
        "expect": config.expect,
        "reason": result.reason,
        "console_tail": result.tail,
    }
    if result.ok:
        human = f"ok: /{config.expect}/ after {result.seconds:.1f} s"
    else:
        human = (
            f"failed: {result.reason or 'no match'} after {result.seconds:.1f} s\n"
            f"--- console tail ---\n{result.tail}"
        )
    reporter.result(report, human)
    return 0 if result.ok else 1
