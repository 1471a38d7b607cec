"""What both benchmarks need before they time anything."""

from __future__ import annotations

import compileall
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_package() -> None:
    """Compile oci2vm's bytecode once, as an installation has it (pip compiles it, or the
    first run writes it): where writing bytecode is off (PYTHONDONTWRITEBYTECODE, as on
    some CI machines), every timed run would otherwise compile the whole package again,
    0.15 s of start-up that no user pays."""
    if not compileall.compile_dir(ROOT / "src" / "oci2vm", quiet=1):
        raise SystemExit("could not compile src/oci2vm")
