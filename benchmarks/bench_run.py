"""Benchmark: oci2vm run of an app image, against the Debian fixture's boot to login:, in
one run (QEMU under TCG where KVM does not work, as on the project's machine).

    python benchmarks/bench_run.py [--runs N]

Prints, each with its target:
- app mode: `oci2vm run` start -> the workload's first output line, against the Debian
  fixture's disk (its own kernel and initrd) from QEMU's start to `login:` (<= 0.25 x);
- a second `oci2vm run` of the same image: its whole time against the boot alone (the
  cached kernel, initramfs and root booted by runtime.run_app) (<= 1.1 x);
- the initramfs sizes (oci2vm's, compressed: all drivers, and the run set) (<= 8 MB).

The busybox-app fixture is the app; the kernel is Debian's (the mirror is
$OCI2VM_DEBIAN_MIRROR, else the machine's apt mirror), cached in a scratch blob cache that
the first, untimed run fills.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import compile_package, debian_mirror  # noqa: E402

from fixture_images import busybox_app_fixture, debian_fixture  # noqa: E402
from oci2vm import vm  # noqa: E402

OCI2VM = [sys.executable, "-c", "import sys; from oci2vm.cli import main; sys.exit(main())"]
FIRST_LINE = ["--", "sh", "-c", "echo first-line; sleep 0.2; echo done"]


def run_until_first_line(args: list[str]) -> tuple[float, float]:
    """(seconds to the first stdout line, seconds to the end) of an oci2vm command."""
    started = time.perf_counter()
    proc = subprocess.Popen([*OCI2VM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    first = time.perf_counter() - started
    rest, err = proc.communicate()
    total = time.perf_counter() - started
    if proc.returncode != 0 or line != b"first-line\n":
        raise SystemExit(f"run failed ({proc.returncode}): {line!r} {rest!r}\n{err.decode()}")
    return first, total


def debian_login_seconds(work: Path, runs: int) -> float:
    fx = debian_fixture()
    disk = work / "debian.img"
    subprocess.run([*OCI2VM, "build", f"oci:{fx.oci_layout}:{fx.tag}", "-o", str(disk), "-q",
                    "--root-password", "secret", "--boot", "bios"], check=True)  # fmt: skip
    best = []
    for _ in range(runs):
        result = vm.check_boot(disk, timeout=600, accel="tcg")
        if not result.ok:
            raise SystemExit(f"the Debian disk did not boot: {result.reason}\n{result.tail}")
        best.append(result.seconds)
    return min(best)


def boot_alone(cache: Path) -> float:
    """The cached entry booted by run_app, as `oci2vm run` does after its preparation."""
    from oci2vm.arch import Arch
    from oci2vm.config import Accel, Config
    from oci2vm.initramfs.build import spec_archive
    from oci2vm.initramfs.spec import BootSpec, Mode
    from oci2vm.runtime import run_app

    (entry,) = [
        p for p in (cache / "run").iterdir() if (p / "run.json").is_file() and not p.is_symlink()
    ]
    kernel = entry / "vmlinux" if (entry / "vmlinux").is_file() else entry / "vmlinuz"
    spec = BootSpec(mode=Mode.APP, argv=("sh", "-c", "echo first-line; sleep 0.2; echo done"),
                    env=("PATH=/bin",), workdir="/app", user="app")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        initrd = Path(tmp, "initrd")
        initrd.write_bytes((entry / "initrd.img").read_bytes() + spec_archive(spec))
        out = Path(tmp, "out")
        with open(out, "wb") as sink:
            started = time.perf_counter()
            code = run_app(kernel, initrd, entry / "root.ext4", spec, Config(accel=Accel.TCG),
                           Arch.AMD64, stdout_fd=sink.fileno())  # fmt: skip
            seconds = time.perf_counter() - started
        if code != 0 or not out.read_bytes().startswith(b"first-line"):
            raise SystemExit(f"the boot alone failed ({code}): {out.read_bytes()!r}")
    return seconds


def initramfs_sizes(cache: Path, mirror: str) -> tuple[int, int]:
    """Bytes of oci2vm's initramfs (gzip) for Debian's stable kernel: with every driver
    (what a built disk boots) and with the run set (what oci2vm run boots)."""
    from oci2vm.arch import Arch
    from oci2vm.debian.archive import Archive
    from oci2vm.debian.kernel import kernel_packages
    from oci2vm.image.blobs import BlobStore
    from oci2vm.initramfs.build import (
        INITRAMFS_MODULES,
        RUN_MODULES,
        build_initramfs,
        busybox_from_deb,
    )
    from oci2vm.prepare.kernelpkg import module_bytes, read_kernel_package

    archive = Archive(BlobStore(cache), "stable", Arch.AMD64, mirror=mirror)
    packages = kernel_packages(archive)
    package, debs = packages[-1], [archive.download(p) for p in packages]
    busybox = busybox_from_deb(archive.download(archive.resolve("busybox-static")))
    files = read_kernel_package(debs, str(package), None, modules_into_tree=False)
    sizes = []
    for wanted in (INITRAMFS_MODULES, RUN_MODULES):
        present = [m for m in wanted if m.replace("-", "_") not in files.db.missing(wanted)]
        modules = module_bytes(debs, str(package), files.db.closure(present))
        sizes.append(len(build_initramfs(busybox, files.version, modules, None, mtime=0)))
    return sizes[0], sizes[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    args = parser.parse_args()
    compile_package()
    app = busybox_app_fixture()
    source = f"oci:{app.oci_layout}:{app.tag}"
    work = Path(tempfile.mkdtemp(prefix="oci2vm-bench-run-"))
    mirror = debian_mirror()
    common = ["run", "--cache-dir", str(work / "cache"), "--mirror", mirror, "--accel", "tcg"]
    try:
        started = time.perf_counter()
        run_until_first_line([*common, source, *FIRST_LINE])  # fills the cache: untimed
        cold = time.perf_counter() - started
        firsts, totals = [], []
        for _ in range(args.runs):
            first, total = run_until_first_line([*common, source, *FIRST_LINE])
            firsts.append(first)
            totals.append(total)
        alone = min(boot_alone(work / "cache") for _ in range(args.runs))
        login = debian_login_seconds(work, args.runs)
        every, run_set = initramfs_sizes(work / "cache", mirror)
        print(f"first run (kernel fetched and verified, root built)  {cold:6.1f} s")
        print(f"app mode: start -> first workload line  {min(firsts):6.2f} s (best of {args.runs})")
        print(f"Debian fixture: QEMU start -> login:    {login:6.2f} s (best of {args.runs})")
        print(f"first-line ratio = {min(firsts) / login:.2f}   target <= 0.25")
        print(f"second run, whole: {min(totals):.2f} s; the boot alone: {alone:.2f} s")
        print(f"second-run ratio = {min(totals) / alone:.2f}   target <= 1.10")
        print(f"initramfs, gzip: every driver {every / 1e6:.2f} MB, the run set "
              f"{run_set / 1e6:.2f} MB   target <= 8 MB")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
