"""Named files inside a directory or a tar archive, located in place.

OCI layouts, oci-archives and both forms of `docker save` output are sets of named
files; reading them through one interface lets each format's parser ignore whether it
was handed a directory or a tarball. Nothing is extracted: a member is a byte range of
the archive. A compressed archive (gzip, zstd, xz, bzip2: what skopeo and podman read,
`docker save | xz` being common) is decompressed whole into one temporary file in the
cache's scratch directory, as containers/image does, since its members are read in an
order of their own; the file is removed when the process ends.

Decompressing costs seconds per hundred MB, every time: too much for `oci2vm run` of an
archive whose root the run cache already holds, or `inspect`. So the first read leaves an
index in the cache (<cache>/archives/<identity>/: where each member is, and the small ones
themselves: manifests, configs, small layers), keyed by the archive's path and stat
(device, inode, size, mtime, ctime: any write changes one). A later read takes the index
and decompresses only if a large member is read, checking the copy against the index.
The index is trusted like the run cache; blobs are still verified by digest when read.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import logging
import os
import posixpath
import secrets
import shutil
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from oci2vm.debian.compression import MAGIC, open_stream
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, BlobStore, open_regular, regular_file_size
from oci2vm.layers.decompress import BZIP2_MAGIC, CHUNK
from oci2vm.layers.tarstream import BLOCK, is_header

if TYPE_CHECKING:
    from oci2vm.sources.base import Fetch

log = logging.getLogger(__name__)

MAX_SMALL = 16 << 20  # manifests, configs and index files are never this big
# What an image archive may hold: a handful of files per layer, and tar metadata (pax
# records, long names) of a few KiB. tarfile reads such metadata whole and keeps a
# record of every member, so both are capped before they can fill memory.
MAX_MEMBERS = 100_000
MAX_TAR_METADATA = 1 << 20


class _MetadataTooLargeError(Exception):
    pass


class _CappedReads(io.RawIOBase):
    """A seekable file whose single reads (tarfile reads a pax header or a long name in
    one) may not exceed MAX_TAR_METADATA bytes."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > MAX_TAR_METADATA:
            raise _MetadataTooLargeError(size)
        return self._f.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


class Container:
    """A directory or a tar archive of named files; the files it names must be regular
    files (a FIFO or a device is refused, never read). `store` gives the cache a
    compressed archive is decompressed in and indexed in (without it, one is refused)."""

    def __init__(self, path: Path, store: Callable[[], BlobStore] | None = None) -> None:
        self.path = path
        self._members: dict[str, tuple[int, int]] | None = None
        self._small: dict[str, Path] = {}  # members an index holds as files of their own
        self._ready: Callable[[], None] | None = None
        if not os.path.lexists(path):
            raise Oci2vmError(f"{path}: no such file or directory")
        try:
            is_dir = path.is_dir()
        except OSError as e:  # Python < 3.12 lets ELOOP through
            raise Oci2vmError(f"cannot read {path}: {e.strerror}") from None
        if is_dir:
            return
        self._data = path  # the tar itself, or its decompressed copy
        kind = archive_compression(path)
        if kind == "none":
            self._members = _scan_tar(path, path)
            return
        if store is None:
            raise Oci2vmError(f"{path}: a {kind}-compressed archive: decompress it first")
        cache = store()
        index = _ArchiveIndex(cache, path, kind)
        known = index.load()
        self._data = cache.scratch_tar("archive")  # _decompressed_copy creates it
        if known is not None:
            self._members, self._small = known
            self._ready = _Decompress(path, kind, self._data, self._members).run
            return
        self._members = _decompressed_members(path, kind, self._data)
        index.save(self._data, self._members)

    @property
    def is_archive(self) -> bool:
        return self._members is not None

    def exists(self, name: str) -> bool:
        name = _clean(name)
        if self._members is not None:
            return name in self._members
        # Present at all: what is there but unreadable is reported when it is read.
        return os.path.lexists(self.path / name)

    def ref(self, name: str, digest: str | None = None) -> BlobRef:
        """A BlobRef for a member (or file), raising if it is absent."""
        name = _clean(name)
        if self._members is not None:
            try:
                offset, size = self._members[name]
            except KeyError:
                raise Oci2vmError(f"{self.path}: {name} is missing from the archive") from None
            small = self._small.get(name)
            if small is not None:
                return BlobRef(small, 0, size, digest)
            return BlobRef(self._data, offset, size, digest, ready=self._ready)
        file = self.path / name
        if not os.path.lexists(file):
            raise Oci2vmError(f"{self.path}: {name} is missing")
        return BlobRef(file, 0, regular_file_size(file), digest)

    def read(self, name: str) -> bytes:
        return self.ref(name).read_all(MAX_SMALL)


def store_of(fetch: Fetch) -> Callable[[], BlobStore]:
    """The cache a compressed archive is decompressed and indexed in."""

    def store() -> BlobStore:
        return fetch.store or BlobStore(BlobStore.default_root())

    return store


# -- the index of a compressed archive -----------------------------------------------------

INDEX_VERSION = 1
INDEX_SMALL = 1 << 20  # members up to this size are kept in the index, as files
INDEX_SMALL_TOTAL = 32 << 20  # ... up to this much in all
_INDEX_FILE = "index.json"


class _ArchiveIndex:
    """What a read of a compressed archive found, kept for the next one (see the top)."""

    def __init__(self, store: BlobStore, path: Path, kind: str) -> None:
        self._store = store
        try:
            st = path.stat()
            identity = [INDEX_VERSION, kind, str(path.absolute()), st.st_dev, st.st_ino]
            identity += [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        except OSError:
            identity = None
        text = json.dumps(identity).encode()
        self._key = hashlib.sha256(text).hexdigest() if identity is not None else None

    def _dir(self) -> Path | None:
        if self._key is None:
            return None
        try:
            return self._store.archive_index_dir() / self._key
        except Oci2vmError:
            return None  # a read-only cache: no index, as before

    def load(self) -> tuple[dict[str, tuple[int, int]], dict[str, Path]] | None:
        """The members and the small members' files of an earlier read, if any."""
        directory = self._dir()
        if directory is None:
            return None
        try:
            doc = json.loads((directory / _INDEX_FILE).read_bytes())
            members = {
                str(name): (int(offset), int(size))
                for name, (offset, size) in doc["members"].items()
                if isinstance(offset, int) and isinstance(size, int)
            }
            small: dict[str, Path] = {}
            for name, file in doc["small"].items():
                where = directory / str(file)
                if "/" in str(file) or name not in members:
                    return None
                if regular_file_size(where) != members[name][1]:
                    return None
                small[name] = where
            if len(members) != len(doc["members"]):
                return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError, Oci2vmError):
            return None
        return members, small

    def save(self, copy: Path, members: dict[str, tuple[int, int]]) -> None:
        """Keep what this read found (best effort: a read-only cache is fine)."""
        directory = self._dir()
        if directory is None:
            return
        work = directory.parent / f".{directory.name}.{secrets.token_hex(4)}.tmp"
        try:
            work.mkdir()
            small: dict[str, str] = {}
            total = 0
            with open_regular(copy) as f:
                for number, (name, (offset, size)) in enumerate(sorted(members.items())):
                    if size > INDEX_SMALL or total + size > INDEX_SMALL_TOTAL:
                        continue
                    f.seek(offset)
                    (work / f"m{number}").write_bytes(f.read(size))
                    small[name] = f"m{number}"
                    total += size
            doc = {"members": {n: list(m) for n, m in members.items()}, "small": small}
            (work / _INDEX_FILE).write_text(json.dumps(doc))
            shutil.rmtree(directory, ignore_errors=True)  # a stale or broken one
            os.rename(work, directory)
        except (OSError, Oci2vmError) as e:
            log.debug("cannot keep an index of %s: %s", copy, e)
        finally:
            shutil.rmtree(work, ignore_errors=True)


class _Decompress:
    """Decompresses an indexed archive into `copy` when a member outside the index is
    first read, and checks that it still holds what the index says."""

    def __init__(
        self, path: Path, kind: str, copy: Path, members: dict[str, tuple[int, int]]
    ) -> None:
        self._path, self._kind, self._copy, self._members = path, kind, copy, members
        self._done = False
        self._lock = threading.Lock()  # (layers may be opened from more than one thread)

    def run(self) -> None:
        with self._lock:
            if self._done:
                return
            found = _decompressed_members(self._path, self._kind, self._copy)
            if found != self._members:
                self._copy.unlink(missing_ok=True)
                raise Oci2vmError(f"{self._path}: the archive changed while it was read: run again")
            self._done = True


def _clean(name: str) -> str:
    name = posixpath.normpath(name.lstrip("/"))
    return "" if name == "." else name


# The streams of Debian's packages (xz, gzip, zstd, read by the same decompressors), and
# bzip2, which skopeo reads in archives too.
ARCHIVE_MAGIC = (*((magic, kind) for kind, magic in MAGIC.items()), (BZIP2_MAGIC, "bzip2"))


def archive_compression(path: Path) -> str:
    """'gzip', 'zstd', 'xz', 'bzip2' or 'none', by an archive's magic bytes (a tar
    begins with a member's name: none of these begins one that a save writes)."""
    with open_regular(path) as f:
        head = f.read(6)
    return next((kind for magic, kind in ARCHIVE_MAGIC if head.startswith(magic)), "none")


def _decompressed_members(path: Path, kind: str, copy: Path) -> dict[str, tuple[int, int]]:
    """`path` decompressed into the new file `copy`, and its members (see _scan_tar); the
    copy is removed at once if it is no readable archive."""
    _decompressed_copy(path, kind, copy)
    try:
        return _scan_tar(copy, path)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise


def _decompressed_copy(path: Path, kind: str, copy: Path) -> None:
    """`path` decompressed into the new file `copy` (removed at once if it is no readable
    archive)."""
    try:
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise Oci2vmError(f"{copy.parent}: cannot create files there: {e.strerror}") from e
    scratch = copy.parent
    try:
        with os.fdopen(fd, "wb") as file, open_regular(path) as raw:
            out = _GuardedCopy(file.fileno(), path, scratch)
            if kind == "bzip2":
                with bz2.BZ2File(raw) as unpacked:
                    while piece := unpacked.read(CHUNK):
                        out.write(piece)
            else:  # the layers' decompressors, which tell a truncated stream apart
                stream = open_stream(raw, kind, str(path))
                try:
                    while view := stream.view(CHUNK):
                        out.write(view)
                    stream.finish()
                finally:
                    stream.close()
            out.finish()
    except Oci2vmError:
        copy.unlink(missing_ok=True)
        raise
    except (OSError, EOFError, ValueError) as e:
        copy.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise Oci2vmError(f"{path}: cannot decompress it: {e.strerror}") from e
        raise Oci2vmError(f"{path}: corrupt or truncated {kind}-compressed archive") from e
    except BaseException:
        copy.unlink(missing_ok=True)
        raise


# Room a decompressed copy leaves on the scratch filesystem: a big archive must not fill
# the disk before anything is read.
SCRATCH_RESERVE = 1 << 30
_SPACE_CHECK = 256 << 20  # bytes written between two looks at the free space
# Runs of zeros this long (at this alignment) are left as holes in the copy: a small
# compressed file may hold terabytes of zeros (a bomb), which then cost the time to
# inflate them but no disk; a save's own zeros (tar padding, empty blocks) take none too.
_HOLE = 64 << 10
_ZEROS = bytes(_HOLE)


class _GuardedCopy:
    """Writes a decompressed archive sparsely (see _HOLE), refusing early what is no tar
    (its first block is no tar header) and what would leave less than SCRATCH_RESERVE
    free."""

    def __init__(self, fd: int, path: Path, scratch: Path) -> None:
        self._fd, self._path, self._scratch = fd, path, scratch
        self._head = b""
        self._offset = 0  # the copy's size so far, holes included
        self._written = 0  # bytes stored
        self._next_check = 0

    def write(self, data: bytes | memoryview) -> None:
        if len(self._head) < BLOCK:
            self._head += bytes(data[: BLOCK - len(self._head)])
            if len(self._head) == BLOCK:
                self.check_head()
        view = memoryview(data)
        start = 0  # of the data not yet stored
        at = -self._offset % _HOLE  # the first whole aligned run in `view`
        while at + _HOLE <= len(view):
            if _ZEROS.startswith(view[at : at + _HOLE]):  # (memcmp, where == is slow)
                self._store(view[start:at])
                self._offset += _HOLE
                start = at + _HOLE
            at += _HOLE
        self._store(view[start:])

    def _store(self, data: memoryview) -> None:
        if not data:
            return
        if self._written >= self._next_check:
            self._next_check = self._written + _SPACE_CHECK
            free = os.statvfs(self._scratch)
            if free.f_bavail * free.f_frsize < SCRATCH_RESERVE + len(data):
                raise Oci2vmError(
                    f"{self._path}: decompressing it would leave less than "
                    f"{SCRATCH_RESERVE >> 30} GiB free in {self._scratch}"
                )
        while data:
            done = os.pwrite(self._fd, data, self._offset)
            data = data[done:]
            self._offset += done
            self._written += done

    def finish(self) -> None:
        """The copy's end (a hole there, too) and the check of its first block."""
        os.ftruncate(self._fd, self._offset)
        self.check_head()

    def check_head(self) -> None:
        if not is_header(self._head.ljust(BLOCK, b"\0")):
            raise Oci2vmError(f"{self._path}: not a tar archive once decompressed")


def _scan_tar(path: Path, name: Path) -> dict[str, tuple[int, int]]:
    """Map member name -> (data offset, size), following in-archive links (docker save
    links repeated layers to their first copy). `name` is the archive as the user gave
    it (`path` may be its decompressed copy)."""
    with open_regular(path) as f:
        try:
            return _members(name, cast(BinaryIO, _CappedReads(f)))
        except _MetadataTooLargeError as e:
            raise Oci2vmError(
                f"{name}: a tar header claims {e.args[0]} bytes of metadata (more than "
                f"{MAX_TAR_METADATA}): not an image archive"
            ) from None


def _members(path: Path, f: BinaryIO) -> dict[str, tuple[int, int]]:
    members: dict[str, tuple[int, int]] = {}
    links: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for count, m in enumerate(tar):
                if count == MAX_MEMBERS:
                    raise Oci2vmError(
                        f"{path}: holds more than {MAX_MEMBERS} files: not an image archive"
                    )
                name = _clean(m.name)
                if m.isfile():
                    members[name] = (m.offset_data, m.size)
                elif m.issym():
                    links[name] = _clean(posixpath.join(posixpath.dirname(name), m.linkname))
                elif m.islnk():
                    links[name] = _clean(m.linkname)
    except tarfile.TarError as e:
        raise Oci2vmError(f"{path}: not a readable tar archive: {e}") from e
    for name, target in links.items():
        seen = {name}
        while target in links and target not in seen:
            seen.add(target)
            target = links[target]
        if target in members:
            members[name] = members[target]
    return members
