"""A build from a registry reads each layer while it downloads, against the fake registry
(tests/support/registries.py): a layer held back half-way is flattened before its end
arrives; the output is the bytes of a build from an OCI layout; a tampered layer, a lying
Range answer, connections dropped mid-layer and a build that fails while a download is
held all end with one line, no output and nothing half-written in the cache."""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from oci2vm import pipeline
from oci2vm.cli import config_from, parse
from oci2vm.errors import Oci2vmError
from oci2vm.image.arrival import Arrival, Span
from oci2vm.image.blobs import BlobStore, ProgressFn
from oci2vm.report import Reporter
from oci2vm.sources.downloads import Downloads
from oci2vm.sources.registry import BLOB_ATTEMPTS
from oci2vm.sources.transport import PROGRESS_BYTES
from support import runcli
from support.layouts import BuiltImage, build_image, directory, file, write_layout
from support.registries import (
    GATE_TIMEOUT,
    FakeRegistry,
    Reply,
    cache_files,
    fake_registry,
    pull,
)
from support.tokens import self_signed

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("no_host_credentials")]

HELD = 256 << 10  # bytes of the top layer sent before the gate


def streamed_image() -> BuiltImage:
    """Two gzip layers; the top one holds 1 MiB of random data (it stays that large
    compressed, so that it arrives in many pieces)."""
    data = hashlib.shake_256(b"oci2vm streamed layer").digest(1 << 20)
    return build_image(
        [
            [directory("etc"), file("etc/os-release", b"ID=tiny\n"), file("bin/true", b"x")],
            [directory("srv"), file("srv/random.bin", data), file("etc/hostname", b"streamed\n")],
        ],
        created="2024-01-01T00:00:00Z",
    )


class Recorder(Reporter):
    """A reporter whose progress bars are counters (it claims a terminal): `on_bytes`
    is called with the description and bytes so far of each bar as it advances."""

    def __init__(self) -> None:
        super().__init__(quiet=False)
        self.bars: dict[str, int] = {}
        self.watch: tuple[str, int, threading.Event] | None = None

    @property
    def interactive(self) -> bool:
        return True

    @contextmanager
    def progress(self) -> Iterator[None]:
        yield

    def task(self, description: str, total: int | None) -> ProgressFn:
        self.bars[description] = 0

        def advance(n: int) -> None:
            self.bars[description] += n
            if self.watch is not None:
                prefix, least, event = self.watch
                if description.startswith(prefix) and self.bars[description] >= least:
                    event.set()

        return advance


def build_args(source: str, out: Path, cache: BlobStore) -> list[str]:
    return ["build", "--format", "ext4", source, "-o", str(out), "--cache-dir", str(cache.root)]


def build_from(fake: FakeRegistry, out: Path, cache: BlobStore, reporter: Reporter) -> None:
    args = [*build_args(f"docker://{fake.host}/app:1", out, cache), "--tls-verify=false"]
    pipeline.build(config_from(parse(args)), reporter)


def layout_build(image: BuiltImage, tmp_path: Path) -> bytes:
    """The output of a build of the same image from an OCI layout (no download at all)."""
    layout = write_layout(tmp_path / "layout", {"app": image})
    out = tmp_path / "from-layout.ext4"
    cache = BlobStore(tmp_path / "layout-cache")
    pipeline.build(config_from(parse(build_args(f"oci:{layout.path}:app", out, cache))), Reporter())
    return out.read_bytes()


def blob_path(image: BuiltImage, index: int) -> str:
    return f"/v2/app/blobs/{image.layer_digests[index]}"


def whole_requests(fake: FakeRegistry, path: str) -> int:
    """GETs of a whole blob (not Range requests)."""
    return sum(1 for s in fake.seen if s.path == path and "Range" not in s.headers)


def assert_nothing_half_written(store: BlobStore, *digests: str) -> None:
    names = cache_files(store)
    assert not [n for n in names if n.startswith(".tmp-")], names
    for digest in digests:
        assert not store.path(digest).exists()


def download_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("download")]


def test_a_layer_is_flattened_while_it_downloads(store: BlobStore, tmp_path: Path) -> None:
    image = streamed_image()
    gate = threading.Event()
    held = Reply(body=image.layers[1], hold_after=HELD, gate=gate)
    reporter = Recorder()
    # The gate opens when the build has read part of the top layer ("layer 2/2"): with
    # no overlap, the build would wait for the download, which waits for the gate.
    reporter.watch = ("layer 2/2", HELD // 2, gate)
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.routes[blob_path(image, 1)] = held
        build_from(fake, tmp_path / "pulled.ext4", store, reporter)
    assert not held.gate_timed_out
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)
    # The download and the build each showed the layer's bytes, once.
    short = image.layer_digests[1].split(":")[1][:12]
    assert reporter.bars[f"layer {short}"] == len(image.layers[1])
    assert reporter.bars["layer 2/2"] == len(image.layers[1])
    # The size of the held layer's contents came from its gzip trailer, by Range.
    ranges = [s.headers.get("Range") for s in fake.seen if s.path == blob_path(image, 1)]
    size = len(image.layers[1])
    assert f"bytes={size - 4}-{size - 1}" in ranges
    assert store.path(image.layer_digests[1]).read_bytes() == image.layers[1]
    assert_nothing_half_written(store)
    assert download_threads() == []


def test_without_range_answers_the_build_waits_for_the_trailer(
    store: BlobStore, tmp_path: Path
) -> None:
    image = streamed_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.ranges = False  # Range headers ignored: 200 and the whole blob
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
        assert whole_requests(fake, blob_path(image, 1)) == 1
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)


def error_of_build(fake: FakeRegistry, out: Path, store: BlobStore) -> str:
    with pytest.raises(Oci2vmError) as e:
        build_from(fake, out, store, Reporter())
    message = str(e.value)
    assert "\n" not in message
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []
    return message


def test_a_tampered_layer_fails_the_build_and_is_not_cached(
    store: BlobStore, tmp_path: Path
) -> None:
    image = streamed_image()
    tampered = bytearray(image.layers[1])
    tampered[len(tampered) // 2] ^= 0xFF
    digest = image.layer_digests[1]
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.once[blob_path(image, 1)].append(Reply(body=bytes(tampered)))
        message = error_of_build(fake, tmp_path / "pulled.ext4", store)
    got = "sha256:" + hashlib.sha256(tampered).hexdigest()
    assert message == (
        f"blob {digest} of {fake.host}/app: digest mismatch: expected {digest}, got {got}"
    )
    assert_nothing_half_written(store, digest)
    assert download_threads() == []


def test_a_range_answer_unlike_the_blob_fails_the_build(store: BlobStore, tmp_path: Path) -> None:
    """The size estimate from a Range answer shapes the filesystem: one that the blob
    does not bear out must not make an output."""
    image = streamed_image()
    gate = threading.Event()
    reporter = Recorder()
    reporter.watch = ("layer 2/2", 1, gate)
    lie = bytearray(image.layers[1])
    lie[-1] ^= 0x01  # the trailer's size, off by 16 MiB
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.routes[blob_path(image, 1)] = Reply(body=image.layers[1], hold_after=HELD, gate=gate)
        fake.range_bodies[blob_path(image, 1)] = bytes(lie)
        with pytest.raises(Oci2vmError) as e:
            build_from(fake, tmp_path / "pulled.ext4", store, reporter)
    assert str(e.value) == (
        f"blob {image.layer_digests[1]} of {fake.host}/app: the registry answered a range "
        "request with other bytes than the blob's own"
    )
    assert not (tmp_path / "pulled.ext4").exists()
    assert_nothing_half_written(store, image.layer_digests[1])


def test_a_connection_dropped_mid_layer_is_downloaded_again(
    store: BlobStore, tmp_path: Path
) -> None:
    image = streamed_image()
    path = blob_path(image, 1)
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.once[path].append(Reply(body=image.layers[1], drop_after=HELD))
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
        assert whole_requests(fake, path) == 2
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)
    assert_nothing_half_written(store)


def test_a_connection_dropped_at_every_attempt_fails_cleanly(
    store: BlobStore, tmp_path: Path
) -> None:
    image = streamed_image()
    path = blob_path(image, 1)
    digest = image.layer_digests[1]
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        for _ in range(BLOB_ATTEMPTS):
            fake.once[path].append(Reply(body=image.layers[1], drop_after=HELD))
        message = error_of_build(fake, tmp_path / "pulled.ext4", store)
        assert whole_requests(fake, path) == BLOB_ATTEMPTS
    assert message.startswith(
        f"download of blob {digest} of {fake.host}/app failed: connection to registry "
        f"{fake.host} dropped: "
    ), message
    assert_nothing_half_written(store, digest)
    assert download_threads() == []


def test_a_failed_build_stops_a_download_under_way(store: BlobStore, tmp_path: Path) -> None:
    """The top layer is not a valid gzip stream (its digest is right): the build fails
    on it while the bottom layer is held half-way; the held download is cut short, its
    temporary file removed, at once rather than when the registry sends the rest."""
    broken = b"\x1f\x8b\x08\x00" + b"\xff" * (PROGRESS_BYTES * 2)
    bottom = [file("srv/random.bin", os.urandom(1 << 20))]
    image = build_image([bottom, broken], compression=["gzip", "none"])
    gate = threading.Event()
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.routes[blob_path(image, 0)] = Reply(body=image.layers[0], hold_after=HELD, gate=gate)
        started = time.monotonic()
        try:
            message = error_of_build(fake, tmp_path / "pulled.ext4", store)
        finally:
            gate.set()
        seconds = time.monotonic() - started
    assert message.startswith(f"layer 2 ({image.layer_digests[1][7:19]}): corrupt gzip stream")
    assert seconds < GATE_TIMEOUT / 2
    assert_nothing_half_written(store, image.layer_digests[0])
    assert download_threads() == []


def test_a_signal_stops_a_build_waiting_for_a_layer(store: BlobStore, tmp_path: Path) -> None:
    """SIGTERM while the build waits for bytes of a layer the registry holds back: the
    build ends at once with 128 + 15, and leaves no output and no temporary file."""
    image = streamed_image()
    gate = threading.Event()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.routes[blob_path(image, 1)] = Reply(body=image.layers[1], hold_after=HELD, gate=gate)
        source = f"docker://{fake.host}/app:1"
        args = build_args(source, out_dir / "pulled.ext4", store)
        proc = runcli.start(*args, "-q", "--tls-verify=false")
        try:
            deadline = time.monotonic() + GATE_TIMEOUT / 2
            while not any(out_dir.iterdir()) and time.monotonic() < deadline:
                assert proc.poll() is None
                time.sleep(0.02)
            time.sleep(0.5)  # into the held layer
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=GATE_TIMEOUT)
            seconds = time.monotonic() - started
        finally:
            gate.set()
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.decode().strip().splitlines() == ["oci2vm: stopped by SIGTERM"]
    assert seconds < GATE_TIMEOUT / 2
    assert list(out_dir.iterdir()) == []
    assert_nothing_half_written(store, image.layer_digests[1])


def test_downloads_over_unverified_tls_print_no_warning(store: BlobStore, tmp_path: Path) -> None:
    """--tls-verify=false: urllib3's InsecureRequestWarning stays off in the download
    threads too, which run on after the source is resolved."""
    image = streamed_image()
    gate = threading.Event()
    reporter = Recorder()
    reporter.watch = ("layer 2/2", HELD // 2, gate)
    with (
        warnings.catch_warnings(record=True) as caught,
        fake_registry(tls=self_signed(tmp_path / "tls", "fake-registry")) as fake,
    ):
        warnings.simplefilter("always")
        fake.add_image("app", "1", image)
        # Held, so that the download still runs when the source has been resolved.
        held = Reply(body=image.layers[1], hold_after=HELD, gate=gate)
        fake.routes[blob_path(image, 1)] = held
        build_from(fake, tmp_path / "pulled.ext4", store, reporter)
    assert not held.gate_timed_out
    assert [str(w.message) for w in caught] == []
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)


def test_bytes_read_before_a_retry_are_verified_too(store: BlobStore, tmp_path: Path) -> None:
    """The first attempt sends other bytes, which the build reads, and breaks off; the
    second sends the right ones, which enter the cache: the build, which read the first
    ones, fails (the retry found them unlike its own) rather than make an output of them."""
    image = streamed_image()
    digest = image.layer_digests[1]
    tampered = bytearray(image.layers[1])
    tampered[HELD // 2] ^= 0xFF  # within what the build reads before the retry
    gate = threading.Event()
    reporter = Recorder()
    reporter.watch = ("layer 2/2", HELD - 1, gate)  # then the first attempt breaks off
    first = Reply(body=bytes(tampered), hold_after=HELD, gate=gate, drop_after=HELD)
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        fake.once[blob_path(image, 1)].append(first)
        with pytest.raises(Oci2vmError) as e:
            build_from(fake, tmp_path / "pulled.ext4", store, reporter)
        assert whole_requests(fake, blob_path(image, 1)) == 2
    assert not first.gate_timed_out
    assert str(e.value) == (
        f"blob {digest} of {fake.host}/app: the registry sent other bytes when the download "
        "was retried than the build had read: run the build again (the blob is cached now, "
        "verified)"
    )
    assert not (tmp_path / "pulled.ext4").exists()
    assert store.path(digest).read_bytes() == image.layers[1]  # the second attempt's


# --- layers in stripes, where each connection is limited ------------------------------------

PART_RATE = 20e6  # bytes per second of each connection alone


@functools.cache
def large_image() -> BuiltImage:
    """One layer of 24 MiB of random data (as large compressed): enough for the idle
    connections to take parts of it (sources/downloads.py, SPLIT_LEAST)."""
    data = hashlib.shake_256(b"oci2vm parts").digest(24 << 20)
    return build_image(
        [[directory("srv"), file("srv/random.bin", data), file("etc/os-release", b"ID=tiny\n")]],
        created="2024-01-01T00:00:00Z",
    )


def part_requests(fake: FakeRegistry, path: str) -> list[tuple[int, int]]:
    """The ranges asked of a blob in parts (not the few bytes of its end)."""
    parts = []
    for seen in fake.seen:
        asked = seen.headers.get("Range")
        if seen.path == path and asked:
            first, last = (int(n) for n in asked.removeprefix("bytes=").split("-"))
            if last - first >= 64 << 10:
                parts.append((first, last))
    return parts


def throttled_per_connection(fake: FakeRegistry, image: BuiltImage) -> None:
    fake.add_image("app", "1", image)
    fake.rate, fake.per_connection = PART_RATE, True


def assert_stripes(parts: list[tuple[int, int]], size: int) -> None:
    """Ranges asked of a blob (in the order the registry saw them) that cover it end to
    end, each once, about in order (three connections ask at once)."""
    assert sorted(parts)[0][0] == 0 and sorted(parts)[-1][1] == size - 1, parts
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(sorted(parts))), parts
    assert all(a[0] < b[0] for a, b in zip(parts, parts[3:], strict=False)), parts


def test_where_each_connection_is_limited_a_layer_comes_in_parts(
    store: BlobStore, tmp_path: Path
) -> None:
    image = large_image()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
        parts = part_requests(fake, blob_path(image, 0))
        assert whole_requests(fake, blob_path(image, 0)) == 0
    assert len(parts) >= 4, parts  # stripes: 4 MiB at first, then larger
    assert_stripes(parts, len(image.layers[0]))
    assert fake.most_blobs_at_once >= 3
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)
    assert store.path(image.layer_digests[0]).read_bytes() == image.layers[0]
    assert_nothing_half_written(store)
    assert download_threads() == []


@functools.cache
def two_large_layers() -> BuiltImage:
    """Two layers of random data, 12 MiB below and 24 MiB on top (read first)."""
    below = hashlib.shake_256(b"oci2vm lower stripes").digest(12 << 20)
    above = hashlib.shake_256(b"oci2vm parts").digest(24 << 20)
    return build_image(
        [
            [directory("srv"), file("srv/below.bin", below), file("etc/os-release", b"ID=x\n")],
            [directory("srv"), file("srv/above.bin", above)],
        ],
        created="2024-01-01T00:00:00Z",
    )


def test_stripes_come_in_the_order_the_build_reads_them(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flattener reads the top layer first, whole, then the one below; before that,
    the first bytes of each (they size the filesystem): the lower layer's first stripe
    is among the first ones claimed, its others once the top layer's all are."""
    image = two_large_layers()
    claimed: list[tuple[int, int]] = []  # (size of the blob, first byte), as claimed
    lock = threading.Lock()
    claim = Arrival.claim

    def recorded(arrival: Arrival, most: int) -> Span | None:
        with lock:
            span = claim(arrival, most)
            if span is not None:
                claimed.append((arrival.size, span.start))
            return span

    monkeypatch.setattr(Arrival, "claim", recorded)
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
    layer = {len(image.layers[0]): "below", len(image.layers[1]): "above"}
    order = [(layer[size], first) for size, first in claimed]
    above = [n for n, (name, _) in enumerate(order) if name == "above"]
    below = [n for n, (name, _) in enumerate(order) if name == "below"]
    assert order[below[0]] == ("below", 0) and below[0] <= 2, order
    assert len(above) >= 4 and min(below[1:]) > above[-1], order
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)


def stripe_lengths(fake: FakeRegistry, image: BuiltImage) -> list[int]:
    """The lengths of the stripes asked of each layer but its last (which takes the rest)."""
    lengths = []
    for index in range(len(image.layers)):
        parts = sorted(part_requests(fake, blob_path(image, index)))
        lengths += [last + 1 - first for first, last in parts[:-1]]
    return lengths


def test_stripes_grow_with_the_time_a_request_takes(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where each request waits 0.2 s for its answer, a 4 MiB stripe at 20 MB/s would
    spend half of its time waiting: later stripes are longer (8 x 0.2 s x 20 MB/s, no
    more than a third of what is left), however fast the build reads (not measured here:
    that lengthens them too)."""
    monkeypatch.setattr(Downloads, "_read_rate", lambda self, order: None)
    image = two_large_layers()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        fake.latency = 0.2
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
        lengths = stripe_lengths(fake, image)
    assert lengths and min(lengths) == 4 << 20, lengths
    assert max(lengths) >= 6 << 20, lengths


def test_a_pull_alone_fetches_a_layer_in_parts_too(store: BlobStore) -> None:
    image = large_image()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        pulled = pull(fake.host, "app:1", store)
        assert part_requests(fake, blob_path(image, 0))
    assert pulled.layers[0].blob.read_all(limit=64 << 20) == image.layers[0]
    assert_nothing_half_written(store)


@functools.cache
def small_on_large() -> BuiltImage:
    """16 MiB of random data below (in stripes), a few bytes on top (whole)."""
    below = hashlib.shake_256(b"oci2vm lower stripes").digest(16 << 20)
    return build_image(
        [[directory("srv"), file("srv/below.bin", below)], [file("etc/hostname", b"top\n")]],
        created="2024-01-01T00:00:00Z",
    )


def test_a_pull_alone_that_fails_finishes_the_layer_under_way(store: BlobStore) -> None:
    """The small top layer fails its digest while the large one below comes in stripes:
    the pull fails with that error once the large one is complete, verified and cached
    (pulling again fetches only what failed)."""
    image = small_on_large()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        top = blob_path(image, 1)
        fake.routes[top] = Reply(body=bytes(len(image.layers[1])))  # not the blob
        with pytest.raises(Oci2vmError) as e:
            pull(fake.host, "app:1", store)
        assert len(part_requests(fake, blob_path(image, 0))) >= 3
    assert "digest mismatch" in str(e.value), e.value
    assert store.path(image.layer_digests[0]).read_bytes() == image.layers[0]
    assert_nothing_half_written(store, image.layer_digests[1])


def test_a_part_whose_connection_drops_is_fetched_again(store: BlobStore, tmp_path: Path) -> None:
    image = large_image()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        fake.drop_parts = 1
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
        starts = [first for first, _ in part_requests(fake, blob_path(image, 0))]
    assert len(starts) > len(set(starts)), starts  # one part asked for twice
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)
    assert_nothing_half_written(store)


def test_other_bytes_in_a_part_fail_the_build_and_cache_nothing(
    store: BlobStore, tmp_path: Path
) -> None:
    """The registry answers range requests with other bytes in the blob's last 8 MiB (not
    its last 4, which size the filesystem), which a part always covers."""
    image = large_image()
    path = blob_path(image, 0)
    digest = image.layer_digests[0]
    blob = image.layers[0]
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        lie = len(blob) - (8 << 20)
        fake.range_bodies[path] = blob[:lie] + bytes(len(blob) - lie - 4) + blob[-4:]
        message = error_of_build(fake, tmp_path / "pulled.ext4", store)
        assert part_requests(fake, path)
    assert message.startswith(f"blob {digest} of {fake.host}/app: digest mismatch: "), message
    assert_nothing_half_written(store, digest)
    assert download_threads() == []


def test_without_range_answers_a_layer_comes_whole(store: BlobStore, tmp_path: Path) -> None:
    image = large_image()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        fake.ranges = False  # Range headers ignored: 200 and the whole blob
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
        assert whole_requests(fake, blob_path(image, 0)) == 1
        assert part_requests(fake, blob_path(image, 0)) == []
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)


@pytest.mark.parametrize(("answer", "again"), [("whole", 0), ("other", 1)])
def test_a_registry_answering_parts_otherwise_than_asked_sends_them_whole(
    store: BlobStore, tmp_path: Path, answer: str, again: int
) -> None:
    """Its answer to the request of a layer's last bytes was right, to those of stripes
    not (the whole blob, or another range, which is closed and asked again without
    Range): the stripes come from whole answers, read past the bytes before them, and
    nothing more is split."""
    image = large_image()
    path = blob_path(image, 0)
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        fake.parts_answer = answer
        build_from(fake, tmp_path / "pulled.ext4", store, Reporter())
        # The stripes asked before the first answer came, then one whole answer for the
        # rest, read past those (and, for the other ranges, each stripe again).
        assert 1 <= len(part_requests(fake, path)) <= 3
        assert whole_requests(fake, path) == 1 + again * len(part_requests(fake, path))
    assert (tmp_path / "pulled.ext4").read_bytes() == layout_build(image, tmp_path)
    assert_nothing_half_written(store)
