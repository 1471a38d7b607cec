"""A Debian archive's suite, for one architecture, read through its signed chain:

    dists/SUITE/InRelease   OpenPGP signature checked against Debian's archive keys (gpgv);
                            Suite/Codename, Date and Valid-Until checked as apt does
    .../Packages.xz|gz      sha256 and size from the Release
    pool/.../NAME.deb       sha256 and size from the Packages index

Every verified file goes to the blob cache (oci2vm.image.blobs.BlobStore) under its sha256;
cached indices and packages are hashed again before use, so a tampered cache entry is
replaced (or refused offline), never used. The InRelease itself is cached too, and a small
pointer, refs/debian/<mirror, suite>, names the newest one verified for that mirror.

Staleness: the Release is fetched anew on every run, and a Release older (by Date) than the
one already verified for the same mirror and suite is refused, as a replayed mirror would
serve it. When the mirror cannot be reached, the cached Release serves, after its signature
(against today's keyring) and its Valid-Until (against today's clock) are checked again:
a suite without Valid-Until (Debian's stable releases) then yields what it listed when it
was cached, maybe without the latest security updates; a note says from when. Nothing falls
back to the cache when the mirror answers wrongly (a bad signature, a hash mismatch).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from urllib3.exceptions import HTTPError

from oci2vm.arch import Arch
from oci2vm.debian.compression import compression_of, open_stream
from oci2vm.debian.packages import Package, PackageIndex
from oci2vm.debian.release import IndexFile, Release, check_release, parse_release
from oci2vm.debian.signature import verify_clearsigned
from oci2vm.debian.transport import Mirror, NotFoundError, UnreachableError
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, BlobStore, sha256_digest
from oci2vm.layers.decompress import LayerStream

log = logging.getLogger(__name__)

MAX_INRELEASE = 16 << 20  # Debian's are ~150 kB
# Index names in the order they are preferred (the smallest download first).
INDEX_NAMES = ("Packages.xz", "Packages.gz", "Packages")
KNOWN_SUITES = "bookworm, trixie, sid (or stable, testing, unstable)"

# Checks a clearsigned InRelease and returns its signed text (signature.verify_clearsigned).
Verifier = Callable[[bytes, str], bytes]


def debian_architecture(arch: Arch) -> str:
    """Debian's name for `arch` (dpkg --print-architecture), a fact of arch.py's."""
    return arch.facts.debian


class Archive:
    """One suite of a Debian mirror for one architecture, verified through the signed chain.

    `mirror`: its URL (transport.mirror_url: the option, $OCI2VM_DEBIAN_MIRROR, Debian's
    archive). `keyrings`: the OpenPGP keyrings to check InRelease against (Debian's archive keys by
    default). `allow_expired`: accept a Release past its Valid-Until. `verify` replaces the
    gpgv check (tests). `notes` collects what a user should hear (a cached Release used).
    """

    def __init__(
        self,
        store: BlobStore,
        suite: str,
        arch: Arch,
        *,
        mirror: str | Mirror | None = None,
        keyrings: Sequence[Path] = (),
        allow_expired: bool = False,
        component: str = "main",
        verify: Verifier | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.suite = suite
        self.arch = arch
        self.mirror = mirror if isinstance(mirror, Mirror) else Mirror(mirror)
        self.component = component
        self.allow_expired = allow_expired
        self._verify = verify or (lambda data, what: verify_clearsigned(data, keyrings, what))
        self._now = now
        self._release: Release | None = None
        self._index: PackageIndex | None = None
        self.notes: list[str] = []

    @property
    def what(self) -> str:
        return f"{self.mirror.url} {self.suite}"

    # -- the Release -------------------------------------------------------------------

    def _ref(self) -> Path:
        key = hashlib.sha256(f"{self.mirror.url}\n{self.suite}".encode()).hexdigest()
        return self.store.root / "refs" / "debian" / key

    def _cached_inrelease(self) -> bytes | None:
        try:
            digest = self._ref().read_text().strip()
            blob = self.store.get(digest)
        except (OSError, UnicodeDecodeError, Oci2vmError):
            return None
        if blob is None or blob.size > MAX_INRELEASE:
            return None
        data = blob.path.read_bytes()
        return data if sha256_digest(data) == digest else None

    def _check(self, data: bytes, what: str) -> Release:
        release = parse_release(self._verify(data, what), what)
        check_release(release, self.suite, self._now(), allow_expired=self.allow_expired, what=what)
        return release

    def release(self) -> Release:
        """The suite's verified Release: fetched anew, or the cached one when the mirror
        cannot be reached (see the module's note on staleness)."""
        if self._release is None:
            self._release = self._load_release()
            if self.arch_name not in self._release.architectures:
                raise Oci2vmError(
                    f"{self.what}: has no packages for {self.arch_name} "
                    f"(it has {', '.join(self._release.architectures)})"
                )
        return self._release

    def _load_release(self) -> Release:
        cached = self._cached_inrelease()
        what = f"{self.mirror.url}/dists/{self.suite}/InRelease"
        try:
            data = self._fetch_inrelease()
        except UnreachableError as e:
            if cached is None:
                raise Oci2vmError(
                    f"{e} and no Release of {self.suite} is cached: connect to the network "
                    "(or choose a reachable --mirror) and retry"
                ) from e
            release = self._check(cached, f"{what} (cached)")
            self.notes.append(
                f"{self.mirror.url} is unreachable: using the {self.suite} Release cached "
                f"from {release.date:%Y-%m-%d} (updates since are missing)"
            )
            return release
        release = self._check(data, what)
        if cached is not None:
            self._refuse_rollback(release, cached, what)
        self._remember(data)
        return release

    def _fetch_inrelease(self) -> bytes:
        path = f"dists/{self.suite}/InRelease"
        try:
            stream, _size = self.mirror.open(path)
        except NotFoundError:
            raise Oci2vmError(
                f"unknown suite {self.suite!r} on {self.mirror.url} (no InRelease): "
                f"name one of {KNOWN_SUITES}, or check --mirror"
            ) from None
        try:
            with stream:
                data = stream.read(MAX_INRELEASE + 1)
        except (HTTPError, OSError) as e:
            raise UnreachableError(f"{self.mirror.url}/{path}: download broke off ({e})") from e
        if len(data) > MAX_INRELEASE:
            raise Oci2vmError(f"{self.mirror.url}/{path}: too large for an InRelease")
        return data

    def _refuse_rollback(self, release: Release, cached: bytes, what: str) -> None:
        try:
            previous = self._check(cached, f"{what} (cached)")
        except Oci2vmError:
            return  # the cached one no longer holds (expired, key gone): the new one wins
        if release.date < previous.date:
            raise Oci2vmError(
                f"{what}: dated {release.date:%Y-%m-%d %H:%M}, older than the Release of "
                f"{previous.date:%Y-%m-%d %H:%M} verified before (a stale or replayed "
                "mirror): use another --mirror"
            )

    def _remember(self, data: bytes) -> None:
        """Cache the verified InRelease and point the ref at it (best effort: a read-only
        cache only costs the offline fallback)."""
        digest = sha256_digest(data)
        ref = self._ref()
        try:
            self.store.put_bytes(digest, data)
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_name(f".{ref.name}.tmp")
            tmp.write_text(digest + "\n")
            tmp.replace(ref)
        except OSError as e:
            log.debug("cannot cache the Release of %s: %s", self.what, e)

    @property
    def arch_name(self) -> str:
        return debian_architecture(self.arch)

    # -- the Packages index ------------------------------------------------------------

    def _index_file(self) -> IndexFile:
        release = self.release()
        base = f"{self.component}/binary-{self.arch_name}"
        for name in INDEX_NAMES:
            entry = release.files.get(f"{base}/{name}")
            if entry is not None:
                return entry
        raise Oci2vmError(
            f"{self.what}: lists no {base}/Packages index: check the component "
            f"(it has {', '.join(release.components) or 'none'})"
        )

    def _index_path(self, entry: IndexFile) -> str:
        if self.release().by_hash:
            directory = entry.path.rpartition("/")[0]
            return f"dists/{self.suite}/{directory}/by-hash/SHA256/{entry.sha256}"
        return f"dists/{self.suite}/{entry.path}"

    def index(self) -> PackageIndex:
        """The verified Packages index of the component for this architecture."""
        if self._index is None:
            entry = self._index_file()
            blob = self.verified(self._index_path(entry), entry.sha256, entry.size)
            kind = compression_of(entry.path) or "none"

            @contextmanager
            def open_index() -> Iterator[LayerStream]:
                stream = open_stream(blob.open(), kind, f"{self.what} {entry.path}")
                try:
                    yield stream
                    stream.finish()
                finally:
                    stream.abort()

            self._index = PackageIndex(
                open_index, f"{self.suite}/{self.component} for {self.arch_name}"
            )
        return self._index

    def package(self, name: str) -> Package:
        """The index's record of the package `name` (no dependency followed)."""
        return self.index().get(name)

    def resolve(self, name: str) -> Package:
        """The package holding the files behind `name`: a metapackage is followed to the
        versioned package it pins (PackageIndex.resolve)."""
        return self.index().resolve(name)

    # -- verified files ----------------------------------------------------------------

    def download(self, package: Package) -> BlobRef:
        """The package's .deb, verified against the index's sha256 (from the cache when it
        is there and still matches)."""
        return self.verified(package.filename, package.sha256, package.size, str(package))

    def verified(self, path: str, sha256: str, size: int, what: str | None = None) -> BlobRef:
        """The file at `path` of the mirror, in the blob cache, hashing to `sha256`."""
        digest = f"sha256:{sha256}"
        what = what or path
        cached = self.store.get(digest)
        if cached is not None:
            if cached.size == size and _rehash(cached) == digest:
                return cached
            self.notes.append(f"the cached {what} was corrupt: fetched it again")
            cached.path.unlink(missing_ok=True)
        return self._fetch_into_cache(path, digest, size, what)

    def _fetch_into_cache(self, path: str, digest: str, size: int, what: str) -> BlobRef:
        url = f"{self.mirror.url}/{path}"
        try:
            stream, _length = self.mirror.open(path)
        except UnreachableError as e:
            raise Oci2vmError(
                f"{e}, and {what} is not cached: connect to the network and retry"
            ) from e
        except NotFoundError:
            raise Oci2vmError(
                f"{url}: missing, though the signed index lists it: retry later, or use "
                "another --mirror"
            ) from None
        try:
            with stream:
                return self.store.put(digest, stream, size, what=url)
        except HTTPError as e:
            raise Oci2vmError(f"{url}: download broke off ({e}): retry") from e
        except OSError as e:
            raise Oci2vmError(
                f"cannot store {what} in the cache {self.store.root} ({e.strerror}): "
                "free space there, or choose another cache directory"
            ) from e
        except Oci2vmError as e:
            raise Oci2vmError(
                f"{e}: the mirror serves other bytes than its signed index lists: "
                "retry, or use another --mirror"
            ) from e


def _rehash(blob: BlobRef) -> str:
    return BlobRef(blob.path, blob.offset, blob.size, None).compute_digest()
