"""Layers in stripes (sources/downloads.py), against the fake registry throttled per
connection (tests/support/registries.py): stripes cover each layer once, in the order the
build reads the layers, longer where requests take long; a part that drops is fetched
again, other bytes fail the build; registries that answer ranges otherwise (or not at
all) send layers whole; a pull that fails finishes the layer under way."""

from __future__ import annotations

import functools
import hashlib
import itertools
import threading
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.arrival import Arrival, Span
from oci2vm.image.blobs import BlobStore
from oci2vm.report import Reporter
from oci2vm.sources.downloads import Downloads
from support.layouts import BuiltImage, build_image, directory, file
from support.registries import FakeRegistry, Reply, fake_registry, pull
from support.streaming import (
    assert_nothing_half_written,
    blob_path,
    build_from,
    download_threads,
    error_of_build,
    layout_build,
    whole_requests,
)

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("no_host_credentials")]


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


def test_a_range_request_that_fails_leaves_only_its_layer_whole(store: BlobStore) -> None:
    """A pull alone asks whether the registry answers range requests with one for a
    layer's last byte; that one fails (a 404): it tells nothing of the registry, so that
    layer comes whole and the other, asked again, in stripes."""
    image = two_large_layers()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        fake.range_once = [404]
        pulled = pull(fake.host, "app:1", store)
        whole = [whole_requests(fake, blob_path(image, n)) for n in (0, 1)]
        parts = [len(part_requests(fake, blob_path(image, n))) for n in (0, 1)]
    assert sorted(whole) == [0, 1], whole
    assert parts[whole.index(0)] >= 2 and parts[whole.index(1)] == 0, parts
    assert [layer.blob.read_all(limit=64 << 20) for layer in pulled.layers] == list(image.layers)


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


@pytest.mark.parametrize("announced", [True, False])
def test_a_part_whose_connection_drops_is_fetched_again(
    store: BlobStore, tmp_path: Path, announced: bool
) -> None:
    """With a Content-Length, urllib3 finds the part short; without, the store does."""
    image = large_image()
    with fake_registry() as fake:
        throttled_per_connection(fake, image)
        fake.drop_parts = 1
        fake.drop_unannounced = not announced
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
