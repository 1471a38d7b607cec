"""App-mode boots for tests: the kernel, initramfs and root built once per session, and
oci2vm.runtime.run_app run in a child process (it takes over SIGINT, which only a main
thread may, and a test must send it signals and talk to the guest meanwhile)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from oci2vm.arch import Arch
from oci2vm.config import Config
from oci2vm.initramfs.spec import BootSpec

# A boot under TCG on two shared cores takes seconds; the margin is for a loaded machine.
BOOT_TIMEOUT = 180.0


@dataclass(frozen=True)
class AppBoot:
    kernel: Path
    base_initrd: bytes
    root: Path
    work: Path

    def initrd(self, spec: BootSpec, name: str) -> Path:
        from oci2vm.initramfs.build import spec_archive

        path = self.work / f"{name}.initrd"
        path.write_bytes(self.base_initrd + spec_archive(spec))
        return path

    def start(self, spec: BootSpec, config: Config, name: str) -> subprocess.Popen[bytes]:
        """run_app in a child process; its stdout and stderr are pipes, its exit status is
        run_app's return value (255 when run_app raised)."""
        job = self.work / f"{name}.pickle"
        job.write_bytes(
            pickle.dumps((self.kernel, self.initrd(spec, name), self.root, spec, config))
        )
        return subprocess.Popen(
            [sys.executable, "-m", "support.apprun", str(job), str(self.work / f"{name}.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )  # fmt: skip


def main(job: str, console: str) -> int:
    from oci2vm.runtime import run_app

    kernel, initrd, root, spec, config = pickle.loads(Path(job).read_bytes())
    try:
        return run_app(
            kernel, initrd, root, spec, config, Arch.default(), console_log=Path(console)
        )
    except Exception as e:
        print(f"run_app raised: {e}", file=sys.stderr)
        return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
