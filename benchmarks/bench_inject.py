"""Benchmark: a bootable disk of an image without a kernel (Debian's injected, with
oci2vm's initramfs), the first build with a kernel package against the builds after it.

    python benchmarks/bench_inject.py [--runs N]

The busybox-init fixture (a busybox system image, no kernel) is built into a raw disk
with a scratch cache that a first, untimed build fills with the kernel and busybox
packages (the mirror is $OCI2VM_DEBIAN_MIRROR, else the machine's apt mirror). Then, N
times in turn: (1) a build after the kernel's derived facts are removed from the cache
(every module inflated and read, depmod's indexes computed, the package read twice: what
a new kernel version costs once), and (2) the same build again (those facts cached).
Prints the best of each and (2)/(1); the outputs of both must be identical.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import compile_package, debian_mirror, timed_child  # noqa: E402

from fixture_images import busybox_init_fixture  # noqa: E402

OCI2VM = [sys.executable, "-c", "import sys; from oci2vm.cli import main; sys.exit(main())"]


def digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="builds of each kind (default 3)")
    args = parser.parse_args()
    compile_package()
    fx = busybox_init_fixture()
    work = Path(tempfile.mkdtemp(prefix="oci2vm-bench-inject-"))
    cache = work / "cache"
    mirror = debian_mirror()
    out = work / "disk.raw"
    build = [*OCI2VM, "build", "-q", f"oci:{fx.oci_layout}:{fx.tag}", "-o", str(out),
             "--cache-dir", str(cache), "--mirror", mirror, "--kernel", "debian"]  # fmt: skip
    try:
        timed_child(build)  # downloads the packages: untimed
        firsts, repeats, digests = [], [], set()
        for _ in range(args.runs):
            shutil.rmtree(cache / "kernels", ignore_errors=True)
            firsts.append(timed_child(build)[0])
            digests.add(digest(out))
            repeats.append(timed_child(build)[0])
            digests.add(digest(out))
        if len(digests) != 1:
            raise SystemExit("the builds' outputs differ: the cached facts changed the disk")
        first, repeat = min(firsts), min(repeats)
        print(f"image: busybox-init fixture, Debian's kernel injected ({args.runs} runs each)")
        print(f"(1) first build with this kernel       {first:6.2f} s")
        print(f"(2) a later build (its facts cached)   {repeat:6.2f} s")
        print(f"(2)/(1) = {repeat / first:.2f}   outputs identical")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
