"""The console script's entry, and `python -m oci2vm`: a Ctrl-C while oci2vm's modules
load ends the process as the signal does (status 130 to a shell), not with a traceback;
from then on the commands' own handling takes over (cli.signals_unwind)."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    from oci2vm.cli import main as run

    signal.signal(signal.SIGINT, previous)
    return run()


if __name__ == "__main__":
    sys.exit(main())
