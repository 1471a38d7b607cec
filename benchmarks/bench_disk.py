"""Benchmark: a bootable disk built by oci2vm against the article's recipe, in one run.

    python benchmarks/bench_disk.py [--no-boot]     (as root: the recipe needs loop devices)

The recipe, scripted as the article does it: flatten the image into one tarball (the
article's `docker export`; without a Docker engine here, `umoci raw unpack` of the same OCI
layout and `tar -c`), dd a 1 GiB file, sfdisk one bootable partition, losetup, mkfs.ext3,
mount, tar -x, extlinux --install, write syslinux.cfg, unmount, dd mbr.bin. oci2vm builds
from the OCI layout. Both ratios are printed: against the whole recipe (the target), and
against the recipe without its flattening step (as if `docker export` cost nothing).
Targets: build time <= 0.25 x the recipe; time to `login:` of both disks (same kernel,
same QEMU settings, TCG) <= 1.0 x.
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

from fixture_images import FixtureSet, debian_fixture  # noqa: E402
from oci2vm import vm  # noqa: E402

MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def export_tarball(fx: FixtureSet, work: Path) -> tuple[Path, float]:
    """The recipe's `docker export`: the image flattened into one tarball."""
    started = time.perf_counter()
    rootfs, tarball = work / "export", work / "rootfs.tar"
    sh("umoci", "raw", "unpack", "--image", f"{fx.oci_layout}:{fx.tag}", str(rootfs))
    sh("tar", "-C", str(rootfs), "-cf", str(tarball), "--numeric-owner", "--xattrs",
       "--xattrs-include=*", "--acls", ".")  # fmt: skip
    seconds = time.perf_counter() - started
    shutil.rmtree(rootfs)
    return tarball, seconds


def article_recipe(tarball: Path, disk: Path, mnt: Path) -> float:
    started = time.perf_counter()
    sh("dd", "if=/dev/zero", f"of={disk}", "bs=1M", "count=1024", "status=none")
    subprocess.run(["sfdisk", "-q", str(disk)], input="2048,,83,*\n", text=True, check=True)
    loop = sh("losetup", "--find", "--show", "--offset", str(2048 * 512), str(disk))
    try:
        sh("mkfs.ext3", "-q", loop)
        sh("mount", loop, str(mnt))
        try:
            sh("tar", "-xf", str(tarball), "-C", str(mnt), "--numeric-owner",
               "--xattrs", "--xattrs-include=*", "--acls")  # fmt: skip
            uuid = sh("blkid", "-s", "UUID", "-o", "value", loop)
            kernel = sorted((mnt / "boot").glob("vmlinuz-*"))[-1].name
            initrd = kernel.replace("vmlinuz", "initrd.img")
            (mnt / "boot/syslinux.cfg").write_text(
                "DEFAULT linux\nSAY Booting\nLABEL linux\n"
                f"  KERNEL /boot/{kernel}\n  INITRD /boot/{initrd}\n"
                f"  APPEND root=UUID={uuid} rw console=tty0 console=ttyS0,115200\n"
            )
            (mnt / "etc/fstab").write_text(f"UUID={uuid} / ext3 rw 0 1\n")
            sh("chroot", str(mnt), "sh", "-c", "echo 'root:secret' | chpasswd")
            sh("extlinux", "--install", str(mnt / "boot"))
        finally:
            sh("umount", str(mnt))
    finally:
        sh("losetup", "-d", loop)
    sh("dd", f"if={MBR_BIN}", f"of={disk}", "bs=440", "count=1", "conv=notrunc", "status=none")
    return time.perf_counter() - started


def oci2vm_build(fx: FixtureSet, disk: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import sys; from oci2vm.cli import main; sys.exit(main())",
         "build", f"oci:{fx.oci_layout}:{fx.tag}",
         "-o", str(disk), "-q", "--root-password", "secret", "--boot", "bios", *extra],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def boot_seconds(disk: Path) -> float:
    result = vm.check_boot(disk, timeout=600, accel="tcg")
    if not result.ok:
        raise SystemExit(f"{disk.name} did not boot: {result.reason}\n{result.tail}")
    return result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-boot", action="store_true", help="measure the builds only")
    parser.add_argument("--boots", type=int, default=2, help="boots of each disk (default 2)")
    args = parser.parse_args()
    for tool in ("extlinux", "losetup", "mkfs.ext3", "sfdisk", "umoci"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install extlinux syslinux-common umoci")
    compile_package()
    fx = debian_fixture()
    work = Path(tempfile.mkdtemp(prefix="oci2vm-bench-disk-"))
    try:
        (work / "mnt").mkdir()
        tarball, flatten = export_tarball(fx, work)
        rest = article_recipe(tarball, work / "recipe.img", work / "mnt")
        recipe = flatten + rest
        oci2vm_build(fx, work / "warm.img")  # a first build: caches, page cache
        (work / "warm.img").unlink()
        ours = oci2vm_build(fx, work / "ours.img")
        print(f"article recipe (root, loop, mount)  {recipe:7.2f} s")
        print(f"  flatten (umoci unpack + tar -c)   {flatten:7.2f} s")
        print(f"  the rest (dd ... mbr.bin)         {rest:7.2f} s")
        print(f"oci2vm build (rootless)             {ours:7.2f} s")
        print(f"build ratio = {ours / recipe:.2f}   target <= 0.25")
        print(f"build ratio against the recipe without its flattening = {ours / rest:.2f}")
        if not args.no_boot:
            # The same image with oci2vm's initramfs (its kernel's own modules) instead
            # of Debian's 36 MB one: the measurement --initrd auto's choice rests on.
            mirror = debian_mirror()
            oci2vm_build(fx, work / "own.img", "--initrd", "own", "--mirror", mirror)
            # Alternate the disks and keep each one's faster boot: a boot under
            # emulation varies by a second or two with the host's load.
            boots: dict[str, list[float]] = {"recipe": [], "ours": [], "own": []}
            for _ in range(args.boots):
                for name, found in boots.items():
                    found.append(boot_seconds(work / f"{name}.img"))
            theirs_boot, ours_boot, own_boot = (min(b) for b in boots.values())
            print(f"boot to login: recipe {theirs_boot:.1f} s, oci2vm {ours_boot:.1f} s with "
                  f"the image's initrd, {own_boot:.1f} s with oci2vm's (--initrd own)"
                  f"  (best of {args.boots} each)")  # fmt: skip
            print(f"boot ratio = {ours_boot / theirs_boot:.2f}   target <= 1.00")
            print(f"boot ratio with --initrd own = {own_boot / theirs_boot:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
