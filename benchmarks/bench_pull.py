"""Benchmark: a cold build from a registry against the download alone and the build from a
warm cache, in one run, from a loopback registry and from a slow one.

    python benchmarks/bench_pull.py [--repeat 3] [--rate 50]

The Debian fixture (2 gzip layers) is served by docker-registry on 127.0.0.1 (pushed with
skopeo), then by a registry stand-in in this process that sends every body at --rate MB/s
(all connections together, a slow link). For each:
(1) the download alone: oci2vm's registry source fetching every blob into an empty cache
    (in a child process, as the builds run); `skopeo copy` to an OCI layout too, for
    docker-registry, as a reference
(2) `oci2vm build --format ext4` from a warm cache (every blob cached)
(3) `oci2vm build --format ext4` from an empty cache: the layers are flattened as they
    download
Target: (3) <= 1.1 x max((1), (2)) for both (before the overlap, (3) was (1) + (2)).
Each figure is the best of --repeat runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import compile_package  # noqa: E402

from fixture_images import FixtureSet, debian_fixture  # noqa: E402
from support.registries import FakeRegistry, Reply, fake_registry, running_registry  # noqa: E402

MB = 1_000_000
# The download alone: the registry source resolving an image into the cache given, every
# blob fetched and verified, nothing read back.
FETCH_ONLY = (
    "import sys; from pathlib import Path; from oci2vm.image.blobs import BlobStore; "
    "from oci2vm.sources import Fetch, resolve; "
    "resolve(sys.argv[1], Fetch(store=BlobStore(Path(sys.argv[2])), tls_verify=False))"
)


def timed(argv: list[str]) -> float:
    """Seconds a child process takes (as a user runs it)."""
    started = time.perf_counter()
    proc = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode().strip()}")
    return seconds


def oci2vm(*args: str) -> float:
    return timed([sys.executable, "-m", "oci2vm.cli", *args])


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def serve_layout(fake: FakeRegistry, layout: Path, tag: str, repo: str) -> None:
    """Every blob of the layout's image `tag` from memory, as repo:tag."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )
    blobs = layout / "blobs/sha256"
    manifest = (blobs / desc["digest"].split(":")[1]).read_bytes()
    fake.add_manifest(repo, tag, manifest, desc["mediaType"])
    doc = json.loads(manifest)
    for blob in [doc["config"], *doc["layers"]]:
        data = (blobs / blob["digest"].split(":")[1]).read_bytes()
        fake.routes[f"/v2/{repo}/blobs/{blob['digest']}"] = Reply(body=data)


def measure(source: str, work: Path, repeat: int) -> tuple[float, float, float]:
    """(1) download alone, (2) warm build, (3) cold build of `source`, in seconds."""
    common = ["--tls-verify=false"]
    warm_cache = work / "warm-cache"
    cold_cache = work / "cold-cache"
    out = work / "out.ext4"

    def download() -> float:
        return timed([sys.executable, "-c", FETCH_ONLY, source, str(fresh(warm_cache))])

    def build(cache: Path) -> float:
        out.unlink(missing_ok=True)
        return oci2vm(
            "build", "-q", source, "--format", "ext4", "-o", str(out), *common,
            "--cache-dir", str(cache),
        )  # fmt: skip

    downloaded = best(repeat, download)  # leaves warm_cache filled
    warm = best(repeat, lambda: build(warm_cache))
    cold = best(repeat, lambda: build(fresh(cold_cache)))
    return downloaded, warm, cold


def report(name: str, downloaded: float, warm: float, cold: float, extra: str = "") -> None:
    floor = max(downloaded, warm)
    print(f"{name}")
    print(f"  (1) download alone                    {downloaded:6.2f} s{extra}")
    print(f"  (2) build from a warm cache           {warm:6.2f} s")
    print(f"  (3) cold pull + build                 {cold:6.2f} s")
    print(
        f"  (3)/max((1),(2)) = {cold / floor:.2f}   target <= 1.10"
        f"   ((1)+(2), no overlap: {(downloaded + warm) / floor:.2f})"
    )


def skopeo_copy(source: str, work: Path) -> float:
    dest = fresh(work / "skopeo-layout")
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]
    started = time.perf_counter()
    subprocess.run([*argv, source, f"oci:{dest}:x"], check=True)
    return time.perf_counter() - started


def loopback(fixture: FixtureSet, work: Path, repeat: int) -> None:
    with running_registry(work / "registry") as registry:
        registry.push(fixture.oci_layout, fixture.tag, "debian:bench")
        source = f"docker://{registry.host}/debian:bench"
        downloaded, warm, cold = measure(source, work, repeat)
        skopeo = best(repeat, lambda: skopeo_copy(source, work))
    report(
        "docker-registry on 127.0.0.1", downloaded, warm, cold, f"   (skopeo copy {skopeo:.2f} s)"
    )


def throttled(fixture: FixtureSet, work: Path, repeat: int, rate: float) -> None:
    with fake_registry() as fake:
        serve_layout(fake, fixture.oci_layout, fixture.tag, "debian")
        fake.rate = rate * MB
        source = f"docker://{fake.host}/debian:{fixture.tag}"
        downloaded, warm, cold = measure(source, work, repeat)
    report(f"registry stand-in at {rate:g} MB/s", downloaded, warm, cold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the best)")
    parser.add_argument("--rate", type=float, default=50.0, help="the slow link, MB/s")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory")
    parser.add_argument(
        "--only", choices=("loopback", "throttled"), default=None, help="one registry only"
    )
    args = parser.parse_args()
    fixture = debian_fixture()
    work = Path(args.work or tempfile.mkdtemp(prefix="oci2vm-bench-pull-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        compile_package()
        blobs = fixture.oci_layout / "blobs/sha256"
        layers = [blobs / d.split(":")[1] for d in fixture.layer_digests]
        compressed = sum(p.stat().st_size for p in layers)
        print(f"image: {fixture.name}, {len(layers)} layers, {compressed / MB:.0f} MB compressed")
        if args.only != "throttled":
            loopback(fixture, work, args.repeat)
        if args.only != "loopback":
            throttled(fixture, work, args.repeat, args.rate)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
