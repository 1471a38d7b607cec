"""Progress on a terminal (rich), quiet with -q, and the machine-readable report (--json).

Progress goes to stderr and only when stderr is a terminal, so pipes and CI logs stay
clean; the final report goes to stdout. rich is imported only when a progress display is
shown (its import is a noticeable part of a short command's start-up); text is written
plainly otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from oci2vm.image.blobs import ProgressFn

if TYPE_CHECKING:
    from rich.progress import Progress


class Report(Protocol):
    """A command's result (see reports.py): one JSON form and one human form."""

    def to_json(self) -> dict[str, Any]: ...

    def human(self) -> str: ...


class Info(str):
    """A note that tells what a build did as it should (the kernel it injected), not what
    needs the user's attention: shown as a note (not with -q), never as a warning."""

    __slots__ = ()


class Reporter:
    """One per command: progress bars for byte streams, one-line notes, a final report."""

    def __init__(self, *, quiet: bool = False, json_output: bool = False) -> None:
        self.quiet = quiet
        self.json_output = json_output
        self._progress: Progress | None = None
        self._warned: list[str] = []

    @property
    def interactive(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    @contextmanager
    def progress(self) -> Iterator[None]:
        if not self.interactive:
            yield
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.table import Column

        # A row stays one line on a narrow terminal: the bar shrinks, the text is cut
        # short ("…"), where a wrapped row would scroll the bars on every refresh.
        self._progress = Progress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(table_column=Column()),
            DownloadColumn(binary_units=True, table_column=Column(no_wrap=True)),
            TransferSpeedColumn(table_column=Column(no_wrap=True)),
            TimeRemainingColumn(table_column=Column(no_wrap=True)),
            console=Console(stderr=True, highlight=False, soft_wrap=True),
            transient=True,
        )
        with self._progress:
            try:
                yield
            finally:
                self._progress = None

    def task(self, description: str, total: int | None) -> ProgressFn:
        """A progress bar for `total` bytes; returns the function that advances it."""
        progress = self._progress
        if progress is None:
            return _nothing
        task = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        return advance

    def note(self, message: str) -> None:
        """A line for the user on stderr (not with -q)."""
        if not self.quiet:
            self._line(sys.stderr, message)

    def warn(self, message: str) -> None:
        """Something the user must know even with -q (but not in --json output)."""
        self._warned.append(message)
        self._line(sys.stderr, f"warning: {message}")

    def result(self, report: Report) -> None:
        """The command's result: JSON with --json, else the human text."""
        if self.json_output:
            sys.stdout.write(json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n")
        else:
            text = report.human()
            if self._warned and _same_terminal(sys.stdout, sys.stderr):
                # The result lists the notes for stdout alone (a file, a pipe); on the
                # terminal that shows the warnings, each would be read twice.
                shown = {f"  {message}" for message in self._warned}
                text = "\n".join(line for line in text.split("\n") if line not in shown)
            if text:
                self._line(sys.stdout, text)

    def _line(self, stream: TextIO, text: str) -> None:
        """Text as it is; above the progress bars while they are shown."""
        if self._progress is not None and stream is sys.stderr:
            self._progress.console.print(text, markup=False, highlight=False, emoji=False)
        else:
            stream.write(text.rstrip("\n") + "\n")
            stream.flush()


def _same_terminal(one: TextIO, other: TextIO) -> bool:
    """Whether both streams are the same terminal."""
    try:
        if not (one.isatty() and other.isatty()):
            return False
        a, b = os.fstat(one.fileno()), os.fstat(other.fileno())
    except (OSError, ValueError):  # closed, or no file descriptor (captured)
        return False
    return (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev)


def _nothing(_n: int) -> None:
    pass
