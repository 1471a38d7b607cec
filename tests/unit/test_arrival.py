"""Blobs read while they download (image/arrival.py, BlobStore.begin/fill) and the build's
downloads (sources/downloads.py): reads wait for bytes and end only at a verified blob,
a failure or a stop wakes readers and leaves nothing half-written, tails fetched apart
are checked against the blob."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import threading
import time
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.arrival import THIN_LEAD, Arrival
from oci2vm.image.blobs import BlobRef, BlobStore, uncompressed_size_hint
from oci2vm.sources.downloads import STRIPE_LEAST, Downloads
from oci2vm.sources.linkprobe import LinkProbe
from support.background import SETTLE, Background, CountingHash, files_in

DATA = bytes(range(256)) * 64  # 16 KiB
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def begin(store: BlobStore, data: bytes = DATA) -> Arrival:
    return store.begin("sha256:" + hashlib.sha256(data).hexdigest(), len(data), "blob x")


def test_a_read_waits_for_its_bytes_and_the_end_waits_for_the_commit(store: BlobStore) -> None:
    arrival = begin(store)
    arrival.write_span(arrival.first, DATA[:100])
    reader = arrival.open()
    assert reader.read(100) == DATA[:100]
    pending = Background(lambda: reader.read(50))
    assert not pending.done.wait(SETTLE)  # nothing beyond 100 yet
    arrival.write_span(arrival.first, DATA[100:])
    assert pending.wait() == DATA[100:150]
    assert reader.read(len(DATA)) == DATA[150:-1]
    end = Background(lambda: reader.read(10))
    assert not end.done.wait(SETTLE)  # all bytes there, but not verified yet
    arrival.commit()
    assert end.wait() == DATA[-1:]
    assert reader.read(1) == b""
    reader.close()
    assert store.path(DIGEST).read_bytes() == DATA
    assert files_in(store) == [DIGEST.split(":")[1]]


def test_a_failure_wakes_a_waiting_reader_and_removes_the_file(store: BlobStore) -> None:
    arrival = begin(store)
    arrival.write_span(arrival.first, DATA[:10])
    reader = arrival.open()
    pending = Background(lambda: reader.read(100))
    assert not pending.done.wait(SETTLE)
    arrival.fail(Oci2vmError("blob x: digest mismatch"))
    pending.wait()
    assert str(pending.error) == "blob x: digest mismatch"
    with pytest.raises(Oci2vmError, match=r"^blob x: digest mismatch$"):
        arrival.open()
    assert files_in(store) == []


def test_an_interrupted_reader_stops_waiting(store: BlobStore) -> None:
    arrival = begin(store)
    reader = arrival.open()
    pending = Background(lambda: reader.read(100))
    assert not pending.done.wait(SETTLE)
    reader.interrupt()
    pending.wait()
    assert str(pending.error) == "blob x: reading stopped"
    arrival.fail(Oci2vmError("stopped"))
    assert files_in(store) == []


def test_fill_verifies_and_a_second_attempt_writes_over_the_first(store: BlobStore) -> None:
    arrival = begin(store)
    # A first attempt that broke off, with other bytes.
    arrival.write_span(arrival.first, b"\0" * 5000)
    ref = store.fill(arrival, DIGEST, io.BytesIO(DATA))
    assert ref == BlobRef(store.path(DIGEST), 0, len(DATA), DIGEST, cached=True)
    assert store.path(DIGEST).read_bytes() == DATA
    assert arrival.committed


def test_fill_of_other_bytes_fails_and_caches_nothing(store: BlobStore) -> None:
    arrival = begin(store)
    tampered = DATA[:-1] + b"!"
    with pytest.raises(Oci2vmError, match=r"^blob x: digest mismatch: expected " + DIGEST):
        store.fill(arrival, DIGEST, io.BytesIO(tampered))
    assert not arrival.committed
    arrival.fail(Oci2vmError("mismatch"))
    assert files_in(store) == []


def test_a_blob_ref_of_an_arrival_is_verified_as_it_is_read(store: BlobStore) -> None:
    arrival = begin(store)
    ref = BlobRef(arrival.final, 0, len(DATA), DIGEST, cached=True, arrival=arrival)
    reading = Background(ref.read_all)
    arrival.write_span(arrival.first, DATA)
    assert not reading.done.wait(SETTLE), reading.error  # the last byte waits for the commit
    arrival.commit()
    assert reading.wait() == DATA
    other = b"x" * len(DATA)
    lying = begin(store, other)
    bad = BlobRef(lying.final, 0, len(other), DIGEST, arrival=lying)  # a digest it fails
    lying.write_span(lying.first, other)
    lying.commit()
    with pytest.raises(Oci2vmError, match="digest mismatch"):
        bad.read_all()


def test_a_reader_of_an_arrival_does_not_hash_the_bytes_the_download_hashed(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a reader reads are the bytes the download hashed: it does not hash them
    again (a cold build's second pass over every compressed byte), and still ends only
    on a verified blob."""
    arrival = begin(store)
    ref = BlobRef(arrival.final, 0, len(DATA), DIGEST, cached=True, arrival=arrival)
    updates: list[int] = []
    with monkeypatch.context() as patched:
        patched.setattr("oci2vm.image.blobs.new_hash", lambda digest: CountingHash(updates))
        reader = ref.open()
    store.fill(arrival, DIGEST, io.BytesIO(DATA))
    assert reader.read() == DATA
    reader.close()
    assert updates == []


def test_a_retry_that_writes_the_same_bytes_keeps_its_readers(store: BlobStore) -> None:
    arrival = begin(store)
    ref = BlobRef(arrival.final, 0, len(DATA), DIGEST, cached=True, arrival=arrival)
    arrival.write_span(arrival.first, DATA[:5000])  # a first attempt that broke off
    reader = ref.open()
    assert reader.read(4000) == DATA[:4000]
    store.fill(arrival, DIGEST, io.BytesIO(DATA))  # the retry: the same bytes again
    assert reader.read() == DATA[4000:]
    reader.close()


def test_a_retry_with_other_bytes_than_a_reader_read_fails_that_reader(
    store: BlobStore,
) -> None:
    """The reader read bytes of a first attempt that the retry replaced with others: it
    fails at its end, while the retry's bytes enter the cache and a reader opened
    after the commit reads them."""
    arrival = begin(store)
    ref = BlobRef(arrival.final, 0, len(DATA), DIGEST, cached=True, arrival=arrival)
    arrival.write_span(arrival.first, b"\0" * 5000)  # a first attempt with other bytes, broken off
    early = ref.open()
    assert early.read(100) == b"\0" * 100
    store.fill(arrival, DIGEST, io.BytesIO(DATA))
    with pytest.raises(Oci2vmError) as e:
        early.read()
    assert str(e.value) == (
        "blob x: the registry sent other bytes when the download was retried than the "
        "build had read: run the build again (the blob is cached now, verified)"
    )
    early.abort()
    assert store.path(DIGEST).read_bytes() == DATA
    assert ref.read_all() == DATA


def test_other_bytes_of_a_broken_attempt_that_no_reader_read_fail_nothing(
    store: BlobStore,
) -> None:
    """Only what a reader may have read counts: bytes of a first attempt beyond it,
    replaced by the retry before anyone read them, are not the reader's."""
    arrival = begin(store)
    ref = BlobRef(arrival.final, 0, len(DATA), DIGEST, cached=True, arrival=arrival)
    # Right at first, then other bytes.
    arrival.write_span(arrival.first, DATA[:1000] + b"\0" * 4000)
    reader = ref.open()
    assert reader.read(1000) == DATA[:1000]  # the reader stops short of the others
    store.fill(arrival, DIGEST, io.BytesIO(DATA))
    assert reader.read() == DATA[1000:]
    reader.close()


def gzip_blob() -> bytes:
    return gzip.compress(DATA * 8, mtime=0)


def test_the_size_hint_of_a_gzip_blob_still_downloading_uses_its_fetched_tail(
    store: BlobStore,
) -> None:
    blob = gzip_blob()
    arrival = begin(store, blob)
    asked: list[int] = []

    def tail(n: int) -> bytes:
        asked.append(n)
        return blob[-n:]

    arrival.tail_source = tail
    arrival.write_span(arrival.first, blob[:100])  # the head, not the trailer
    ref = BlobRef(arrival.final, 0, len(blob), None, arrival=arrival)
    assert uncompressed_size_hint(ref) == len(DATA) * 8
    assert asked == [4]
    arrival.write_span(arrival.first, blob[100:])
    arrival.commit()  # the tail matched
    complete = BlobRef(arrival.final, 0, len(blob), None)
    assert uncompressed_size_hint(complete) == len(DATA) * 8


def test_a_fetched_tail_unlike_the_blob_fails_the_commit(store: BlobStore) -> None:
    blob = gzip_blob()
    arrival = begin(store, blob)
    arrival.tail_source = lambda n: b"\0" * n
    arrival.write_span(arrival.first, blob[:100])
    assert arrival.tail(4) == b"\0\0\0\0"
    arrival.write_span(arrival.first, blob[100:])
    with pytest.raises(Oci2vmError, match="answered a range request with other bytes"):
        arrival.commit()
    arrival.fail(Oci2vmError("range"))
    assert files_in(store) == []


def test_without_a_tail_source_the_tail_waits_for_the_commit(store: BlobStore) -> None:
    blob = gzip_blob()
    arrival = begin(store, blob)
    tail = Background(lambda: arrival.tail(4))
    arrival.write_span(arrival.first, blob)
    assert not tail.done.wait(SETTLE)
    arrival.commit()
    assert tail.wait() == blob[-4:]


def test_the_first_failed_download_fails_every_blob_still_on_its_way(
    store: BlobStore, tmp_path: Path
) -> None:
    held = threading.Event()
    first, second, third = begin(store), begin(store, b"2" * 10), begin(store, b"3" * 10)
    with Downloads(workers=2) as downloads:
        downloads.start("a", first, lambda: held.wait(10))
        downloads.start("b", second, lambda: (_ for _ in ()).throw(Oci2vmError("registry gone")))
        downloads.start("c", third, lambda: None)  # never runs: the failure came first
        with pytest.raises(Oci2vmError, match=r"^registry gone$"):
            first.open().read(1)
        held.set()
        with pytest.raises(Oci2vmError, match=r"^registry gone$"):
            downloads.finish()
    for arrival in (first, second, third):
        with pytest.raises(Oci2vmError, match=r"^registry gone$"):
            arrival.open()
    assert files_in(store) == []


def test_closing_the_downloads_stops_them_and_removes_their_files(store: BlobStore) -> None:
    interrupted = threading.Event()
    closed: list[str] = []
    arrival, queued = begin(store), begin(store, b"q" * 10)

    def work() -> None:
        arrival.write_span(arrival.first, DATA[:10])
        interrupted.wait(10)  # a connection the interrupt shuts down
        arrival.write_span(arrival.first, DATA[10:])  # raises: the arrival failed meanwhile

    with Downloads(workers=1) as downloads:
        downloads.on_interrupt(interrupted.set)
        downloads.on_close(lambda: closed.append("session"))
        downloads.start("a", arrival, work)
        downloads.start("b", queued, lambda: None)
        assert downloads.arrival("a") is arrival
    assert interrupted.is_set()
    assert closed == ["session"]
    for stopped in (arrival, queued):
        with pytest.raises(Oci2vmError, match="stopped before the download was complete"):
            stopped.open()
    assert files_in(store) == []


def test_a_finished_download_stays_cached_after_close(store: BlobStore) -> None:
    arrival = begin(store)
    with Downloads() as downloads:
        downloads.start(DIGEST, arrival, lambda: store.fill(arrival, DIGEST, io.BytesIO(DATA)))
        downloads.finish()
    assert store.path(DIGEST).read_bytes() == DATA
    assert files_in(store) == [DIGEST.split(":")[1]]


def shared_link() -> LinkProbe:
    probe = LinkProbe()
    probe.shared = True
    return probe


def test_a_download_gives_way_while_the_build_is_close_behind_an_earlier_one(
    store: BlobStore,
) -> None:
    """On a shared link, bytes of a later blob would slow the one the build reads now:
    the later download waits until the earlier one is THIN_LEAD ahead of its reader."""
    size = THIN_LEAD + (1 << 20)
    earlier, later = begin(store, b"e" * size), begin(store, b"l" * 10)
    reader = earlier.open()
    wrote_later, done = threading.Event(), threading.Event()

    def write_later() -> None:
        later.write_span(later.first, b"l" * 10)
        wrote_later.set()

    with Downloads(workers=2, probe=shared_link()) as downloads:
        downloads.start("e", earlier, lambda: done.wait(10))  # written from the test
        downloads.start("l", later, write_later)
        assert not wrote_later.wait(SETTLE)  # the build waits for the earlier blob
        earlier.write_span(earlier.first, b"e" * (1 << 20))
        assert reader.read(1 << 20) == b"e" * (1 << 20)
        assert not wrote_later.wait(SETTLE)  # its reader is right behind it
        earlier.write_span(earlier.first, b"e" * THIN_LEAD)
        assert wrote_later.wait(5)  # now far enough ahead
        reader.close()
        done.set()


def test_a_download_the_build_waits_for_does_not_give_way(store: BlobStore) -> None:
    earlier, later = begin(store, b"e" * 100), begin(store, b"l" * 100)
    done = threading.Event()
    with Downloads(workers=2, probe=shared_link()) as downloads:
        downloads.start("e", earlier, lambda: done.wait(10))  # starved: nothing came
        downloads.start(
            "l", later, lambda: (later.write_span(later.first, b"l" * 100), done.wait(10))
        )
        head = Background(lambda: later.head(18))  # the build reads it first
        try:
            assert head.done.wait(5)
        finally:
            done.set()
        assert head.wait() == b"l" * 18


def test_on_separate_links_a_download_does_not_give_way(store: BlobStore) -> None:
    probe = LinkProbe()
    probe.shared = False
    earlier, later = begin(store, b"e" * 100), begin(store, b"l" * 100)
    done = threading.Event()
    with Downloads(workers=2, probe=probe) as downloads:
        downloads.start("e", earlier, lambda: done.wait(10))  # starved: nothing came
        downloads.start("l", later, lambda: done.wait(10))
        # As its download would.
        wrote = Background(lambda: later.write_span(later.first, b"l" * 100))
        try:
            assert wrote.done.wait(5)
        finally:
            done.set()


class Trickle(io.RawIOBase):
    """A response body that comes 64 KiB at a time, a little late each time."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        time.sleep(0.002)
        return self._data.read(min(size, 64 << 10) if size > 0 else 64 << 10)


@pytest.mark.parametrize("shared", [True, False])
def test_a_layer_in_stripes_read_first_gets_connections_before_later_whole_ones(
    store: BlobStore, shared: bool
) -> None:
    """A large layer the build reads first comes in stripes, four small ones after it
    whole, three connections: the threads running the small ones neither give way to
    it (waiting would not bring it: on a shared link, they would all wait for ever)
    nor take them before its stripes are all claimed."""
    blobs = [
        hashlib.shake_256(b"%d" % n).digest(size)
        for n, size in enumerate([16 << 20] + [1 << 20] * 4)
    ]
    probe = LinkProbe()
    probe.shared = shared
    with Downloads(workers=3, probe=probe) as downloads:
        arrivals = []
        for data in blobs:
            arrival = begin(store, data)
            arrival.splittable = lambda: True  # as a registry answering ranges
            arrival.span_source = functools.partial(
                lambda arrival, data, span: store.fill(
                    arrival, arrival.digest, Trickle(data[span.start : span.end]), span=span
                ),
                arrival,
                data,
            )
            work = functools.partial(
                lambda arrival, data: store.fill(arrival, arrival.digest, Trickle(data)),
                arrival,
                data,
            )
            downloads.start(arrival.digest, arrival, work)
            arrivals.append(arrival)
        downloads.started_all()
        head = Background(lambda: arrivals[0].head(18))
        assert head.wait() == blobs[0][:18]
        downloads.finish()
    assert [
        store.path(a.digest).read_bytes() == data for a, data in zip(arrivals, blobs, strict=True)
    ] == [True] * 5


@pytest.mark.parametrize("ranges", [True, False])
def test_with_keep_going_a_blob_under_way_when_another_fails_is_still_cached(
    store: BlobStore, ranges: bool
) -> None:
    """A pull caches what it can: a blob whose connection had begun (here, asking the
    registry whether it answers range requests) when another blob failed is still
    fetched to its end (whole or in stripes) and cached; one not begun is not."""
    large = hashlib.shake_256(b"large").digest(STRIPE_LEAST + 12345)
    asking, failed = threading.Event(), threading.Event()

    def splittable() -> bool:
        asking.set()
        failed.wait(10)  # the answer comes after the other blob failed
        return ranges

    def fail() -> None:
        asking.wait(10)
        failed.set()
        raise Oci2vmError("blob b: digest mismatch")

    with Downloads(workers=2, keep_going=True) as downloads:
        first, second, third = begin(store, large), begin(store), begin(store, b"3" * 10)
        first.splittable = splittable
        first.span_source = lambda span: store.fill(
            first, first.digest, io.BytesIO(large[span.start : span.end]), span=span
        )
        downloads.start("b", second, fail)
        downloads.start("a", first, lambda: store.fill(first, first.digest, io.BytesIO(large)))
        downloads.start("c", third, lambda: None)  # queued behind the two: never begun
        downloads.started_all()
        with pytest.raises(Oci2vmError, match=r"^blob b: digest mismatch$"):
            downloads.finish()
    assert failed.is_set()
    assert store.path(first.digest).read_bytes() == large
    assert files_in(store) == [first.digest.split(":")[1]]
