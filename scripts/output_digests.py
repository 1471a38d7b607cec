#!/usr/bin/env python3
"""Record, then check, the sha256 of every output the fixture images give, so that a change
meant to keep behaviour (a refactoring) can prove its outputs byte-identical.

    python scripts/output_digests.py record before.json   # on the old code
    python scripts/output_digests.py check before.json    # on the new code: exit 1 on any change

Each case runs `python -m oci2vm.cli build` with the interpreter running this script (so
PYTHONPATH=OTHER/src measures another checkout) with SOURCE_DATE_EPOCH fixed, from the fixtures that
scripts/build_fixtures.py caches. Disks are hashed as raw images: qemu-img's own formats
are a conversion of those bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fixture_images import busybox_fixture, debian_fixture

EPOCH = "1700000000"
SYSTEM = ["--root-password", "secret", "--hostname", "digest-check"]

# name -> (fixture, source form, extra arguments, output extension)
CASES: dict[str, tuple[str, str, list[str], str]] = {
    "busybox-ext4": ("busybox", "oci", [], ".ext4"),
    "busybox-ext4-docker-archive": ("busybox", "docker-archive", [], ".ext4"),
    "busybox-ext4-rootfs-tar": ("busybox", "tar", [], ".ext4"),
    "busybox-ext4-sized": ("busybox", "oci", ["--size", "300M"], ".ext4"),
    "debian-ext4": ("debian", "oci", [], ".ext4"),
    "debian-hybrid-gpt": ("debian", "oci", SYSTEM, ".img"),
    "debian-bios-gpt": ("debian", "oci", ["--boot", "bios", *SYSTEM], ".img"),
    "debian-uefi-gpt": ("debian", "oci", ["--boot", "uefi", *SYSTEM], ".img"),
    "debian-hybrid-mbr": ("debian", "oci", ["--table", "mbr", *SYSTEM], ".img"),
    "debian-bios-mbr-sized": (
        "debian",
        "oci",
        ["--table", "mbr", "--boot", "bios", "--size", "2G", *SYSTEM],
        ".img",
    ),
}


def source_for(fixture: str, form: str) -> str:
    fx = busybox_fixture() if fixture == "busybox" else debian_fixture()
    if form == "oci":
        return f"oci:{fx.oci_layout}:{fx.tag}"
    if form == "docker-archive":
        return f"docker-archive:{fx.docker_archive}"
    return f"tar:{fx.rootfs_tar}"


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_cases(names: list[str]) -> dict[str, str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="oci2vm-digests-") as tmp:
        cache = Path(tmp, "cache")
        for name in names:
            fixture, form, extra, ext = CASES[name]
            out = Path(tmp, name + ext)
            argv = [
                sys.executable,
                "-m",
                "oci2vm.cli",
                "build",
                "-q",
                source_for(fixture, form),
                "-o",
                str(out),
            ]
            argv += ["--cache-dir", str(cache), *extra]
            subprocess.run(argv, check=True, env=env)
            results[name] = digest(out)
            out.unlink()
            print(f"{name}: {results[name]}", file=sys.stderr)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["record", "check"])
    p.add_argument("file", type=Path)
    p.add_argument("--only", action="append", default=[], help="run only these cases")
    args = p.parse_args()
    names = args.only or list(CASES)
    results = run_cases(names)
    if args.action == "record":
        args.file.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    recorded = json.loads(args.file.read_text())
    changed = [n for n in names if recorded.get(n) != results[n]]
    for name in changed:
        print(f"CHANGED {name}: {recorded.get(name)} -> {results[name]}")
    print(f"{len(names) - len(changed)} identical, {len(changed)} changed")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
