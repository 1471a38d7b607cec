"""build, run and check: the commands that produce and boot disks."""

from __future__ import annotations

from oci2vm.config import Config
from oci2vm.errors import Oci2vmError
from oci2vm.report import Reporter


def dispatch(command: str, config: Config, reporter: Reporter) -> int:
    if command == "build":
        from oci2vm.build import build

        build(config, reporter)
        return 0
    if command == "run":
        from oci2vm.boot_commands import run

        return run(config, reporter)
    if command == "check":
        from oci2vm.boot_commands import check

        return check(config, reporter)
    raise Oci2vmError(f"unknown command {command!r}")
