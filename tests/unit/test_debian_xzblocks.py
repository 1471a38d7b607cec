"""An xz file's blocks inflated in parallel (debian.xzblocks), as a .deb's data.tar.xz
that dpkg-deb compressed with threads: the same bytes as the sequential decoder, the
sequential decoder for whatever is not the plain case (one block, padding, several
streams, a damaged index), and a damaged block a one-line error. Multi-block files are
made by xz(1) itself (xz-utils, essential in Debian)."""

from __future__ import annotations

import functools
import io
import lzma
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oci2vm.debian import xzblocks
from oci2vm.debian.compression import open_stream
from oci2vm.debian.deb import open_deb
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from support.debarchives import ar_of, compress, tar_of
from support.programs import requires

pytestmark = requires("xz")


def xz_blocks(data: bytes, block_size: int, *extra: str) -> bytes:
    """`data` compressed by xz(1) into blocks of `block_size` bytes."""
    done = subprocess.run(["xz", "-c", "-3", f"--block-size={block_size}", "-T1", *extra],
                          input=data, capture_output=True, check=True)  # fmt: skip
    return done.stdout


def sample(size: int, seed: int = 1) -> bytes:
    """Half compressible text, half noise."""
    rng = random.Random(seed)
    text = b"".join(b"line %d of the sample\n" % n for n in range(size // 40 + 1))[: size // 2]
    return text + rng.randbytes(size - len(text))


def inflated(xz: bytes, *, size: bool = True) -> bytes:
    stream = open_stream(io.BytesIO(xz), "xz", "the stream", size=len(xz) if size else None)
    try:
        out = bytearray()
        while piece := stream.view(1 << 20):
            out += piece
        stream.finish()
        return bytes(out)
    finally:
        stream.abort()


def test_blocks_are_found_from_the_index() -> None:
    data = sample(300_000)
    xz = xz_blocks(data, 64 << 10)
    found = xzblocks.plan(io.BytesIO(xz), len(xz))
    assert found is not None
    header, blocks = found
    assert header == xz[:12]
    assert [b.size for b in blocks] == [65536] * 4 + [300_000 - 4 * 65536]
    assert blocks[0].offset == 12 and all(b.offset % 4 == 0 for b in blocks)
    assert inflated(xz) == data == lzma.decompress(xz)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_any_number_of_workers_gives_the_blocks_in_order(workers: int) -> None:
    data = sample(1 << 20, seed=workers)
    xz = xz_blocks(data, 40_000)
    header, blocks = xzblocks.plan(io.BytesIO(xz), len(xz)) or (b"", [])
    assert len(blocks) == 27
    out = b"".join(xzblocks.inflate(io.BytesIO(xz), header, blocks, "x", workers))
    assert out == data


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("one block", lzma.compress),
        ("padding after the stream", lambda d: xz_blocks(d, 50_000) + bytes(8)),
        ("two streams", lambda d: xz_blocks(d[:90_000], 50_000) + xz_blocks(d[90_000:], 50_000)),
        ("blocks over MAX_BLOCK", lambda d: xz_blocks(d, 200_000)),
        ("sha256 checks", lambda d: xz_blocks(d, 50_000, "--check=sha256")),
    ],
)  # fmt: skip
def test_what_is_not_the_plain_case_is_read_in_sequence(
    case: str, make: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xzblocks, "MAX_BLOCK", 100_000)
    data = sample(200_000)
    xz = make(data)  # type: ignore[operator]
    parallel = xzblocks.plan(io.BytesIO(xz), len(xz)) is not None
    assert parallel is (case == "sha256 checks"), case
    assert inflated(xz) == data


def test_a_damaged_block_is_a_one_line_error() -> None:
    data = sample(200_000)
    xz = bytearray(xz_blocks(data, 50_000))
    _header, blocks = xzblocks.plan(io.BytesIO(bytes(xz)), len(xz)) or (b"", [])
    xz[blocks[2].offset + 40] ^= 0x55
    with pytest.raises(Oci2vmError, match=r"^the stream: corrupt xz stream"):
        inflated(bytes(xz))


@settings(max_examples=150, deadline=None)
@given(at=st.integers(0, 10**6), flip=st.integers(1, 255), cut=st.booleans())
def test_a_damaged_file_gives_what_the_sequential_decoder_gives_or_an_error(
    at: int, flip: int, cut: bool
) -> None:
    """Whatever byte is changed (or where the file is cut), the parallel reading gives
    the sequential decoder's bytes or a one-line error, never other bytes."""
    xz = bytearray(xz_sample())
    at %= len(xz)
    if cut:
        del xz[at:]
    else:
        xz[at] ^= flip
    try:
        sequential: bytes | None = inflated(bytes(xz), size=False)
    except Oci2vmError:
        sequential = None
    try:
        parallel = inflated(bytes(xz))
    except Oci2vmError:
        return
    assert parallel == sequential == DATA_SAMPLE


DATA_SAMPLE = sample(120_000, seed=7)


@functools.cache
def xz_sample() -> bytes:
    return xz_blocks(DATA_SAMPLE, 30_000)


def test_a_packages_data_reads_the_same_through_its_blocks(tmp_path: Path) -> None:
    big = {f"./lib/f{n:02}": bytes([n]) * (1 << 20) + os.urandom(64) for n in range(16)}
    xz = xz_blocks(tar_of(big), 2 << 20, "-0")
    control = compress(tar_of({"./control": b"Package: p\n"}), "xz")
    deb = ar_of([("debian-binary", b"2.0\n"), ("control.tar.xz", control),
                 ("data.tar.xz", xz)])  # fmt: skip
    (tmp_path / "p.deb").write_bytes(deb)
    assert len((xzblocks.plan(io.BytesIO(xz), len(xz)) or (b"", []))[1]) == 9
    with open_deb(BlobRef(tmp_path / "p.deb", 0, len(deb), None)).data() as tar:
        got = {m.name: tar.read_data(m.size) for m in tar if m.isfile()}
    assert got == big


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_at_most_workers_blocks_are_inflated_ahead_of_the_reader(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Each block is held whole once inflated: a slow reader must not let the pool run
    ahead through the stream, which would hold all of it."""
    data = bytes(range(256)) * (1 << 14)  # 4 MiB
    xz = xz_blocks(data, 1 << 17, "-0")
    header, blocks = xzblocks.plan(io.BytesIO(xz), len(xz)) or (b"", [])
    assert len(blocks) == 32
    started: list[int] = []
    inflate_one = xzblocks._inflate_one

    def counted(stream: bytes, what: str) -> bytes:
        started.append(1)
        return inflate_one(stream, what)

    monkeypatch.setattr(xzblocks, "_inflate_one", counted)
    out, ahead = bytearray(), 0
    for piece in xzblocks.inflate(io.BytesIO(xz), header, blocks, "x", workers):
        time.sleep(0.002)  # a reader slower than the pool
        out += piece
        ahead = max(ahead, len(started) - len(out) // (1 << 17))
    assert out == data
    assert ahead <= workers
