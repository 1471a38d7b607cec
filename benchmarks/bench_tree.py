"""Benchmark: what the tree and the ext4 writer cost per entry, on generated one-layer images
of many tiny files, in one run.

    python benchmarks/bench_tree.py [--sizes 100000,400000,1000000] [--profile 100000]

For each size N: a gzip layer of N files of a few bytes, 1000 to a directory (generated
once, kept under the fixture cache), built with `oci2vm build --format ext4`; printed: the
build's time and peak RSS (VmHWM of the child), per entry, against the targets of issue 13
(peak RSS <= 60 MB + 150 B per entry; time linear in entries), and ISA-L's time to inflate
the layer (the floor). --profile N also flattens and writes the N-file image in this
process under tracemalloc and prints where the bytes held per entry were allocated.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from benchlib import MB, compile_package, timed_child, write_oci_layout  # noqa: E402
from isal import igzip  # noqa: E402

PER_DIR = 1000
MTIME = 1_700_000_000
BASE_RSS = 60 * MB  # issue 13's target: 60 MB + 150 B per entry
PER_ENTRY = 150
VERSION = 1  # of the generated layouts: bump when generate() changes


class _Hashing(io.RawIOBase):
    """Writes through to a gzip stream, hashing the uncompressed bytes (the diff_id)."""

    def __init__(self, out: igzip.IGzipFile) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.out.write(data)
        return len(data)


def cache_root() -> Path:
    env = os.environ.get("OCI2VM_FIXTURE_CACHE")
    if env:
        return Path(env)
    system = Path("/var/cache/oci2vm-fixtures")
    if os.access(system, os.W_OK):
        return system
    return Path.home() / ".cache/oci2vm-fixtures"


def generate(files: int) -> Path:
    """The layout of a one-layer image of `files` tiny files (cached)."""
    out = cache_root() / f"bench-tree-{files}-v{VERSION}"
    if (out / "index.json").exists():
        return out
    work = Path(tempfile.mkdtemp(prefix=f"bench-tree-{files}-", dir=cache_root()))
    blobs = work / "blobs/sha256"
    blobs.mkdir(parents=True)
    layer = blobs / "layer"
    with igzip.open(layer, "wb", compresslevel=1) as gz:
        raw = _Hashing(gz)
        with tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
            for i in range(files):
                if i % PER_DIR == 0:
                    info = tarfile.TarInfo(f"d{i // PER_DIR:05d}")
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                    tar.addfile(info)
                content = b"%d\n" % i
                info = tarfile.TarInfo(f"d{i // PER_DIR:05d}/f{i:07d}")
                info.size, info.mode, info.mtime = len(content), 0o644, MTIME
                tar.addfile(info, io.BytesIO(content))
    sha = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 22):
            sha.update(chunk)
    layer.rename(blobs / sha.hexdigest())
    diff_id = "sha256:" + raw.sha.hexdigest()
    write_oci_layout(work, [("sha256:" + sha.hexdigest(), diff_id)], "bench")
    work.rename(out)
    return out


def entries_of(files: int) -> int:
    return files + -(-files // PER_DIR)


def inflate_floor(layout: Path) -> float:
    """ISA-L's time to inflate the layer (the best of two passes), reading the blob warm."""
    blob = max((layout / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        with igzip.open(blob, "rb") as f:
            while f.read(1 << 20):
                pass
        best = min(best, time.perf_counter() - started)
    return best


def build(layout: Path, out: Path, cache: Path) -> tuple[float, int]:
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "oci2vm.cli", "build", f"oci:{layout}:bench",
            "--format", "ext4", "-o", str(out), "-q", "--cache-dir", str(cache)]  # fmt: skip
    try:
        return timed_child(argv)
    finally:
        out.unlink(missing_ok=True)


def measure(sizes: list[int], work: Path) -> None:
    print(f"{'files':>9} {'entries':>9} {'build s':>8} {'us/entry':>8} {'floor s':>8} "
          f"{'peak MB':>8} {'target MB':>9} {'B/entry':>8}")  # fmt: skip
    first: float | None = None
    for files in sizes:
        layout = generate(files)
        entries = entries_of(files)
        floor = inflate_floor(layout)
        cache = work / "cache"
        build(layout, work / "out.ext4", cache)  # the first build hashes the layer
        seconds, peak = build(layout, work / "out.ext4", cache)
        per = seconds / entries * 1e6
        first = first or per
        target = BASE_RSS + PER_ENTRY * entries
        print(f"{files:9d} {entries:9d} {seconds:8.2f} {per:8.1f} {floor:8.2f} "
              f"{peak / MB:8.1f} {target / MB:9.1f} {(peak - BASE_RSS) / entries:8.0f}"
              f"   time/entry vs first {per / first:.2f}; "
              f"RSS {'ok' if peak <= target else 'OVER'}")  # fmt: skip


def profile(files: int, work: Path) -> None:
    """Flatten and write the image here, under tracemalloc: the bytes still allocated after
    the layers were read, by source line, and the peak of finish()."""
    import uuid

    from oci2vm.fs.ext4 import Ext4Writer
    from oci2vm.layers.flatten import flatten
    from oci2vm.sources import Fetch, resolve

    layout = generate(files)
    entries = entries_of(files)
    image = resolve(f"oci:{layout}:bench", Fetch())
    gc.collect()
    tracemalloc.start()
    with open(work / "profile.ext4", "wb") as out:
        writer = Ext4Writer(out, uuid=uuid.UUID(int=1), hash_seed=uuid.UUID(int=2), fs_time=MTIME)
        base = tracemalloc.take_snapshot()
        tree = flatten(image, sink=writer.write_file)
        after = tracemalloc.take_snapshot()
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        writer.finish(tree.root)
        _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    (work / "profile.ext4").unlink()
    print(f"\nprofile of {files} files ({entries} entries), tracemalloc:")
    print(f"  held after the layers: {held / entries:6.0f} B/entry   finish() peak: "
          f"{peak / entries:6.0f} B/entry")  # fmt: skip
    for stat in after.compare_to(base, "lineno")[:14]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"  {stat.size_diff / entries:7.1f} B/entry  {stat.count_diff / entries:5.2f} "
              f"objects/entry  {where}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,400000,1000000", help="files per image")
    parser.add_argument("--profile", type=int, default=0, help="files of the profiled image")
    parser.add_argument("--no-build", action="store_true", help="profile only")
    args = parser.parse_args()
    compile_package()
    with tempfile.TemporaryDirectory(prefix="oci2vm-bench-tree-") as tmp:
        work = Path(tmp)
        if not args.no_build:
            measure([int(n) for n in args.sizes.split(",")], work)
        if args.profile:
            profile(args.profile, work)


if __name__ == "__main__":
    main()
