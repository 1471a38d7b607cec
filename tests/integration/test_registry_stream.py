"""A build from a registry reads each layer while it downloads, against the fake registry
(tests/support/registries.py): a layer held back half-way is flattened before its end
arrives; the output is the bytes of a build from an OCI layout; a tampered layer, a lying
Range answer, connections dropped mid-layer and a build that fails while a download is
held all end with one line, no output and nothing half-written in the cache."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore, ProgressFn
from oci2vm.report import Reporter
from oci2vm.sources.registry import BLOB_ATTEMPTS
from oci2vm.sources.transport import PROGRESS_BYTES
from support import runcli
from support.layouts import BuiltImage, build_image, directory, file
from support.registries import (
    GATE_TIMEOUT,
    Reply,
    fake_registry,
)
from support.streaming import (
    assert_nothing_half_written,
    blob_path,
    build_args,
    build_from,
    download_threads,
    error_of_build,
    layout_build,
    whole_requests,
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
