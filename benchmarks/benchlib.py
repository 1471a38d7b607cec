"""What the benchmarks share: compiled bytecode before anything is timed, a child process's
time and peak RSS, and an OCI image layout written from gzip layer blobs."""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000


def compile_package() -> None:
    """Compile oci2vm's bytecode once, as an installation has it (pip compiles it, or the
    first run writes it): where writing bytecode is off (PYTHONDONTWRITEBYTECODE, as on
    some CI machines), every timed run would otherwise compile the whole package again,
    0.15 s of start-up that no user pays."""
    if not compileall.compile_dir(ROOT / "src" / "oci2vm", quiet=1):
        raise SystemExit("could not compile src/oci2vm")


def debian_mirror() -> str:
    """The Debian mirror the benchmarks fetch kernels from: $OCI2VM_DEBIAN_MIRROR, else
    the machine's apt mirror (as the tests take it)."""
    from support.debarchives import configured_mirror  # (tests/ is on sys.path by then)

    return os.environ.get("OCI2VM_DEBIAN_MIRROR") or configured_mirror()


def high_water(pid: int) -> int:
    """VmHWM of a process in bytes: its peak RSS since exec (ru_maxrss would also count
    the memory of the benchmark process it was forked from)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed_child(argv: list[str]) -> tuple[float, int]:
    """Run a command; return (seconds, peak RSS in bytes) of that child alone."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, high_water(proc.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with status {proc.returncode}")
    return seconds, peak


def write_oci_layout(out: Path, layers: list[tuple[str, str]], ref: str) -> None:
    """An OCI image layout at `out` (whose blobs/sha256 already holds the gzip layers)
    with one image tagged `ref`: `layers` are (compressed digest, diff_id), bottom first."""
    blobs = out / "blobs/sha256"
    descs = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
         "size": (blobs / digest.split(":")[1]).stat().st_size}
        for digest, _diff_id in layers
    ]  # fmt: skip
    diff_ids = [diff_id for _digest, diff_id in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()  # fmt: skip
    (blobs / hashlib.sha256(config).hexdigest()).write_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": descs}).encode()  # fmt: skip
    mdigest = hashlib.sha256(manifest).hexdigest()
    (blobs / mdigest).write_bytes(manifest)
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{mdigest}",
         "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": ref}}]}))  # fmt: skip
