"""One thin module per command: each turns a Config into work done by the pipeline or the
VM layer, and prints its report. COMMANDS maps a command's name to its function."""

from __future__ import annotations

from collections.abc import Callable

from oci2vm.config import Config
from oci2vm.report import Reporter

Command = Callable[[Config, Reporter], int]
RUNS_COMMANDS = ("ps", "logs", "stop", "wait", "rm")  # of detached runs (commands/runs.py)


def command(name: str) -> Command:
    """The function of command `name`, imported only when it runs (start-up stays short)."""
    if name == "build":
        from oci2vm.commands.build import build_command

        return build_command
    if name == "inspect":
        from oci2vm.commands.inspect import inspect_command

        return inspect_command
    if name == "run":
        from oci2vm.commands.boot import run_command

        return run_command
    if name == "check":
        from oci2vm.commands.boot import check_command

        return check_command
    if name in RUNS_COMMANDS:
        from oci2vm.commands import runs

        found: Command = getattr(runs, f"{name}_command")
        return found
    raise ValueError(f"unknown command {name!r}")
