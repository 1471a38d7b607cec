"""Mutation fuzzing of the tar reader and of layer decompression: every damaged archive is
read to its end or refused with Oci2vmError, in bounded time and memory, even when a
header claims gigabytes and the stream (as an inflated layer can) really holds them.
See support/fuzzing.py for the bounds and for how to run many more examples."""

from __future__ import annotations

import gzip
import hashlib
import io

import zstandard
from hypothesis import given
from hypothesis import strategies as st

from oci2vm.layers.decompress import ZSTD_MAGIC, decompressed
from oci2vm.layers.tarstream import TarReader
from support.fuzzing import bounded_memory, fuzz_settings, outcome
from support.mutations import Seeds, mutated, tar_seeds
from support.tarbytes import Tail

SEEDS = tar_seeds()
TAILS = st.sampled_from([0, 1 << 20, 4 << 30])  # what follows the archive: up to 4 GiB
PATTERNS = st.sampled_from([b"\0", b"1\n", b"7", b"a=b\n", b"\xff"])


def read_everything(tar: TarReader, take: int) -> None:
    """Iterate every member, reading up to `take` bytes of each one's data."""
    for member in tar:
        assert member.stored >= 0 and member.size >= 0
        left = min(take, member.stored)
        while left > 0 and (piece := tar.view(left)):
            left -= len(piece)


def test_the_tar_reader_reads_or_refuses_every_mutated_archive() -> None:
    @fuzz_settings(200)
    @given(
        archive=mutated(SEEDS, tar=True),
        tail=TAILS,
        pattern=PATTERNS,
        take=st.sampled_from([0, 1, 4096]),
    )
    def check(archive: bytes, tail: int, pattern: bytes, take: int) -> None:
        source = Tail(archive, tail, pattern)
        outcome(lambda: read_everything(TarReader(source, "layer 1"), take))

    with bounded_memory():
        check()


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    frame = zstandard.ZstdCompressor(write_checksum=kind == "zstd+checksum").compress(data)
    if kind == "skippable+zstd":  # metadata first, as some tools write, then two frames
        half = len(data) // 2
        head = zstandard.ZstdCompressor().compress(data[:half])
        frame = SKIPPABLE + head + zstandard.ZstdCompressor().compress(data[half:])
    return frame


SKIPPABLE = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
KINDS = ("gzip", "zstd", "zstd+checksum", "skippable+zstd")


def zstd_oracle(blob: bytes) -> bytes | None:
    """What `zstd -dc` makes of a blob: frame after frame, skippable ones passed over;
    None when it is corrupt or ends inside a frame."""
    out = []
    try:
        while blob:
            frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(frame.decompress(blob))
            if not frame.eof:
                return None
            blob = frame.unused_data
    except zstandard.ZstdError:
        return None
    return b"".join(out)


def inflate(blob: bytes, diff_id: str) -> bytes:
    stream = decompressed(io.BytesIO(blob), "", "layer 1", diff_id)
    try:
        data = stream.read()
        stream.finish()
    finally:
        stream.abort()
    return data


def test_decompression_inflates_what_zstd_does_and_refuses_the_rest() -> None:
    compressed = Seeds(_compress(kind, seed) for kind in KINDS for seed in SEEDS)

    @fuzz_settings(100)
    @given(blob=mutated(compressed, tar=False))
    def check(blob: bytes) -> None:
        is_zstd = blob[:4] == ZSTD_MAGIC or blob[:4] == SKIPPABLE[:4]
        expected = zstd_oracle(blob) if is_zstd else None
        diff_id = "sha256:" + hashlib.sha256(expected or b"").hexdigest()
        result = outcome(lambda: inflate(blob, diff_id))
        if expected is not None:
            assert result == "ok"
        elif is_zstd:  # whatever is wrong is named, not mistaken for tampering
            assert result != "ok" and "digest mismatch" not in result, result

    with bounded_memory():
        check()
