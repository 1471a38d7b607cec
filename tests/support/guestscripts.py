"""The shell scripts oci2vm installs in a guest, run on the host under both shells a guest
may have (dash, busybox sh), with the absolute directories they touch moved below a
scratch root."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

SHELLS = {"dash": ["sh"], "busybox": ["busybox", "sh"]}


def run_script(
    shell: str, script: str, root: Path, moved: Sequence[str] = ("/etc/",)
) -> subprocess.CompletedProcess[str]:
    """Run `script` under `shell` (a key of SHELLS) with each of the `moved` directories
    below `root` instead of /."""
    for directory in moved:
        script = script.replace(directory, f"{root}{directory}")
    path = root / "script.sh"
    path.write_text(script)
    return subprocess.run([*SHELLS[shell], str(path)], capture_output=True, text=True,
                          check=False, timeout=30)  # fmt: skip
