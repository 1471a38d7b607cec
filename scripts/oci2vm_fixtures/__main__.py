"""The command line: python scripts/build_fixtures.py [NAME|all] [--cache DIR]
(or python -m oci2vm_fixtures from scripts/) builds the named fixtures unless cached."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import FIXTURES, ensure_fixture

DESCRIPTION = "Build the project-owned fixture images in every form oci2vm reads."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("which", nargs="?", default="all", choices=[*FIXTURES, "all"])
    parser.add_argument("--cache", type=Path, default=None, help="cache directory")
    args = parser.parse_args(argv)
    names = list(FIXTURES) if args.which == "all" else [args.which]
    for name in names:
        started = time.monotonic()
        path = ensure_fixture(name, args.cache)
        print(f"{name}: {path} ({time.monotonic() - started:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
