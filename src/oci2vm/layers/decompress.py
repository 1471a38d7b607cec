"""Layer decompression: gzip (ISA-L), zstd or none, told apart by magic bytes, and run in
a background thread so that reading, hashing and inflating a layer overlap with parsing
and writing its files on the other core (ISA-L, zstd and hashlib release the GIL)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import queue
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

from isal import igzip_lib, isal_zlib

from oci2vm.errors import Oci2vmError
from oci2vm.util.hashing import HashThread

# Pieces of 1 MiB, in and out: every piece is a new bytes object, and glibc's dynamic mmap
# threshold puts pieces this large on the heap once the first is freed, where the holes they
# leave grow with the bytes streamed. 4 MiB pieces made a build's peak RSS twice as large
# (80 -> 105 MB on the Debian fixture; more with larger files) and were no faster.
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"  # then the block size, a digit
# RFC 8878: a zstd stream is frames back to back; skippable frames (magic 0x184D2A50 to
# 0x184D2A5F, then a 4-byte size) carry metadata that decoders pass over.
ZSTD_FRAME = 0xFD2FB528
ZSTD_SKIPPABLE = 0x184D2A50
OUT_CHUNK = 1 << 20  # the largest piece of decompressed output
QUEUE_CHUNKS = 8  # pieces in flight: 8 MiB, which bounds the memory they take
# isal's stubs declare its error as an instance; it is the exception class.
_ISAL_ERROR: type[Exception] = isal_zlib.IsalError  # type: ignore[assignment]


class Blob(Protocol):
    """What is read here: a blob reader (blobs.VerifyingReader, or any file)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def detect_compression(head: bytes, media_type: str = "", *, rootfs: bool = False) -> str:
    """'gzip', 'zstd' or 'none', from the magic bytes; the media type only names
    what it claims (a mismatch is resolved in favour of the bytes). A rootfs tarball
    (tar:) may also be 'xz' or 'bzip2', as docker import and podman import read one
    (debuerreotype's, Gentoo's and Void's root filesystems come as .tar.xz)."""
    other = next((name for magic, name in _OTHER_MAGIC if head.startswith(magic)), None)
    if rootfs and other in ("xz", "bzip2"):
        return other
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or _is_skippable(head):
        return "zstd"
    if len(head) < 4 and head and (GZIP_MAGIC.startswith(head) or ZSTD_MAGIC.startswith(head)):
        # A blob of a few bytes that begin a magic: a compressed stream cut short (no tar
        # is this short), which its decompressor reports as truncated.
        return "gzip" if GZIP_MAGIC.startswith(head) else "zstd"
    if other is not None:
        if rootfs:
            raise Oci2vmError(f"unsupported compression of a root filesystem tarball ({other})")
        raise Oci2vmError(
            f"unsupported layer compression ({other})"
            f"{f' in {media_type}' if media_type else ''}: only gzip, zstd and plain tar"
        )
    return "none"


# The largest window a zstd frame may ask for (zstd --long=29): what the decoder of
# docker, containerd and podman (klauspost/compress) takes by default; libzstd's own
# default is 128 MiB. The decoder holds that much at most.
ZSTD_MAX_WINDOW = 512 << 20

# Compressions no runtime reads in a layer, by the first 4 bytes of their magic (what a
# caller reads first; xz's is 6 bytes, FD '7zXZ' 00). A tar begins with its first member's
# name: only one that begins "BZh" and a digit would be mistaken.
_OTHER_MAGIC = (
    *((BZIP2_MAGIC + bytes([digit]), "bzip2") for digit in b"123456789"),
    (XZ_MAGIC[:4], "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


# What an xz stream may ask of memory to decode: enough for any preset of xz(1) (-9e needs
# 64 MiB); a stream asking more (a hostile header asks any amount) is refused. Debian's
# archive reader (debian/) takes the same.
XZ_MEMLIMIT = 256 << 20


# xz and bzip2 are a rootfs tarball's only: their modules stay out of every build's start-up.
def _xz_chunks(raw: Blob, head: bytes) -> Iterator[bytes]:
    import lzma

    def member() -> MemberDecompressor:
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)

    try:
        yield from member_chunks(raw, head, member, magic=XZ_MAGIC)
    except lzma.LZMAError as e:
        raise ValueError(str(e)) from e  # (a corrupt stream, told as the others are)


def _bzip2_chunks(raw: Blob, head: bytes) -> Iterator[bytes]:
    import bz2

    return member_chunks(raw, head, bz2.BZ2Decompressor, magic=BZIP2_MAGIC)


class TrailingDataError(ValueError):
    """Bytes after a compressed stream's last member that are neither zero padding nor a
    member: gzip(1) ignores them with a warning; Go's gzip reader, hence docker and
    containerd, fails on them, as a build does."""


class MemberDecompressor(Protocol):
    """A decompressor of one member of a concatenated stream (ISA-L's IgzipDecompressor,
    lzma.LZMADecompressor): it keeps the input it has not used yet, and hands back what
    follows its member's end."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


def member_chunks(
    raw: Blob,
    head: bytes,
    new_member: Callable[[], MemberDecompressor],
    header_end: Callable[[bytes], int | None] | None = None,
    magic: bytes = b"",
) -> Iterator[bytes]:
    """Decompress one or more concatenated members (gzip, xz), each by a new decompressor;
    zero padding after the last one is tolerated, as gzip(1) and xz(1) do, and other bytes
    there that do not begin a member (`magic`) raise TrailingDataError. Output comes
    in pieces of at most OUT_CHUNK bytes, so a small blob that inflates hugely cannot
    take memory. With `header_end` (the length of a member's header at the start of the
    bytes given, None while they hold only part of it), each member's header reaches its
    decompressor whole. A stream cut short raises EOFError."""
    decompressor: MemberDecompressor | None = None
    data = head
    first = True
    while True:
        if decompressor is None:
            if not data:
                data = raw.read(CHUNK)
                if not data:
                    return
            if not data.strip(b"\0"):  # padding after the last member
                data = b""
                continue
            if not first and not magic.startswith(data[: len(magic)]):
                raise TrailingDataError("bytes that begin no member after the stream's end")
            first = False
            if header_end is not None:
                data = _whole_header(raw, data, header_end)
            decompressor = new_member()
        out = decompressor.decompress(data, OUT_CHUNK)
        data = b""
        if out:
            yield out
        if decompressor.eof:
            data = decompressor.unused_data  # the next member, or padding
            decompressor = None
        elif decompressor.needs_input:
            data = raw.read(CHUNK)
            if not data:
                raise EOFError("compressed stream ended before its end-of-stream marker")


MAX_GZIP_HEADER = 1 << 20  # no tool writes a longer name or comment


def _whole_header(raw: Blob, data: bytes, header_end: Callable[[bytes], int | None]) -> bytes:
    """`data` and as much more of `raw` as its member's header still needs."""
    while header_end(data) is None:
        if len(data) > MAX_GZIP_HEADER:
            raise ValueError(f"a member header longer than {MAX_GZIP_HEADER} bytes")
        more = raw.read(CHUNK)
        if not more:
            raise EOFError("compressed stream ended inside a member header")
        data += more
    return data


def gzip_header_end(data: bytes) -> int | None:
    """The length of the gzip member header (RFC 1952 section 2.3) that `data` begins
    with, or None while `data` holds only part of it. ISA-L checks a header's CRC
    (flag FHCRC) wrongly when the header comes to it in pieces, and the 4 bytes that
    tell the compression apart are read before the rest: each header is handed over
    whole. Bytes that are no gzip header are left to the decompressor to refuse."""
    if len(data) < 10:
        return None if GZIP_MAGIC.startswith(data[:2]) else len(data)
    if not data.startswith(GZIP_MAGIC):
        return 0
    flags, end = data[3], 10
    if flags & 0x04:  # FEXTRA: a 2-byte length, then the field
        if len(data) < end + 2:
            return None
        end += 2 + int.from_bytes(data[end : end + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            zero = data.find(b"\0", end)
            if zero < 0:
                return None
            end = zero + 1
    if flags & 0x02:  # FHCRC
        end += 2
    return end if len(data) >= end else None


def _gzip_member() -> MemberDecompressor:
    # ISA-L keeps the input it has not used (zlib's decompressobj hands it back as a
    # copy, which cost about 5 % of inflating here).
    decompressor: MemberDecompressor = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    return decompressor


def _gzip_chunks(raw: Blob, head: bytes) -> Iterator[bytes]:
    return member_chunks(raw, head, _gzip_member, gzip_header_end, GZIP_MAGIC)


def _is_skippable(head: bytes) -> bool:
    return len(head) >= 4 and int.from_bytes(head[:4], "little") & ~0xF == ZSTD_SKIPPABLE


def _zstd_chunks(raw: Blob, head: bytes) -> Iterator[bytes]:
    """Decode every frame, skippable ones passed over, as `zstd -dc` does. The
    decompressor ends quietly when its input ends inside a frame, so the frames are
    followed as the input goes by, to tell a complete stream from a truncated one."""
    import zstandard

    frames = _ZstdFrames()
    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
        _Prepend(head, raw, frames.feed),  # type: ignore[arg-type]
        read_size=CHUNK,
        read_across_frames=True,
    )
    while chunk := reader.read(OUT_CHUNK):
        yield chunk
    if not frames.complete:
        raise EOFError("compressed stream ended inside a frame")


class _ZstdFrames:
    """Follows the frame structure of a zstd stream (RFC 8878 section 3.1: frame header,
    block headers, optional checksum; skippable frames) without decoding it: reads the
    few header bytes and counts the rest. Bytes that are no frame stop the following:
    the decompressor reports those."""

    def __init__(self) -> None:
        self._skip = 0  # bytes to pass over: block contents, a skippable frame, a checksum
        self._header = b""  # the header being gathered
        self._want = 4  # its length so far as known
        self._in_frame = False  # gathering block headers, not a frame header
        self._checksum = False
        self._lost = False

    @property
    def complete(self) -> bool:
        """Whether the input so far ends between frames."""
        return self._lost or (not self._in_frame and not self._header and not self._skip)

    def feed(self, data: bytes | memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._lost:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._want - len(self._header), end - pos)
            self._header += bytes(data[pos : pos + take])
            pos += take
            if len(self._header) == self._want:
                self._parse()

    def _parse(self) -> None:
        if self._in_frame:
            self._block_header()
            return
        head = self._header
        magic = int.from_bytes(head[:4], "little")
        if magic & ~0xF == ZSTD_SKIPPABLE:
            if len(head) < 8:
                self._want = 8
                return
            self._skip = int.from_bytes(head[4:8], "little")
            self._want = 4
        elif magic != ZSTD_FRAME:
            self._lost = True
            return
        else:
            if len(head) < 5:
                self._want = 5
                return
            descriptor = head[4]  # Frame_Header_Descriptor
            single_segment = descriptor >> 5 & 1
            content_size = (single_segment, 2, 4, 8)[descriptor >> 6]
            dictionary_id = (0, 1, 2, 4)[descriptor & 3]
            want = 5 + (1 - single_segment) + dictionary_id + content_size
            if len(head) < want:
                self._want = want
                return
            self._checksum = bool(descriptor >> 2 & 1)
            self._in_frame = True
            self._want = 3
        self._header = b""

    def _block_header(self) -> None:
        """Block_Header: Last_Block (1 bit), Block_Type (2), Block_Size (21)."""
        value = int.from_bytes(self._header, "little")
        last, block_type, size = value & 1, value >> 1 & 3, value >> 3
        self._header = b""
        if block_type == 3:  # reserved: corrupt, as the decompressor will say
            self._lost = True
            return
        self._skip = 1 if block_type == 1 else size  # an RLE block holds one byte
        if last:
            self._skip += 4 if self._checksum else 0
            self._in_frame = False
            self._want = 4


def _plain_chunks(raw: Blob, head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    while chunk := raw.read(OUT_CHUNK):
        yield chunk


class _Prepend(io.RawIOBase):
    """Puts already-read bytes back in front of a stream."""

    def __init__(
        self, head: bytes, raw: Blob, observe: Callable[[bytes], None] | None = None
    ) -> None:
        super().__init__()
        self._head = head
        self._raw = raw
        self._observe = observe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            data = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        if self._observe is not None:
            self._observe(data)
        return len(data)


_DONE = object()
_EMPTY = memoryview(b"")
SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005


class _Handoffs:
    """The switch interval, shared by overlapping builds: the first sets, the last restores."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.previous = 0.0


_HANDOFFS = _Handoffs()


@contextlib.contextmanager
def prompt_handoffs() -> Iterator[None]:
    """While layers stream, hand the GIL over sooner than CPython's 5 ms: the inflating,
    hashing and writing threads each need it for a moment per chunk, and by default they
    wait behind the parsing thread for most of that interval, a visible share of a build.
    The interval is restored when the last overlapping user is done."""
    state = _HANDOFFS
    with state.lock:
        if state.users == 0:
            state.previous = sys.getswitchinterval()
            sys.setswitchinterval(min(state.previous, SWITCH_INTERVAL))
        state.users += 1
    try:
        yield
    finally:
        with state.lock:
            state.users -= 1
            if state.users == 0:
                sys.setswitchinterval(state.previous)


class LayerStream:
    """The uncompressed tar stream of a layer, produced by `produce` in a background
    thread a few chunks ahead. An exception in the producer is raised by the next read.

    view(n) hands out up to n bytes of the producer's current chunk as a memoryview,
    without copying: file data goes from the inflater's output to the kernel's write
    call untouched (the chunks are immutable bytes, so a view stays valid while held).
    read(n) is for headers: it copies, joining chunks when a read straddles two.
    The digest of the stream is computed as it is produced; finish() reads to the end
    and raises on a mismatch with the layer's diff_id.
    """

    def __init__(
        self,
        produce: Callable[[], Iterator[bytes]],
        on_close: Callable[[], None],
        digest: Callable[[], str],
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._buf = _EMPTY
        self._finished = False
        self._closed = False
        self._on_close = on_close
        self._digest = digest
        self._interrupt = interrupt
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce: Callable[[], Iterator[bytes]]) -> None:
        try:
            for chunk in produce():
                if not self._put(chunk):
                    return
            self._put(_DONE)
        except BaseException as e:  # handed to the reading thread
            self._put(e)

    def _next_chunk(self) -> memoryview:
        while not self._finished:
            item = self._queue.get()
            if item is _DONE:
                self._finished = True
            elif isinstance(item, BaseException):
                self._finished = True
                raise item
            elif item:
                return memoryview(item)  # type: ignore[arg-type]
        return _EMPTY

    def view(self, size: int) -> memoryview:
        """Up to `size` bytes (at least one, unless the stream has ended), not copied."""
        buf = self._buf
        if not buf:
            buf = self._next_chunk()
        if size >= len(buf):
            self._buf = _EMPTY
            return buf
        self._buf = buf[size:]
        return buf[:size]

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (fewer only at the end of the stream); -1 reads to the end."""
        first = self.view(size if size >= 0 else 1 << 62)
        if len(first) == size or not first:
            return bytes(first)
        parts = [first]
        got = len(first)
        while size < 0 or got < size:
            piece = self.view(size - got if size >= 0 else 1 << 62)
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def skip(self, size: int) -> int:
        """Pass over up to `size` bytes; returns how many there were."""
        left = size
        while left > 0 and (piece := self.view(left)):
            left -= len(piece)
        return size - left

    @property
    def digest(self) -> str:
        """sha256 of the whole uncompressed stream (valid after finish())."""
        return self._digest()

    def finish(self) -> None:
        """Read what the consumer left (tar padding), raising any error or mismatch."""
        while self.view(1 << 62):
            pass
        self.close()

    def abort(self) -> None:
        """Stop without reading on (after an error)."""
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._interrupt is not None:
            self._interrupt()  # a producer waiting for a blob still downloading
        self._thread.join()
        self._on_close()

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stream_error(e: Exception, kind: str, what: str) -> Oci2vmError | None:
    """What a decompressor's exception says of the stream, in one line (None: a bug)."""
    if isinstance(e, EOFError):
        return Oci2vmError(f"{what}: truncated {kind} stream")
    if isinstance(e, TrailingDataError):
        return Oci2vmError(
            f"{what}: bytes after the end of its {kind} stream (trailing garbage, which "
            "docker and containerd refuse too)"
        )
    if isinstance(e, (OSError, zlib.error, _ISAL_ERROR, ValueError)):
        return Oci2vmError(f"{what}: corrupt {kind} stream: {e}")
    if type(e).__name__ == "ZstdError":  # (zstandard does not export its types)
        if "too much memory" in str(e):
            return Oci2vmError(
                f"{what}: a zstd frame's window is larger than {ZSTD_MAX_WINDOW >> 20} MiB, "
                "as container runtimes refuse too"
            )
        return Oci2vmError(f"{what}: corrupt zstd stream: {e}")
    return None


def _stream_hasher() -> HashThread:
    """The hash of a layer's uncompressed stream, against its diff_id."""
    return HashThread(hashlib.sha256(), "diff-id-hash")


def decompressed(
    raw: Blob,
    media_type: str = "",
    what: str = "layer",
    diff_id: str | None = None,
    *,
    hash_stream: bool = True,
    rootfs: bool = False,
) -> LayerStream:
    """A reader of the uncompressed tar stream of a layer blob reader `raw`, produced
    in a background thread that also hashes it. A corrupt or truncated stream raises a
    one-line error naming the layer; when the blob was tampered with, the digest
    mismatch is reported instead; a stream that does not hash to `diff_id` raises at its
    end. Closing the reader closes `raw`.

    hash_stream=False skips hashing the stream, when the blob is already known to
    inflate to `diff_id` (see BlobStore.uncompressed_digest); the reader's digest is
    then `diff_id` itself (or "" without one). rootfs: see detect_compression."""
    head = raw.read(4)
    kind = detect_compression(head, media_type, rootfs=rootfs)
    chunks = {
        "gzip": _gzip_chunks, "zstd": _zstd_chunks, "none": _plain_chunks,
        "xz": _xz_chunks, "bzip2": _bzip2_chunks,
    }[kind]  # fmt: skip
    hasher = _stream_hasher() if hash_stream else None

    def produce() -> Iterator[bytes]:
        try:
            for chunk in chunks(raw, head):
                if hasher is not None:
                    hasher.feed(chunk)
                yield chunk
        except Oci2vmError:
            raise
        except Exception as e:
            error = _stream_error(e, kind, what)
            if error is None:
                raise
            _blame_digest(raw)  # (a tampered blob is told as such)
            raise error from e
        # The whole blob must be read for its digest to be checked.
        while raw.read(CHUNK):
            pass
        got = stream_digest() if hasher is not None else diff_id
        if diff_id is not None and got != diff_id:
            raise Oci2vmError(
                f"{what} uncompressed (diff_id): digest mismatch: expected {diff_id}, got {got}"
            )

    def stream_digest() -> str:
        assert hasher is not None
        return "sha256:" + hasher.hexdigest()

    # Closing must not read on (that would verify the digest of an abandoned blob).
    abort_blob = getattr(raw, "abort", raw.close)

    def release() -> None:
        if hasher is not None:
            hasher.stop()
        abort_blob()

    return LayerStream(
        produce,
        release,
        stream_digest if hasher is not None else lambda: diff_id or "",
        getattr(raw, "interrupt", None),
    )


def _blame_digest(raw: Blob) -> None:
    """A blob that fails to decompress may simply have been tampered with: read the rest
    of it so that a digest mismatch, the more precise error, is raised first."""
    try:
        while raw.read(CHUNK):
            pass
    except Oci2vmError:
        raise
    except Exception:
        pass
