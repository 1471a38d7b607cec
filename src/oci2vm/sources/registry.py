"""The registry source (docker://REF): a client of the OCI distribution spec's pull API.

GET /v2/<name>/manifests/<reference> for OCI and Docker v2 manifests and indexes, then
GET /v2/<name>/blobs/<digest> for the config and layers, each verified by digest into the
content-addressed cache. urllib3 retries 5xx, 429 and dropped connections with backoff;
sources/transport.py decides which hosts may be spoken to in clear and bounds the time
a response may go without progress.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO, NoReturn, cast

import urllib3
from urllib3.exceptions import (
    HTTPError,
    InsecureRequestWarning,
)

from oci2vm.config import PullPolicy
from oci2vm.errors import Oci2vmError
from oci2vm.image.arrival import Arrival, Span
from oci2vm.image.blobs import (
    CHUNK,
    BlobRef,
    BlobStore,
    ProgressFn,
    TruncatedError,
    check_digest,
    digest_of,
    short,
)
from oci2vm.image.model import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_SIZE,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Image,
    assemble,
    index_entries,
    load_json,
    manifest_kind,
    select_platform,
)
from oci2vm.sources.auth import Authenticator, find_credentials, parse_www_authenticate
from oci2vm.sources.base import Fetch
from oci2vm.sources.downloads import PARALLEL_DOWNLOADS, Downloads
from oci2vm.sources.httperrors import one_line, registry_errors, transport_error
from oci2vm.sources.reference import Reference
from oci2vm.sources.transport import (
    PROGRESS_BYTES,
    RETRIES,
    HopError,
    Transport,
    host_of,
    redirected_peer,
)

__all__ = ["BLOB_ATTEMPTS", "PARALLEL_DOWNLOADS", "RETRIES", "resolve"]

log = logging.getLogger(__name__)

ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
KNOWN_MANIFEST_TYPES = (*INDEX_TYPES, *MANIFEST_TYPES, *DOCKER_SCHEMA1)
MAX_INDEX_DEPTH = 4
MAX_TAGS_SHOWN = 10  # in the message for an unknown tag
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)  # the OCI spec's
MAX_TOKEN_RESPONSE = 1 << 20
# Whole-download attempts of a blob whose body broke off after the response began.
BLOB_ATTEMPTS = 3


def _is_tag(name: object) -> bool:
    return isinstance(name, str) and _TAG.fullmatch(name) is not None


class _HighWater:
    """Progress across download attempts: bytes read again after a retry do not
    advance the bar a second time."""

    def __init__(self, progress: ProgressFn) -> None:
        self._progress = progress
        self._high = 0
        self._position = 0

    def restart(self) -> None:
        self._position = 0

    def __call__(self, n: int) -> None:
        self._position += n
        if self._position > self._high:
            self._progress(self._position - self._high)
            self._high = self._position


class _Session:
    """Requests to one repository of one registry, authenticated as it asks."""

    def __init__(self, ref: Reference, fetch: Fetch) -> None:
        self.ref = ref
        self.registry = ref.registry
        self.host = ref.api_host
        self.tls_verify = fetch.tls_verify
        # --tls-verify=false names the source's registry, as skopeo's does; other hosts
        # (a token server, a blob store) only by --insecure-host.
        insecure = [] if fetch.tls_verify else [ref.api_host, ref.registry]
        self.timeout = fetch.network_timeout
        self.http = Transport(
            [*insecure, *fetch.insecure_hosts],
            network_timeout=fetch.network_timeout,
            connections=PARALLEL_DOWNLOADS + 1,  # and the build's own (a layer's end)
        )
        self.base = ""
        self.scope = f"repository:{ref.repository}:pull"
        self.auth = Authenticator(
            ref.registry,
            lambda: find_credentials(
                ref.registry, ref.repository, creds=fetch.creds, auth_file=fetch.auth_file
            ),
            self._token_request,
        )
        self.authorization: str | None = None
        self._auth_lock = threading.Lock()  # one thread answers a challenge at a time
        # Whether range requests are answered as asked (None: not known yet): blobs then
        # come in stripes (sources/downloads.py). False once an answer was not.
        self._ranges: bool | None = None

    def close(self) -> None:
        self.http.close()

    def _error(
        self, peer: str, err: BaseException, resp: urllib3.BaseHTTPResponse | None = None
    ) -> Oci2vmError:
        """The one-line error for a request or a body that failed, naming the host that
        failed: `peer`, or the host one of its redirects led to."""
        host = peer.rsplit(maxsplit=1)[-1]
        target = self.http.redirected(resp) if resp is not None else None
        if isinstance(err, HopError):
            target, err = err.target, err.error
        if target is not None:
            host, peer = target, redirected_peer(target, peer)
        if self.http.expired(resp):
            return Oci2vmError(
                f"{peer} sent less than {PROGRESS_BYTES >> 10} KiB in {self.timeout:g} s: "
                "retry, or raise --network-timeout"
            )
        fix = (
            "if you trust this registry, use --tls-verify=false"
            if host_of(host) == host_of(self.host)
            else f"if you trust this host, pass --insecure-host {host_of(host)}"
        )
        return transport_error(peer, err, timeout=self.timeout, tls_fix=fix)

    def _body_error(
        self, peer: str, err: HTTPError | TruncatedError, resp: urllib3.BaseHTTPResponse
    ) -> Oci2vmError:
        """The error for a blob's body that broke off: urllib3 raises when a body with a
        Content-Length ends early; one without (close-delimited, or chunked and cut at a
        chunk's end) just ends, and the blob's reader finds it short."""
        if isinstance(err, TruncatedError):
            return err
        return self._error(peer, err, resp)

    def _open(
        self,
        url: str,
        headers: Mapping[str, str],
        peer: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self.http.open(method, url, headers, peer, body)
        except HTTPError as e:
            raise self._error(peer, e) from e

    def _token_request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        peer = f"token server {urllib.parse.urlsplit(url).netloc}"
        resp = self._open(url, headers, peer, method=method, body=body)
        try:
            return resp.status, self._read(resp, MAX_TOKEN_RESPONSE, "token response", peer)
        finally:
            self.http.release(resp)

    def _read(self, resp: urllib3.BaseHTTPResponse, limit: int, what: str, peer: str) -> bytes:
        try:
            data = self.http.read(resp, limit)
        except HTTPError as e:
            raise self._error(peer, e, resp) from e
        if data is None:
            raise Oci2vmError(f"{what} from {peer} is larger than {limit} bytes")
        return data

    def connect(self) -> None:
        """Find the API (https; then http too when TLS is not verified, as skopeo does)
        and answer the challenge of GET /v2/, so later requests go out authenticated."""
        schemes = ("https",) if self.tls_verify else ("https", "http")
        peer = f"registry {self.host}"
        for scheme in schemes:
            try:
                resp = self._open(f"{scheme}://{self.host}/v2/", {}, peer)
            except Oci2vmError as e:
                if scheme == schemes[-1]:
                    raise
                log.debug("%s; trying plain HTTP", e)
                continue
            self.base = f"{scheme}://{self.host}"
            break
        try:
            if resp.status == 401:
                challenges = parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))
                if challenges:
                    self.authorization = self.auth.authorization(
                        challenges, self.scope, fresh=False
                    )
        finally:
            self.http.release(resp)

    def get(self, path: str, headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """GET an API path, answering at most one 401 challenge (the first request of
        a run, or a token that expired)."""
        peer = f"registry {self.host}"
        answered = False
        while True:
            sent = self.authorization
            request = dict(headers)
            if sent is not None:
                request["Authorization"] = sent
            resp = self._open(self.base + path, request, peer)
            if resp.status != 401 or self.http.redirected(resp):
                return resp  # (another host's 401 is not the registry's challenge: fail())
            challenges = parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))
            try:
                _codes, message = registry_errors(
                    self._read(resp, MAX_MANIFEST_SIZE, "error", peer)
                )
            finally:
                self.http.release(resp)
            with self._auth_lock:
                if self.authorization != sent:
                    continue  # another download answered the challenge meanwhile
                refused = self.auth.refused(
                    f"HTTP 401 {message or 'unauthorized'}", answered=sent is not None
                )
                if answered or not challenges:
                    raise refused
                answer = self.auth.authorization(challenges, self.scope, fresh=sent is not None)
                if answer == sent:
                    raise refused
                self.authorization = answer
            answered = True

    def fail(
        self, resp: urllib3.BaseHTTPResponse, path: str, not_found: Callable[[], str]
    ) -> NoReturn:
        """Raise the error for a response that is not 200; `not_found` says what is
        missing when the registry answers 404."""
        peer = f"registry {self.host}"
        target = self.http.redirected(resp)
        if target is not None:
            # Not the registry's answer: its credentials and error codes are not in
            # question. A storage host refusing a link the registry signed is most often
            # a link that expired on the way.
            expired = ": the link may have expired: retry" if resp.status in (401, 403) else ""
            raise Oci2vmError(
                f"{redirected_peer(target, peer)} answered HTTP {resp.status} "
                f"{one_line(resp.reason or '')}".rstrip()
                + f" for GET {path}{expired}"
            )
        codes, message = registry_errors(self._read(resp, MAX_MANIFEST_SIZE, "error", peer))
        if resp.status in (401, 403) or "DENIED" in codes or "UNAUTHORIZED" in codes:
            raise self.auth.refused(
                f"HTTP {resp.status} {message or one_line(resp.reason or '')}".strip(),
                answered=self.authorization is not None,
            )
        if resp.status == 404 or {"NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN"} & set(codes):
            what = f"no repository {self.ref.repository}" if "NAME_UNKNOWN" in codes else None
            raise Oci2vmError(
                f"{self.ref} not found in registry {self.registry}: {what or not_found()}"
            )
        detail = f": {message}" if message else ""
        raise Oci2vmError(
            f"registry {self.registry} answered HTTP {resp.status} for GET {path}{detail}"
        )

    def missing_manifest(self, reference: str, is_tag: bool) -> str:
        """What to say of a manifest the registry does not have. Registries such as
        distribution 2.x answer MANIFEST_UNKNOWN for an unknown repository too, so the
        tag list tells which is missing (and, for a tag, which tags there are)."""
        missing = f"no {'tag' if is_tag else 'manifest'} {reference}"
        try:
            resp = self.get(f"/v2/{self.ref.repository}/tags/list", {})
        except Oci2vmError:
            return missing
        try:
            body = self._read(resp, MAX_MANIFEST_SIZE, "tag list", f"registry {self.host}")
        finally:
            self.http.release(resp)
        if resp.status == 404 and "NAME_UNKNOWN" in registry_errors(body)[0]:
            return f"no repository {self.ref.repository}"
        try:
            tags = load_json(body, "tag list").get("tags") if resp.status == 200 else None
        except Oci2vmError:
            tags = None
        # Only names that can be tags are listed: another, escaped, would only be noise.
        listed = sorted(
            t for t in (tags if is_tag and isinstance(tags, list) else []) if _is_tag(t)
        )
        if listed:
            more = ", …" if len(listed) > MAX_TAGS_SHOWN else ""
            missing += f" (it has: {', '.join(listed[:MAX_TAGS_SHOWN])}{more})"
        return missing

    def manifest(self, reference: str, expected: str | None) -> tuple[bytes, str | None, str]:
        """The manifest bytes, declared media type and digest; the bytes are checked
        against the digest asked for and the one the registry claims."""
        path = f"/v2/{self.ref.repository}/manifests/{reference}"
        resp = self.get(path, {"Accept": ACCEPT})
        try:
            if resp.status != 200:
                self.fail(resp, path, lambda: self.missing_manifest(reference, not expected))
            data = self._read(resp, MAX_MANIFEST_SIZE, f"manifest {reference}", self.registry)
        finally:
            self.http.release(resp)
        # A registry that serves application/json (or nothing) leaves the kind of
        # document to its mediaType field or its shape.
        content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        media_type = content_type if content_type in KNOWN_MANIFEST_TYPES else None
        if content_type in DOCKER_SCHEMA1 or _schema_version(data) == 1:
            # Its digest is of the payload without the signatures: no use checking it.
            raise Oci2vmError(
                f"manifest {reference} of {self.ref} is a Docker schema 1 manifest, which "
                "is not supported: push the image again with a current docker or skopeo"
            )
        claims = [(expected, "asked for")]
        header = resp.headers.get("Docker-Content-Digest")
        if header:
            claims.append((header.strip(), "by the registry's Docker-Content-Digest"))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        for claimed, by in claims:
            if claimed is None:
                continue
            algorithm = check_digest(claimed, f"digest {by}").split(":", 1)[0]
            got = digest_of(data, algorithm)
            if got != claimed:
                raise Oci2vmError(
                    f"manifest {reference} of {self.ref}: digest mismatch: expected "
                    f"{claimed} ({by}), got {got}"
                )
            digest = claimed
        return data, media_type, digest

    def prefetch(self, descs: Sequence[Descriptor], store: BlobStore, fetch: Fetch) -> None:
        """Download the blobs the cache lacks, PARALLEL_DOWNLOADS connections at a time
        (as Docker does; over a network, one stream rarely fills the line), in stripes
        where the registry answers range requests (sources/downloads.py). The first error
        is raised once the downloads under way have stopped; blobs already complete stay
        cached, verified, and no partial file is left. With fetch.downloads, the
        downloads are only started, there: the build reads the blobs as they arrive."""
        missing = [d for d in descs if getattr(store.get(d.digest), "size", None) != d.size]
        if fetch.downloads is not None:
            self.start_downloads(missing, store, fetch, fetch.downloads)
            return
        if not missing:
            return
        with Downloads(keep_going=True) as downloads:
            self.start_downloads(missing, store, fetch, downloads)
            downloads.finish()

    def start_downloads(
        self, descs: Sequence[Descriptor], store: BlobStore, fetch: Fetch, downloads: Downloads
    ) -> None:
        """Start downloading `descs` in `downloads`' threads, the top layer first (the
        flattener reads the layers top down), each readable as it arrives."""
        for desc in reversed(descs):
            if downloads.arrival(desc.digest) is not None:
                continue  # a layer listed twice
            arrival = store.begin(desc.digest, desc.size, self._what(desc))
            arrival.tail_source = functools.partial(self.tail, desc)
            # Progress counts the bytes that land, however many connections bring them.
            arrival.on_landed = self._bar(desc, fetch)
            arrival.span_source = functools.partial(self.fetch_span, desc, store, arrival)
            arrival.splittable = functools.partial(self._splittable, desc)

            def work(desc: Descriptor = desc, arrival: Arrival = arrival) -> BlobRef:
                return self.download(
                    desc,
                    fetch,
                    lambda body, _: store.fill(arrival, desc.digest, body),
                    stopped=lambda: arrival.failed,
                    bar=False,
                )

            downloads.start(desc.digest, arrival, work)
        downloads.started_all()

    def _splittable(self, desc: Descriptor) -> bool:
        """Whether the registry answers range requests as asked: known from the first
        answer to one (the build's request for a layer's last bytes, or one for its last
        byte; a request that failed tells nothing: that blob comes whole)."""
        if self._ranges is None:
            self.tail(desc, 1)
        return self._ranges is True

    def fetch_span(self, desc: Descriptor, store: BlobStore, arrival: Arrival, span: Span) -> None:
        """Fetch `span` of a blob being downloaded by a Range request, in up to
        BLOB_ATTEMPTS attempts (none once the download failed or stopped); the last span
        to complete commits the blob (BlobStore.fill). A registry that answers a span's
        request otherwise than with the range asked (the whole blob, another range, a
        416) is asked for no more ranges, and the span comes from a whole GET, read past
        the bytes before it (so does the rest of a blob in stripes, as one span)."""
        path = f"/v2/{self.ref.repository}/blobs/{desc.digest}"
        what = self._what(desc)
        peer = f"registry {self.host}"
        for attempt in range(1, BLOB_ATTEMPTS + 1):
            if arrival.failed:
                return
            first, last = span.start, span.end - 1
            ranged = self._ranges is not False
            resp = self.get(path, {"Range": f"bytes={first}-{last}"} if ranged else {})
            whole_span = False
            try:
                asked = resp.status == 206 and _content_range(resp) == (first, last, desc.size)
                if ranged and not asked and resp.status in (200, 206, 416):
                    answer = one_line(resp.headers.get("Content-Range", ""))
                    log.info("%s answered a range request for bytes %d-%d of %s with HTTP %d "
                             "%s: no more blobs in parts", peer, first, last, desc.digest,
                             resp.status, answer)  # fmt: skip
                    self._ranges = False
                    if resp.status != 200:
                        continue  # the same part again, by a whole GET
                if asked:
                    if self._ranges is None:  # (one odd answer is enough to stop asking)
                        self._ranges = True
                elif resp.status != 200:
                    self.fail(resp, path, lambda: f"no blob {desc.digest}")
                body = cast(BinaryIO, self.http.body(resp))
                skip = 0 if asked else first  # the whole blob: pass over what comes before
                while skip > 0:
                    passed = body.read(min(skip, CHUNK))
                    if not passed:
                        raise TruncatedError(f"{what}: truncated: the registry sent fewer bytes")
                    skip -= len(passed)
                store.fill(arrival, desc.digest, body, span=span)
                # A span that another took the end of leaves bytes unread: the connection
                # closes rather than reading them.
                whole_span = asked and span.end == last + 1
                return
            except (HTTPError, TruncatedError) as e:
                err = self._body_error(peer, e, resp)
                if attempt == BLOB_ATTEMPTS or arrival.failed:
                    raise Oci2vmError(f"download of {what} failed: {err}") from e
                log.info("download of bytes %d-%d of %s failed (%s): trying again",
                            first, last, what, err)  # fmt: skip
            finally:
                self.http.release(resp, drain=whole_span)
        raise Oci2vmError(f"download of {what} failed: {peer} answered no request for its bytes")

    def tail(self, desc: Descriptor, n: int) -> bytes | None:
        """The last n bytes of a blob by a Range request (RFC 9110, 14.2), or None when
        the registry does not answer one as asked: the caller then waits for the blob."""
        path = f"/v2/{self.ref.repository}/blobs/{desc.digest}"
        first, last = desc.size - n, desc.size - 1
        peer = f"registry {self.host}"
        try:
            resp = self.get(path, {"Range": f"bytes={first}-{last}"})
        except Oci2vmError as e:
            log.debug("range request for %s failed: %s", desc.digest, e)
            return None
        ok = resp.status == 206 and _content_range(resp) == (first, last, desc.size)
        if not ok and resp.status in (200, 206, 416) and self._ranges is None:
            self._ranges = False  # an answer, not as asked
        try:
            data = self._read(resp, n, "range", peer) if ok else None
            if data is not None and len(data) == n and self._ranges is None:
                self._ranges = True
        except Oci2vmError as e:
            log.debug("range request for %s failed: %s", desc.digest, e)
            data = None
        finally:
            self.http.release(resp, drain=ok)
        return data if data is not None and len(data) == n else None

    def interrupt(self) -> None:
        """Cut the responses under way short (the downloads stop)."""
        self.http.interrupt()

    def _what(self, desc: Descriptor) -> str:
        return f"blob {desc.digest} of {self.registry}/{self.ref.repository}"

    def blob(self, desc: Descriptor, store: BlobStore, fetch: Fetch) -> BlobRef:
        """The blob from the cache (verified as it is read), or downloaded into it once,
        verified. A cache entry of the wrong size is downloaded again. A blob whose
        download fetch.downloads started is read as it arrives."""
        arrival = fetch.downloads.arrival(desc.digest) if fetch.downloads else None
        if arrival is not None:
            return BlobRef(arrival.final, 0, desc.size, desc.digest, cached=True, arrival=arrival)
        cached = store.get(desc.digest)
        if cached is not None and cached.size == desc.size:
            return cached
        what = self._what(desc)
        return self.download(
            desc,
            fetch,
            lambda body, progress: store.put(desc.digest, body, desc.size, progress, what=what),
        )

    def _bar(self, desc: Descriptor, fetch: Fetch) -> ProgressFn | None:
        """A progress bar for the blob, when the caller shows them."""
        if fetch.on_blob is None:
            return None
        kind = "config" if desc.media_type in (OCI_CONFIG, DOCKER_CONFIG) else "layer"
        return fetch.on_blob(f"{kind} {short(desc.digest)}", desc.size)

    def download(
        self,
        desc: Descriptor,
        fetch: Fetch,
        keep: Callable[[BinaryIO, ProgressFn | None], BlobRef],
        stopped: Callable[[], bool] = lambda: False,
        *,
        bar: bool = True,
    ) -> BlobRef:
        """GET a blob and `keep` its body (into the cache, verified), in up to BLOB_ATTEMPTS
        whole attempts when the body breaks off (no more once `stopped()`: the body broke
        off because the downloads were interrupted). bar=False: `keep` shows progress."""
        path = f"/v2/{self.ref.repository}/blobs/{desc.digest}"
        what = self._what(desc)
        shown = self._bar(desc, fetch) if bar else None
        progress = _HighWater(shown) if shown is not None else None
        for attempt in range(1, BLOB_ATTEMPTS + 1):
            if progress is not None:
                progress.restart()
            resp = self.get(path, {})
            complete = False
            try:
                if resp.status != 200:
                    self.fail(resp, path, lambda: f"no blob {desc.digest}")
                body = cast(BinaryIO, self.http.body(resp))  # readinto(), all put() needs
                stored = keep(body, progress)
                complete = True
                return stored
            except (HTTPError, TruncatedError) as e:
                # The body broke off; the partial file is gone (BlobStore.put).
                err = self._body_error(f"registry {self.host}", e, resp)
                if attempt == BLOB_ATTEMPTS or stopped():
                    raise Oci2vmError(f"download of {what} failed: {err}") from e
                log.info("download of %s failed (%s): trying again", what, err)
            finally:
                # (release() reads no more than a small rest: the end of a body whose
                # blob another connection fetches too is not read.)
                self.http.release(resp, drain=complete)
        raise AssertionError("unreachable")


_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20})", re.ASCII)


def _content_range(resp: urllib3.BaseHTTPResponse) -> tuple[int, int, int] | None:
    """first, last and complete length of a Content-Range "bytes F-L/N" header."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if match is None:
        return None
    first, last, total = match.groups()
    return int(first), int(last), int(total)


def _schema_version(data: bytes) -> object:
    """The schemaVersion of a JSON document, or None (parse errors are reported later)."""
    try:
        return load_json(data, "manifest").get("schemaVersion")
    except Oci2vmError:
        return None


class _NotCachedError(Exception):
    """A blob that a cached image names is gone from the cache."""


def _pull_key(ref: Reference, fetch: Fetch) -> str:
    return f"{ref}\n{fetch.platform}"


def cached_image(source: str, ref: Reference, fetch: Fetch, store: BlobStore) -> Image | None:
    """The image an earlier pull of `ref` for the same platform left in the cache, when
    its manifest, config and layers are all still there (read without a registry, as
    docker run takes an image it has; each blob is verified as it is read)."""
    pulled = store.pulled_manifest(_pull_key(ref, fetch))
    manifest = store.get(pulled[0]) if pulled is not None else None
    if pulled is None or manifest is None:
        return None

    def blob(desc: Descriptor) -> BlobRef:
        cached = store.get(desc.digest)
        if cached is None or cached.size != desc.size:
            raise _NotCachedError
        return cached

    try:
        return assemble(
            source=source,
            name=str(ref),
            manifest_bytes=manifest.read_all(MAX_MANIFEST_SIZE),
            manifest_digest=pulled[0],
            manifest_media_type=pulled[1],
            blob=blob,
            what=f"manifest {pulled[0]} of {ref} (cached)",
            platform=fetch.platform,
        )
    except _NotCachedError:
        return None


def resolve(source: str, ref: Reference, fetch: Fetch) -> Image:
    """Pull the manifest of `ref` (choosing fetch.platform from an index) and cache its
    config and layers in fetch.store (or the default cache); with fetch.pull missing or
    never, the image an earlier pull cached is taken as it is."""
    store = fetch.store or BlobStore(BlobStore.default_root())
    if fetch.pull is not PullPolicy.ALWAYS:
        image = cached_image(source, ref, fetch, store)
        if image is not None:
            return image
        if fetch.pull is PullPolicy.NEVER:
            raise Oci2vmError(f"{source} is not in the cache (--pull never: no registry is asked)")
    if fetch.downloads is not None and not fetch.tls_verify:
        # The downloads outlive this call, and the warnings filter below with it: the
        # user asked for no verification, so the warning is off for the whole process.
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    with warnings.catch_warnings():
        if not fetch.tls_verify:
            warnings.simplefilter("ignore", InsecureRequestWarning)
        session = _Session(ref, fetch)
        if fetch.downloads is not None:  # the downloads outlive this call: they close it
            fetch.downloads.on_interrupt(session.interrupt)
            fetch.downloads.on_close(session.close)
        try:
            session.connect()
            data, media_type, digest = session.manifest(ref.reference, ref.digest)
            what = f"manifest of {ref}"
            for _depth in range(MAX_INDEX_DEPTH):
                doc = load_json(data, what)
                if manifest_kind(doc, media_type) == "manifest":
                    image = assemble(
                        source=source,
                        name=str(ref),
                        manifest_bytes=data,
                        manifest_digest=digest,
                        manifest_media_type=media_type,
                        blob=lambda d: session.blob(d, store, fetch),
                        prefetch=lambda descs: session.prefetch(descs, store, fetch),
                        what=what,
                        platform=fetch.platform,
                    )
                    store.remember_pull(_pull_key(ref, fetch), digest, media_type, data)
                    return image
                entries = index_entries(doc, f"image index of {ref}")
                chosen = select_platform(entries, fetch.platform, f"image index of {ref}")
                data, media_type, digest = session.manifest(chosen.digest, chosen.digest)
                media_type = media_type or chosen.media_type or None
                what = f"manifest {chosen.digest} of {ref}"
            raise Oci2vmError(f"image index of {ref}: indexes nested too deeply")
        finally:
            if fetch.downloads is None:
                session.close()
