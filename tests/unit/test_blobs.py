"""The verifying blob reader: every byte hashed once, whichever way it is read; a short
or altered blob is an error at its end."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image import blobs as blobs_module
from oci2vm.image.blobs import (
    SCRATCH_KINDS,
    STALE_AFTER,
    THREADED_HASH,
    BlobRef,
    BlobStore,
    VerifyingReader,
    check_digest,
    uncompressed_size_hint,
)
from support.deadline import within

DATA = bytes(range(256)) * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _reader(
    data: bytes = DATA, size: int | None = len(DATA), digest: str = DIGEST
) -> VerifyingReader:
    return VerifyingReader(io.BytesIO(data), size, digest, what="blob x")


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(Oci2vmError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_read_readinto_and_readall_see_the_same_bytes() -> None:
    assert _reader().read() == DATA
    r = _reader()
    got = bytearray()
    buffer = bytearray(7777)
    while n := r.readinto(buffer):
        got += buffer[:n]
        got += r.read(1000) + r.read(0)
    assert bytes(got) == DATA and r.total == len(DATA)


def test_a_short_blob_is_truncated() -> None:
    r = _reader(DATA[:-10])
    with pytest.raises(Oci2vmError, match="blob x: truncated: 10 bytes missing"):
        while r.read(4096):
            pass


def test_an_altered_blob_fails_its_digest_at_the_end() -> None:
    altered = bytearray(DATA)
    altered[1000] ^= 1
    r = _reader(bytes(altered))
    assert len(r.read(len(DATA) - 1)) == len(DATA) - 1  # nothing said before the end
    with pytest.raises(Oci2vmError, match="blob x: digest mismatch"):
        r.read(4096)
        r.read(4096)


def test_a_large_blob_is_hashed_in_its_own_thread_and_still_verified() -> None:
    big = bytes(range(256)) * (3 * THREADED_HASH // 256 + 7)
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    r = _reader(big, len(big), digest)
    assert r._hasher is not None
    got, buffer = bytearray(), bytearray(65536)  # one buffer, reused: each piece is copied
    while n := r.readinto(buffer):
        got += buffer[:n]
    assert bytes(got) == big and r.computed_digest == digest
    altered = bytearray(big)
    altered[-5] ^= 1
    r = _reader(bytes(altered), len(big), digest)
    with pytest.raises(Oci2vmError, match="blob x: digest mismatch"):
        while r.readinto(buffer):
            pass
    r = _reader(big, len(big), digest)
    r.read(100)
    r.abort()  # gives up: its hashing thread ends without the rest


# --- blobs on disk: what is not a readable regular file is a one-line error ----------------


def _ref(path: Path, data: bytes = DATA) -> BlobRef:
    return BlobRef(path, 0, len(data), DIGEST)


def test_a_fifo_as_a_blob_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "blob"
    os.mkfifo(fifo)
    with within(5):
        for read in (lambda: _ref(fifo).open(), _ref(fifo).compute_digest):
            assert _error(read) == f"{fifo}: is a FIFO, not a regular file"
        assert _error(lambda: uncompressed_size_hint(_ref(fifo))) == (
            f"{fifo}: is a FIFO, not a regular file"
        )


def test_a_directory_as_a_blob_is_refused(tmp_path: Path) -> None:
    assert (
        _error(lambda: _ref(tmp_path).open()) == f"{tmp_path}: is a directory, not a regular file"
    )


def test_an_unreadable_blob_and_a_symlink_loop_are_one_line_errors(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert _error(lambda: _ref(loop).open()) == (
        f"cannot read {loop}: Too many levels of symbolic links"
    )
    if os.geteuid() != 0:  # root reads whatever the mode says
        locked = tmp_path / "locked"
        locked.write_bytes(DATA)
        locked.chmod(0)
        assert _error(lambda: _ref(locked).open()) == f"cannot read {locked}: Permission denied"


# --- the cache ------------------------------------------------------------------------------


def test_a_blob_swapped_in_the_cache_fails_its_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "cache")
    stored = store.put_bytes(DIGEST, DATA)
    altered = bytearray(DATA)
    altered[5] ^= 1
    stored.path.write_bytes(altered)
    cached = store.get(DIGEST)
    assert cached is not None
    message = _error(lambda: cached.open().read())
    assert message.startswith(f"{stored.path}: digest mismatch: expected {DIGEST}, got sha256:")
    assert message.endswith(": the cache entry changed after it was stored: delete it and retry")
    assert _error(cached.compute_digest).startswith(f"{stored.path}: digest mismatch")


def test_a_cache_dir_that_is_a_file_or_uncreatable_is_a_one_line_error(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    assert _error(lambda: BlobStore(a_file).put_bytes(DIGEST, DATA)) == (
        f"cannot use {a_file} as the blob cache: it is not a directory: pass --cache-dir DIR"
    )
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert _error(lambda: BlobStore(locked / "cache").put_bytes(DIGEST, DATA)) == (
            f"cannot use {locked / 'cache'} as the blob cache: Permission denied: "
            "pass --cache-dir DIR"
        )


def test_the_default_cache_without_a_home_falls_back_to_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nonexistent"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None  # gettempdir() caches its answer
    try:
        root = BlobStore.default_root()
    finally:
        tempfile.tempdir = None
    assert root == tmp_path / "tmp" / f"oci2vm-cache-{os.geteuid()}"
    assert root.is_dir() and (root.stat().st_mode & 0o777) == 0o700
    BlobStore(root).put_bytes(DIGEST, DATA)


def test_a_fallback_cache_owned_or_writable_by_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nonexistent"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    planted = tmp_path / f"oci2vm-cache-{os.geteuid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    tempfile.tempdir = None
    try:
        message = _error(BlobStore.default_root)
    finally:
        tempfile.tempdir = None
    assert message == (
        f"cannot use {planted} as the blob cache: others may write to it: "
        "set XDG_CACHE_HOME or pass --cache-dir DIR"
    )


# --- the uncompressed size hint ----------------------------------------------------------


def _gzip_with_trailer(tmp_path: Path, body_size: int, isize: int) -> BlobRef:
    """A blob that starts as gzip, `body_size` bytes long, whose trailer says `isize`."""
    path = tmp_path / "layer.gz"
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00" + bytes(6))
        f.truncate(body_size - 8)
        f.seek(body_size - 8)
        f.write(bytes(4) + isize.to_bytes(4, "little"))
    return BlobRef(path, 0, body_size, None)


def test_the_gzip_size_hint_is_the_least_size_its_trailer_allows(tmp_path: Path) -> None:
    mib = 1 << 20
    # The trailer holds the size mod 4 GiB: 6 GiB of data compressed to 3 GiB says 2 GiB.
    assert uncompressed_size_hint(_gzip_with_trailer(tmp_path, 3 << 30, 2 << 30)) == 6 << 30
    assert uncompressed_size_hint(_gzip_with_trailer(tmp_path, 10 * mib, 40 * mib)) == 40 * mib
    # Data that does not compress comes out a little larger as gzip (stored blocks): its
    # size is not 4 GiB more than the trailer says.
    stored = 100 * mib + 100 * mib // 65535 * 5 + 18
    assert uncompressed_size_hint(_gzip_with_trailer(tmp_path, stored, 100 * mib)) == 100 * mib


def test_temporary_files_a_killed_process_left_are_removed_a_day_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download's part and a decompressed archive stay behind a SIGKILL: the next run
    removes those untouched for STALE_AFTER, and leaves fresh ones (another process's)."""
    store = BlobStore(tmp_path / "cache")
    blobs = tmp_path / "cache/blobs/sha256"
    scratch = tmp_path / "cache/tmp"
    blobs.mkdir(parents=True)
    names = [blobs / ".tmp-a1", *(store.scratch_tar(kind) for kind in SCRATCH_KINDS)]
    assert all(p.parent == scratch for p in names[1:])
    monkeypatch.setattr(blobs_module, "_SWEPT", set())  # the next process's first sweep
    old = time.time() - STALE_AFTER - 60
    for path in names:
        path.write_bytes(b"part")
        os.utime(path, (old, old))
    fresh = blobs / ".tmp-b2"
    fresh.write_bytes(b"in use")
    kept = scratch / "notes.txt"  # not one of ours
    kept.write_bytes(b"x")
    os.utime(kept, (old, old))
    data = b"blob"
    store.put("sha256:" + hashlib.sha256(data).hexdigest(), io.BytesIO(data), len(data))
    store.scratch_dir()
    assert not any(p.exists() for p in names)
    assert fresh.exists() and kept.exists()


@pytest.mark.parametrize(
    ("digest", "why"),
    [
        ("sha256:" + "A" * 64, "uppercase hex"),
        ("md5:" + "a" * 32, "algorithm 'md5': only sha256 and sha512"),
        ("sha256:abc", "sha256 takes 64 hex digits"),
        ("abc", "ALGORITHM:HEX expected"),
    ],
)
def test_a_malformed_digest_says_what_is_wrong(digest: str, why: str) -> None:
    with pytest.raises(Oci2vmError, match=rf"^malformed digest: '{digest}' \({why}"):
        check_digest(digest)
