"""Blobs: digests, where a blob's bytes live, the content-addressed cache, and layer
decompression.

Every blob is checked against its digest as it is read, cache entries included; a
mismatch raises, never warns. The cache stores each blob under blobs/<algorithm>/<hex>,
written to a temporary file and renamed into place only after its digest matched, so two
builds can share it; an entry changed afterwards fails its digest when next read.
Only regular files are read as blobs: a FIFO or a device would block or never end.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from oci2vm.errors import Oci2vmError
from oci2vm.image.arrival import Arrival, Span
from oci2vm.layers.decompress import BZIP2_MAGIC, GZIP_MAGIC, XZ_MAGIC, ZSTD_MAGIC
from oci2vm.util.atomic import replace_whole
from oci2vm.util.hashing import THREADED_HASH, HashThread

CHUNK = 1 << 20
log = logging.getLogger(__name__)
_DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


class TruncatedError(Oci2vmError):
    """A blob's bytes ended before its size: a download may try again (a digest mismatch
    is not one of these: the same bytes would come again)."""


# Called with a number of bytes just read; drives progress bars.
ProgressFn = Callable[[int], None]


def check_digest(digest: str, what: str = "digest") -> str:
    """Return digest if it is a well-formed sha256/sha512 digest, else raise."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise Oci2vmError(f"malformed {what}: {digest!r}{_digest_fault(digest)}")
    return digest


def _digest_fault(digest: object) -> str:
    """Why a digest is not one oci2vm checks, as a suffix of the message."""
    if not isinstance(digest, str):
        return " (not a string)"
    algorithm, colon, encoded = digest.partition(":")
    if not colon:
        return " (ALGORITHM:HEX expected)"
    length = {"sha256": 64, "sha512": 128}.get(algorithm)
    if length is None:
        return f" (algorithm {algorithm!r}: only sha256 and sha512 are registered)"
    if encoded != encoded.lower():
        return " (uppercase hex: the OCI spec allows lowercase only)"
    return f" ({algorithm} takes {length} hex digits)"


def new_hash(digest: str) -> hashlib._Hash:
    algorithm = check_digest(digest).split(":", 1)[0]
    return hashlib.new(algorithm)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str) -> str:
    """`data`'s digest by `algorithm` (sha256, sha512), as a digest string."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def regular_file_size(path: Path, what: str = "") -> int:
    """The size of `path` (symlinks followed) if it is a regular file; otherwise, or when
    it cannot be examined, a one-line Oci2vmError. `what` names it in messages."""
    try:
        st = path.stat()
    except OSError as e:
        raise Oci2vmError(f"cannot read {what or path}: {e.strerror or e}") from None
    _check_regular(path, st.st_mode, what)
    return st.st_size


def _check_regular(path: Path, mode: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a file")
        raise Oci2vmError(f"{what or path}: is {kind}, not a regular file")


def open_regular(path: Path, what: str = "") -> BinaryIO:
    """Open `path` for reading if it is a regular file (symlinks followed); a FIFO, a
    device, a directory or an unreadable file is a one-line Oci2vmError, never a wait."""
    regular_file_size(path, what)
    try:
        # O_NONBLOCK: a FIFO swapped in after the check must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise Oci2vmError(f"cannot read {what or path}: {e.strerror or e}") from None
    try:
        _check_regular(path, os.fstat(fd).st_mode, what)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def short(digest: str) -> str:
    """sha256:abcdef0123456789... -> abcdef012345 (for messages)."""
    return digest.split(":", 1)[-1][:12]


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where a blob's bytes are: `size` bytes of file `path` from `offset` (a blob in an
    OCI layout, a member of a tar archive, or a cache entry).

    `digest` is what the bytes must hash to; None for a rootfs tarball, which comes with
    no digest (its digest is computed while it is read). `cached` marks cache entries:
    they are verified like any blob, and a mismatch says the cache entry was changed.
    `arrival`, for a cache entry still downloading, is where its bytes are read from as
    they land (until it is complete, `path` does not exist yet). `ready`, for a member of
    a compressed archive known from an earlier run's index, writes `path` (the archive
    decompressed) the first time any such blob is read.
    """

    path: Path
    offset: int
    size: int
    digest: str | None
    cached: bool = False
    arrival: Arrival | None = None
    ready: Callable[[], None] | None = None

    def open(self, progress: ProgressFn | None = None) -> VerifyingReader:
        """A reader of the blob's bytes that verifies the digest when it reaches the end."""
        if self.ready is not None:
            self.ready()
        if self.arrival is not None and self.digest is not None:
            # Not a cache entry yet: the registry's bytes, which its download hashes as
            # they land; the reader proves at its end that it read those (Arrival.prove).
            arriving = self.arrival.open()
            arriving.seek(self.offset)
            return VerifyingReader(
                cast(BinaryIO, arriving),  # read(), readinto(), close(): all used
                self.size,
                self.digest,
                progress,
                what=self.arrival.what,
                proof=arriving.prove,
            )
        f = open_regular(self.path)
        try:
            f.seek(self.offset)
        except OSError:
            f.close()
            raise
        remedy = CACHE_REMEDY if self.cached else ""
        return VerifyingReader(
            f, self.size, self.digest, progress, what=str(self.path), remedy=remedy
        )

    def compute_digest(self) -> str:
        """Read the whole blob and return its sha256 digest (verified if one is known)."""
        reader = self.open()
        try:
            reader.drain()
        finally:
            reader.abort()
        return self.digest if self.digest else reader.computed_digest

    def read_all(self, limit: int = 16 << 20) -> bytes:
        """Read a small blob (manifest, config) whole, verified."""
        if self.size > limit:
            raise Oci2vmError(f"{self.path}: blob of {self.size} bytes is too large here")
        with self.open() as r:
            return r.read()


CACHE_REMEDY = "the cache entry changed after it was stored: delete it and retry"


class VerifyingReader(io.RawIOBase):
    """Reads exactly `size` bytes from `raw` and checks their digest at the end.

    A short read (truncated file) or a digest mismatch raises Oci2vmError. close()
    drains what was not read yet, so the digest is checked even when the consumer stops
    early (a tar reader stops at the end-of-archive blocks), then closes `raw`.

    With `proof`, the bytes are not hashed here: their source hashed them (the download
    of a blob still arriving), and proof(digest) raises at the end unless what was read
    is what that verified.
    """

    def __init__(
        self,
        raw: BinaryIO,
        size: int | None,
        digest: str | None,
        progress: ProgressFn | None = None,
        *,
        what: str = "blob",
        remedy: str = "",
        proof: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._remedy = f": {remedy}" if remedy else ""
        self._left = size
        self._digest = digest
        self._hash = hashlib.sha256() if digest is None else new_hash(digest)
        self._proof = proof if digest is not None else None
        # A layer's bytes are hashed beside the thread reading them (util/hashing.py).
        self._hasher: HashThread | None = None
        if self._proof is None and size is not None and size >= THREADED_HASH:
            self._hasher = HashThread(self._hash, "blob-hash")
        self._progress = progress
        self._what = what
        self._done = False
        self.total = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes, read straight into a new bytes object (RawIOBase's read()
        would read into a bytearray and copy it: a second copy of every layer byte)."""
        if size < 0:
            return self.readall()
        if size == 0:
            return b""
        want = size if self._left is None else min(size, self._left)
        data: bytes = self._raw.read(want) if want else b""
        self._took(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = len(buffer)
        if not want:
            return 0
        if self._left is not None:
            want = min(want, self._left)
        view = memoryview(buffer)[:want]
        n = self._raw.readinto(view) if want else 0  # type: ignore[attr-defined]
        self._took(view[:n])
        return int(n)

    def _took(self, data: bytes | memoryview) -> None:
        """Account for bytes just read: hash them; at the end, check the size and digest."""
        if not data:
            if self._left:
                raise TruncatedError(
                    f"{self._what}: truncated: {self._left} bytes missing at the end" + self._remedy
                )
            self._finish()
            return
        n = len(data)
        if self._hasher is not None:
            self._hasher.feed(bytes(data) if isinstance(data, memoryview) else data)
        elif self._proof is None:
            self._hash.update(data)
        self.total += n
        if self._left is not None:
            self._left -= n
        if self._progress is not None:
            self._progress(n)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._proof is not None and self._digest is not None:
            self._proof(self._digest)
        elif self._digest is not None:
            algorithm = self._digest.split(":", 1)[0]
            got = f"{algorithm}:{self._hexdigest()}"
            if got != self._digest:
                raise Oci2vmError(
                    f"{self._what}: digest mismatch: expected {self._digest}, got {got}"
                    + self._remedy
                )

    def _hexdigest(self) -> str:
        return self._hash.hexdigest() if self._hasher is None else self._hasher.hexdigest()

    @property
    def computed_digest(self) -> str:
        """The digest of what was read so far (all of it, once at the end)."""
        return "sha256:" + self._hexdigest() if self._digest is None else self._digest

    def drain(self) -> None:
        """Read to the end (verifying the digest): by read(), whose pieces a hashing thread
        takes as they are (readinto() into one reused buffer would need a copy of each)."""
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._done:
                self.drain()
        finally:
            self.abort()

    def interrupt(self) -> None:
        """From another thread: stop a read that waits for a blob still downloading."""
        interrupt = getattr(self._raw, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def abort(self) -> None:
        """Close without reading the rest (after an error)."""
        self._done = True
        if self._hasher is not None:
            self._hasher.stop()
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


class BlobStore:
    """The content-addressed cache: <root>/blobs/<algorithm>/<hex>."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def default_root() -> Path:
        """$XDG_CACHE_HOME/oci2vm, else ~/.cache/oci2vm; for a user without a usable home
        directory (such as nobody), a private directory in the temporary directory."""
        xdg = os.environ.get("XDG_CACHE_HOME")
        if xdg:
            return Path(xdg) / "oci2vm"
        home = _usable_home()
        if home is not None:
            return home / ".cache" / "oci2vm"
        fallback = Path(tempfile.gettempdir()) / f"oci2vm-cache-{os.geteuid()}"
        log.debug("no usable home directory: caching blobs in %s", fallback)
        return private_dir(fallback)

    def path(self, digest: str) -> Path:
        algorithm, hexdigest = check_digest(digest).split(":", 1)
        return self.root / "blobs" / algorithm / hexdigest

    def get(self, digest: str) -> BlobRef | None:
        """The cache entry for `digest`, or None. Entries are verified as they are read."""
        p = self.path(digest)
        try:
            size = regular_file_size(p)
        except Oci2vmError:
            if not os.path.lexists(p):
                return None
            raise
        return BlobRef(p, 0, size, digest, cached=True)

    def _directory(self, directory: Path) -> None:
        """Create `directory` under the cache root, or say why the cache is unusable."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            reason = e.strerror or str(e)
            if isinstance(e, FileExistsError | NotADirectoryError):
                reason = "it is not a directory"
            raise Oci2vmError(
                f"cannot use {self.root} as the blob cache: {reason}: pass --cache-dir DIR"
            ) from None

    def put(
        self,
        digest: str,
        stream: BinaryIO,
        size: int | None = None,
        progress: ProgressFn | None = None,
        what: str = "blob",
    ) -> BlobRef:
        """Copy `stream` into the cache, verifying digest (and size when given).

        The bytes go to a temporary file beside the final name and are renamed into
        place only when they matched, so readers never see a partial blob and two
        writers of the same blob both succeed.
        """
        final = self.path(digest)
        fd, tmp = self._temporary(final)
        try:
            reader = VerifyingReader(stream, size, digest, progress, what=what)
            with os.fdopen(fd, "wb") as out:
                buf = bytearray(CHUNK)
                while n := reader.readinto(buf):
                    out.write(memoryview(buf)[:n])
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return BlobRef(final, 0, final.stat().st_size, digest, cached=True)

    def _temporary(self, final: Path) -> tuple[int, str]:
        """An open temporary file beside `final` (its directory made): (fd, path)."""
        self._directory(final.parent)
        _sweep_stale(final.parent)
        try:
            return tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        except OSError as e:
            raise Oci2vmError(
                f"cannot use {self.root} as the blob cache: {e.strerror or e}: pass --cache-dir DIR"
            ) from None

    def begin(self, digest: str, size: int, what: str = "blob") -> Arrival:
        """A temporary file for a blob about to be downloaded, readable as it is written
        (see fill())."""
        final = self.path(digest)
        fd, tmp = self._temporary(final)
        return Arrival(fd, Path(tmp), final, size, what, digest)

    def fill(
        self,
        arrival: Arrival,
        digest: str,
        stream: BinaryIO,
        progress: ProgressFn | None = None,
        span: Span | None = None,
    ) -> BlobRef:
        """One attempt at `span` of the blob of `arrival` (its first connection's, the
        whole blob until split: Arrival.split): copy `stream` into it from the span's
        start, then, when this was the last span, commit the blob into the cache (which
        verifies its digest). A failed attempt leaves the file for the next one (or for
        Arrival.fail())."""
        if digest != arrival.digest:
            raise ValueError(f"fill() of {arrival.what} with another digest: {digest}")
        span = span or arrival.first
        arrival.restart(span)
        # read(), not readinto(): a response body's read hands over the bytes it got,
        # which readinto() would copy once more.
        while True:
            data = stream.read(CHUNK)
            if not data:
                if span.left > 0:
                    raise TruncatedError(
                        f"{arrival.what}: truncated: {span.left} bytes missing at the end"
                    )
                break
            if progress is not None:
                progress(len(data))
            if not arrival.write_span(span, data):
                break
        if arrival.end_span(span):
            arrival.commit()
        return BlobRef(arrival.final, 0, arrival.size, digest, cached=True)

    def archive_index_dir(self) -> Path:
        """Where what earlier runs read of compressed archives is kept (sources/container)."""
        directory = self.root / "archives"
        self._directory(directory)
        return directory

    def scratch_dir(self) -> Path:
        """A directory in the cache for temporary files of the same size as blobs."""
        directory = self.root / "tmp"
        self._directory(directory)
        _sweep_stale(directory)
        return directory

    def scratch_tar(self, kind: str) -> Path:
        """A fresh name in scratch_dir() for a tar file the caller creates (`kind` is one of
        SCRATCH_KINDS, so that a killed process's file is swept), removed at exit."""
        if kind not in SCRATCH_KINDS:
            raise ValueError(f"unknown scratch kind {kind!r}")
        name = self.scratch_dir() / f"{kind}-{os.getpid()}-{secrets.token_hex(8)}.tar"
        atexit.register(name.unlink, missing_ok=True)
        return name

    def put_bytes(self, digest: str, data: bytes) -> BlobRef:
        return self.put(digest, io.BytesIO(data), len(data))

    # What earlier runs proved about layer blobs: the digest of the uncompressed stream
    # (the diff_id) a blob inflates to. Inflating is a function of the bytes, and the bytes
    # are checked against the blob's digest on every read, so once a blob has been seen
    # to inflate to its diff_id, hashing the whole uncompressed stream again proves
    # nothing new; a config that names another diff_id is still hashed, and refused.

    def _uncompressed_path(self, blob_digest: str) -> Path:
        algorithm, hexdigest = check_digest(blob_digest).split(":", 1)
        return self.root / "uncompressed" / algorithm / hexdigest

    def uncompressed_digest(self, blob_digest: str) -> str | None:
        """The diff_id an earlier run verified for this blob, if any."""
        try:
            text = self._uncompressed_path(blob_digest).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _DIGEST_RE.match(text) else None

    def remember_uncompressed(self, blob_digest: str, diff_id: str) -> None:
        """Record a verified blob → diff_id pair (best effort: a read-only cache is fine)."""
        try:
            replace_whole(self._uncompressed_path(blob_digest), f"{diff_id}\n".encode())
        except OSError as e:
            log.debug("cannot record the diff_id of %s: %s", blob_digest, e)

    # What an earlier pull found a reference to name, for --pull missing and never: the
    # digest of the manifest it chose (the platform's), whose bytes are a blob here too.

    def _reference_path(self, key: str) -> Path:
        return self.root / "references" / hashlib.sha256(key.encode()).hexdigest()

    def pulled_manifest(self, key: str) -> tuple[str, str | None] | None:
        """(digest, media type) of the manifest an earlier pull of `key` chose, if any."""
        try:
            record = json.loads(self._reference_path(key).read_text())
            digest, media_type = record["digest"], record["mediaType"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if record.get("key") != key or not isinstance(digest, str):
            return None
        if not _DIGEST_RE.match(digest) or not isinstance(media_type, str | None):
            return None
        return digest, media_type

    def remember_pull(self, key: str, digest: str, media_type: str | None, data: bytes) -> None:
        """Keep a pulled manifest and what `key` named (best effort, as diff_ids are)."""
        record = {"key": key, "digest": digest, "mediaType": media_type}
        try:
            if self.get(digest) is None:
                self.put_bytes(digest, data)
            replace_whole(self._reference_path(key), json.dumps(record).encode() + b"\n")
        except (OSError, Oci2vmError) as e:
            log.debug("cannot record the pull of %s: %s", key, e)


def _usable_home() -> Path | None:
    """The home directory, if it exists and ~/.cache exists or can be made in it."""
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return None
    if not home.is_dir():
        return None
    if (home / ".cache").is_dir() or os.access(home, os.W_OK | os.X_OK):
        return home
    return None


def private_dir(
    path: Path,
    what: str = "the blob cache",
    fix: str = "set XDG_CACHE_HOME or pass --cache-dir DIR",
) -> Path:
    """`path` as a directory only this user can write to: made so if absent; an existing
    one (in a shared temporary directory, anyone may have made it) must be so already."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError as e:
        raise Oci2vmError(f"cannot use {path} as {what}: {e.strerror}: {fix}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise Oci2vmError(f"cannot use {path} as {what}: it is not a directory: {fix}")
    if st.st_uid != os.geteuid():
        raise Oci2vmError(f"cannot use {path} as {what}: it belongs to another user: {fix}")
    if st.st_mode & 0o022:
        raise Oci2vmError(f"cannot use {path} as {what}: others may write to it: {fix}")
    return path


# Deflate's stored blocks (for data that does not compress) add 5 bytes per 65,535, and
# gzip a header and a trailer: no gzip member is smaller than this share of its blob.
_GZIP_STORED_BLOCK = 65535
_GZIP_STORED_OVERHEAD = 5
_GZIP_FRAMING = 18


def _gzip_least_size(blob_size: int, isize: int) -> int:
    """The least uncompressed size a one-member gzip blob of `blob_size` bytes whose
    trailer says `isize` (the size mod 2**32) can have."""
    payload = max(blob_size - _GZIP_FRAMING, 0)
    floor = payload * _GZIP_STORED_BLOCK // (_GZIP_STORED_BLOCK + _GZIP_STORED_OVERHEAD)
    size = isize
    if size < floor:
        size += (floor - size + (1 << 32) - 1) >> 32 << 32
    return size


def uncompressed_size_hint(blob: BlobRef, media_type: str = "") -> int:
    """An estimate of a layer's uncompressed size, without decompressing it.

    gzip: its trailer holds the size mod 2**32 only, so the estimate is the least size the
    trailer allows for a blob of this size; data over 4 GiB that compresses well more than
    4 GiB's worth is underestimated by multiples of 4 GiB (as is a blob of several gzip
    members, whose trailer counts only the last). zstd: the frame header's content size,
    when it has one; otherwise, and for other blobs, a multiple of the blob's size.
    Used only to size reservations and to reject a --size early: the writer still stops
    with its own size error when the data does not fit."""
    head = _head(blob, 18)
    if head.startswith(GZIP_MAGIC) and blob.size >= _GZIP_FRAMING:
        isize = int.from_bytes(_tail(blob, 4), "little")
        return _gzip_least_size(blob.size, isize)
    if head.startswith(ZSTD_MAGIC):
        import zstandard

        try:
            size = zstandard.frame_content_size(head)
        except zstandard.ZstdError:
            size = -1
        return int(size) if size >= 0 else blob.size * 5
    if head.startswith((XZ_MAGIC, BZIP2_MAGIC)):  # (a rootfs tarball's)
        return blob.size * 5
    return blob.size


def _head(blob: BlobRef, n: int) -> bytes:
    """The first n bytes of a blob (unverified: for estimates only)."""
    if blob.arrival is not None:
        return blob.arrival.head(n)
    if blob.ready is not None:
        blob.ready()
    with open_regular(blob.path) as f:
        f.seek(blob.offset)
        return f.read(n)


def _tail(blob: BlobRef, n: int) -> bytes:
    """The last n bytes of a blob; of one still downloading, perhaps fetched apart (and
    then checked against the blob before it enters the cache)."""
    if blob.arrival is not None:
        return blob.arrival.tail(n)
    if blob.ready is not None:
        blob.ready()
    with open_regular(blob.path) as f:
        f.seek(blob.offset + blob.size - n)
        return f.read(n)


# A temporary file of the cache untouched this long was left by a process that was killed
# (SIGKILL, the OOM killer, a power cut) before it could remove it: a download's part, a
# decompressed archive. As containerd expires ingests; no process writes one that long
# without writing to it, and a copy is read for one build.
STALE_AFTER = 24 * 3600
# What scratch_tar() makes: a compressed archive's decompressed copy (sources/container),
# an image saved by docker or podman (sources/daemon).
SCRATCH_KINDS = ("archive", "daemon")
_STALE_PREFIXES = (".tmp-", *(f"{kind}-" for kind in SCRATCH_KINDS))
_SWEPT: set[Path] = set()


def _sweep_stale(directory: Path) -> None:
    """Remove the stale temporary files (see STALE_AFTER) of `directory`, once per process;
    best effort."""
    if directory in _SWEPT:
        return
    _SWEPT.add(directory)
    cutoff = time.time() - STALE_AFTER
    try:
        with os.scandir(directory) as entries:
            stale = [
                e.path
                for e in entries
                if e.name.startswith(_STALE_PREFIXES)
                and e.is_file(follow_symlinks=False)
                and e.stat(follow_symlinks=False).st_mtime < cutoff
            ]
    except OSError:
        return
    for path in stale:
        with contextlib.suppress(OSError):
            os.unlink(path)
