"""A blob fetched in parts by several connections (image/arrival.py: Span, split): parts
land in any order, readers get the bytes in order and the end only once verified, the
hash follows the bytes in order whatever order they land in, a split stops the part it
cuts at its new end, and other bytes anywhere fail the commit."""

from __future__ import annotations

import hashlib
import io
import types

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.arrival import SPLIT_ALIGN, Arrival
from oci2vm.image.blobs import BlobRef, BlobStore
from support.background import SETTLE, Background, CountingHash, files_in

DATA = hashlib.shake_256(b"oci2vm spans").digest(4 * SPLIT_ALIGN + 12345)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
PIECE = 256 << 10


def begin(store: BlobStore) -> Arrival:
    """A blob whose first connection has started (it fetches the whole blob)."""
    arrival = store.begin(DIGEST, len(DATA), "blob x")
    arrival.restart(arrival.first)
    return arrival


def test_only_a_blob_being_fetched_has_parts_to_give(store: BlobStore) -> None:
    arrival = store.begin(DIGEST, len(DATA), "blob x")
    assert not arrival.has_part(SPLIT_ALIGN) and arrival.split(SPLIT_ALIGN) is None
    assert not arrival.busy
    arrival.restart(arrival.first)
    assert arrival.has_part(SPLIT_ALIGN) and arrival.busy


def fill_span(arrival: Arrival, store: BlobStore, start: int, end: int, data: bytes = DATA) -> None:
    """What a connection fetching a part does (sources/registry.py fetch_span)."""
    span = next(s for s in arrival._spans if s.start == start)
    assert span.end == end
    store.fill(arrival, DIGEST, io.BytesIO(data[start:end]), span=span)


def test_parts_that_land_out_of_order_are_read_in_order_and_verified(store: BlobStore) -> None:
    arrival = begin(store)
    part = arrival.split(SPLIT_ALIGN)
    assert part is not None
    # Split at a multiple of SPLIT_ALIGN, half-way through what was left.
    assert (part.start, part.end) == (2 * SPLIT_ALIGN, len(DATA))
    assert (arrival.first.start, arrival.first.end) == (0, 2 * SPLIT_ALIGN)
    ref = BlobRef(arrival.final, 0, len(DATA), DIGEST, cached=True, arrival=arrival)
    reading = Background(ref.read_all)
    fill_span(arrival, store, part.start, part.end)  # the second part first
    assert arrival.received == len(DATA) - 2 * SPLIT_ALIGN
    assert not reading.done.wait(SETTLE), reading.error  # nothing from the start yet
    assert not arrival.committed and arrival.busy
    fill_span(arrival, store, 0, 2 * SPLIT_ALIGN)  # the last part: it commits
    assert arrival.committed and not arrival.busy
    assert reading.wait() == DATA
    assert store.path(DIGEST).read_bytes() == DATA
    assert arrival.received == len(DATA)


def test_a_split_stops_the_part_it_cuts_at_its_new_end(store: BlobStore) -> None:
    arrival = begin(store)
    head = arrival.first
    assert arrival.write_span(head, DATA[:PIECE])
    part = arrival.split(SPLIT_ALIGN)
    assert part is not None and head.end == part.start
    # A piece that crosses the new end: only the bytes before it are written.
    at = part.start - PIECE // 2
    arrival.write_span(head, DATA[PIECE:at])
    assert not arrival.write_span(head, DATA[at : at + PIECE])
    assert head.at == head.end
    assert not arrival.end_span(head)  # the other part is still on its way
    fill_span(arrival, store, part.start, part.end)
    assert arrival.committed
    assert store.path(DIGEST).read_bytes() == DATA


def test_nothing_to_split_in_a_part_that_is_nearly_done(store: BlobStore) -> None:
    arrival = begin(store)
    assert arrival.has_part(SPLIT_ALIGN)
    arrival.write_span(arrival.first, DATA[: len(DATA) - SPLIT_ALIGN])
    assert not arrival.has_part(SPLIT_ALIGN)
    assert arrival.split(SPLIT_ALIGN) is None


def test_other_bytes_in_a_later_part_fail_the_commit(store: BlobStore) -> None:
    arrival = begin(store)
    part = arrival.split(SPLIT_ALIGN)
    assert part is not None
    lie = bytearray(DATA)
    lie[part.start + 10] ^= 1
    fill_span(arrival, store, part.start, part.end, bytes(lie))
    got = "sha256:" + hashlib.sha256(lie).hexdigest()
    with pytest.raises(Oci2vmError) as e:
        fill_span(arrival, store, 0, part.start)
    assert str(e.value) == f"blob x: digest mismatch: expected {DIGEST}, got {got}"
    arrival.fail(e.value)
    assert files_in(store) == []


def test_a_part_written_again_with_other_bytes_is_hashed_again(store: BlobStore) -> None:
    """A first attempt at the head wrote other bytes (hashed as they came), a retry the
    right ones: the hash starts again; a later part written twice, the first time with
    other bytes before the head reached it, is hashed once, as it is in the end."""
    arrival = begin(store)
    part = arrival.split(SPLIT_ALIGN)
    assert part is not None
    arrival.write_span(arrival.first, bytes(PIECE))  # broken off, zeros
    arrival.restart(arrival.first)
    arrival.write_span(part, bytes(PIECE))  # broken off too
    fill_span(arrival, store, part.start, part.end)
    fill_span(arrival, store, 0, part.start)
    assert arrival.committed
    assert store.path(DIGEST).read_bytes() == DATA
    assert arrival.received == len(DATA)


def test_a_retry_with_other_bytes_hashes_each_byte_once_more_at_most(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first attempt wrote 3 MiB of other bytes (hashed as they came); the retry's
    every piece differs from them: the hash starts again once, not at every piece."""
    updates: list[int] = []
    counting = types.SimpleNamespace(new=lambda name: CountingHash(updates))
    monkeypatch.setattr("oci2vm.image.arrival.hashlib", counting)
    arrival = begin(store)
    arrival.write_span(arrival.first, bytes(3 * SPLIT_ALIGN))
    store.fill(arrival, DIGEST, io.BytesIO(DATA))
    assert arrival.committed
    assert sum(updates) <= 3 * SPLIT_ALIGN + len(DATA) + SPLIT_ALIGN


def test_stripes_are_claimed_in_order_and_commit_once_all_landed(store: BlobStore) -> None:
    arrival = store.begin(DIGEST, len(DATA), "blob x")
    spans = []
    while (span := arrival.claim(SPLIT_ALIGN + 1)) is not None:
        spans.append(span)
        assert arrival.busy  # bytes wait for a connection, or a connection fetches them
    assert [(s.start, s.end) for s in spans] == [
        (n * (SPLIT_ALIGN + 1), min(len(DATA), (n + 1) * (SPLIT_ALIGN + 1)))
        for n in range(len(spans))
    ]
    assert arrival.unclaimed == 0 and spans[-1].end == len(DATA)
    ref = BlobRef(arrival.final, 0, len(DATA), DIGEST, cached=True, arrival=arrival)
    reading = Background(ref.read_all)
    for span in reversed(spans):  # they land last first
        assert not arrival.committed
        store.fill(arrival, DIGEST, io.BytesIO(DATA[span.start : span.end]), span=span)
    assert arrival.committed and not arrival.busy
    assert reading.wait() == DATA


def test_a_stripe_done_before_the_next_is_claimed_leaves_the_blob_busy(store: BlobStore) -> None:
    arrival = store.begin(DIGEST, len(DATA), "blob x")
    span = arrival.claim(SPLIT_ALIGN)
    assert span is not None
    store.fill(arrival, DIGEST, io.BytesIO(DATA[:SPLIT_ALIGN]), span=span)
    assert arrival.busy and not arrival.committed  # (Downloads fails a blob not busy)
    assert arrival.unclaimed == len(DATA) - SPLIT_ALIGN


def test_a_blob_fetched_whole_has_no_stripe_to_give(store: BlobStore) -> None:
    arrival = begin(store)
    assert arrival.claim(SPLIT_ALIGN) is None and arrival.unclaimed == 0
