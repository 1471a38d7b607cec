"""`oci2vm run` and `oci2vm check`: boot a disk in QEMU, or build one from a source into
a temporary file first."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oci2vm import pipeline, vm
from oci2vm.config import Config, OutputFormat
from oci2vm.report import Reporter
from oci2vm.reports import CheckReport


@contextmanager
def disk_for(config: Config, reporter: Reporter) -> Iterator[Path]:
    """The disk to boot: the argument itself if it is a file, else a disk built from
    the source into a temporary directory that is removed afterwards. The build's report
    goes to stderr as a note: stdout belongs to run and check (check --json prints its own
    report there)."""
    given = Path(config.source)
    if given.is_file():
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="oci2vm-run-") as tmp:
        disk = Path(tmp) / "disk.img"
        reporter.note(f"building {config.source} into a temporary disk")
        quiet_build = dataclasses.replace(config, output=disk, format=OutputFormat.RAW, json=False)
        report = pipeline.build(quiet_build, Reporter(quiet=config.quiet))
        reporter.note(report.human())
        yield disk


def run_command(config: Config, reporter: Reporter) -> int:
    with disk_for(config, reporter) as disk:
        return vm.run_vm(
            disk,
            firmware=config.firmware,
            memory_mib=config.memory_mib,
            cpus=config.cpus,
            accel=config.accel,
            bus=config.bus,
        )


def check_command(config: Config, reporter: Reporter) -> int:
    with disk_for(config, reporter) as disk:
        reporter.note(f"booting {disk.name} headless, waiting for /{config.expect}/")
        result = vm.check_boot(
            disk,
            expect=config.expect,
            timeout=config.timeout,
            firmware=config.firmware,
            bus=config.bus,
            accel=config.accel,
            memory_mib=config.memory_mib,
            cpus=config.cpus,
        )
    reporter.result(
        CheckReport(result.ok, result.seconds, config.expect, result.reason, result.tail)
    )
    return 0 if result.ok else 1
