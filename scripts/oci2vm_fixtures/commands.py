"""Progress messages (log) and the one place the fixture builders run external programs (run),
so a failing debootstrap, chroot or apt-get names itself and shows its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def log(message: str) -> None:
    print(f"[fixtures] {message}", file=sys.stderr, flush=True)


def run(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    """The one place external programs run: logs the command, names it and its stderr on failure."""
    args = [str(a) for a in argv]
    log("$ " + " ".join(args))
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"{args[0]} failed with exit code {proc.returncode}:\n{tail}")
