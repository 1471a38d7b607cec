"""HTTP for the registry source: which hosts may be spoken to in clear, redirects checked
hop by hop, and a progress deadline on every response.

TLS is verified for every host but those the user named (the source's registry with
--tls-verify=false, and each --insecure-host); plain HTTP is spoken only with those, so
no password or token ever travels in clear to a host the user did not name. Socket
timeouts bound each read, not a response: a server that trickles a byte every few
seconds never trips them, so a watchdog shuts down a connection that brought less than
PROGRESS_BYTES within the network timeout.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import socket
import ssl
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from oci2vm.errors import Oci2vmError
from oci2vm.util.text import shown

# Retries of one request, after 0, 2·BACKOFF, 4·BACKOFF … s (at most BACKOFF_MAX); a
# Retry-After header is obeyed up to RETRY_AFTER_MAX s. With the deadlines below, this
# bounds the time one request can take.
RETRIES = 3
BACKOFF = 0.25
BACKOFF_MAX = 8.0
RETRY_AFTER_MAX = 10.0
RETRY_STATUSES = (429, 500, 502, 503, 504)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 15.0
DEFAULT_NETWORK_TIMEOUT = 60.0
# The least a response must bring within the network timeout to count as progress.
PROGRESS_BYTES = 64 << 10


class _Retry(Retry):
    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), RETRY_AFTER_MAX)


def _retry() -> Retry:
    return _Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        other=0,  # TLS failures do not heal by themselves
        redirect=False,  # followed by Transport.open, hop by hop
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=BACKOFF,
        backoff_max=BACKOFF_MAX,
        raise_on_status=False,
    )


class HopError(HTTPError):
    """A request that failed at a host a redirect led to, in another origin than the
    one asked: `target` (host[:port]) names it, `error` is what failed."""

    def __init__(self, target: str, error: HTTPError) -> None:
        super().__init__(f"{target}: {error}")
        self.target = target
        self.error = error


def redirected_peer(target: str, peer: str) -> str:
    """How messages name a host that `peer` ("registry HOST") redirected us to."""
    return f"host {target} (reached by a redirect from {peer})"


def host_of(url_or_host: str) -> str:
    """The host name of a URL or of host[:port], lower case, without the port."""
    text = url_or_host if "://" in url_or_host else f"//{url_or_host}"
    return (parse_url(text).host or "").lower()


# --- the progress deadline ---------------------------------------------------------------


class Watch:
    """One response's deadline: PROGRESS_BYTES or the end must arrive within `timeout`
    seconds of the request or of the last progress, or its socket is shut down."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def progress(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shut()

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            # The plain socket's shutdown, also for a TLS socket: it wakes a reader
            # blocked in another thread, and leaves the TLS state alone.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class Watchdog:
    """Expires the watches whose deadline passed, from a thread of its own."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current = threading.local()  # the watch of this thread's request

    def start(self) -> Watch:
        """A watch for a request about to be made by this thread."""
        watch = Watch(self.timeout)
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
        self.current.watch = watch
        return watch

    def end(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def expire_all(self) -> None:
        """Shut every watched response down now (the downloads stop)."""
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.expire()

    def _run(self) -> None:
        interval = min(1.0, self.timeout / 4)
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                late = [w for w in self._watches if w.deadline < now and not w.expired]
            for watch in late:
                watch.expire()


def _attach(watchdog: Watchdog | None, sock: socket.socket | None) -> None:
    """Hand the socket about to read a response to the watch of this thread's request."""
    watch: Watch | None = getattr(watchdog.current, "watch", None) if watchdog else None
    if watch is not None:
        watch.attach(sock)


class _WatchedHTTPConnection(HTTPConnection):
    """A connection whose responses are watched (each Transport subclasses it with its
    own watchdog)."""

    watchdog: Watchdog | None = None

    def getresponse(self) -> Any:
        _attach(self.watchdog, self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    watchdog: Watchdog | None = None

    def getresponse(self) -> Any:
        _attach(self.watchdog, self.sock)
        return super().getresponse()


# --- the transport -------------------------------------------------------------------------


def _ssl_context(verify: bool) -> ssl.SSLContext:
    """The system's CA bundle (or certifi's, where the system has none), or no
    verification at all."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()
    paths = ssl.get_default_verify_paths()
    if not (paths.cafile or paths.capath):
        try:
            certifi = importlib.import_module("certifi")
        except ImportError:
            pass
        else:
            ctx.load_verify_locations(cafile=certifi.where())
    return ctx


class Transport:
    """GET and POST with the policy above. `insecure` holds the host names (no ports)
    whose TLS is not verified and that may be spoken to over plain HTTP."""

    def __init__(
        self, insecure: Iterable[str], *, network_timeout: float, connections: int
    ) -> None:
        self.insecure = frozenset(host_of(h) for h in insecure)
        self.network_timeout = network_timeout
        self.watchdog = Watchdog(network_timeout)
        self._watches: weakref.WeakKeyDictionary[urllib3.BaseHTTPResponse, Watch] = (
            weakref.WeakKeyDictionary()
        )
        # The host[:port] that answered, for a response a redirect brought from another
        # origin: its status and errors are that host's, not the one asked.
        self._targets: weakref.WeakKeyDictionary[urllib3.BaseHTTPResponse, str] = (
            weakref.WeakKeyDictionary()
        )
        self._pools = {verify: self._pool_manager(verify, connections) for verify in (True, False)}

    def _pool_manager(self, verify: bool, connections: int) -> urllib3.PoolManager:
        mine = {"watchdog": self.watchdog}
        http_conn = type("_Conn", (_WatchedHTTPConnection,), mine)
        https_conn = type("_SConn", (_WatchedHTTPSConnection,), mine)
        manager = urllib3.PoolManager(
            num_pools=4,
            maxsize=connections,  # connections kept per host
            retries=_retry(),
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=self.network_timeout),
            ssl_context=_ssl_context(verify),
            cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        )
        manager.pool_classes_by_scheme = {
            "http": type("_Pool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("_SPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }
        return manager

    def close(self) -> None:
        for manager in self._pools.values():
            manager.clear()
        self.watchdog.close()

    def interrupt(self) -> None:
        """Wake every thread reading a response, with an error (they stop)."""
        self.watchdog.expire_all()

    def verifies(self, url: str) -> bool:
        return host_of(url) not in self.insecure

    def check_url(self, url: str, peer: str, via: str) -> None:
        """Refuse a URL that is not http(s), or plain HTTP to a host not allowed it; `via`
        says how we came to it ("" for the URL asked for)."""
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        url_shown = _without_query(url)
        if scheme not in ("http", "https"):
            raise Oci2vmError(
                f"{peer} {via or 'is at'} {url_shown}: only https:// and http:// are followed"
            )
        host = host_of(url)
        if scheme == "http" and host not in self.insecure:
            where = f"{via} {url_shown}, which is" if via else f"is at {url_shown},"
            raise Oci2vmError(
                f"{peer} {where} plain HTTP: credentials and tokens would travel in clear; "
                f"if you trust the network to {host}, pass --insecure-host {host}"
            )

    def open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        peer: str,
        body: bytes | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send the request and follow redirects (the Authorization header stays with the
        origin it was meant for); the response's body is read with read() or body().
        Transport failures raise urllib3's HTTPError; policy failures Oci2vmError."""
        watch = self.watchdog.start()
        try:
            return self._follow(method, url, headers, peer, body, watch)
        except BaseException:
            self.watchdog.end(watch)
            raise

    def _follow(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        peer: str,
        body: bytes | None,
        watch: Watch,
    ) -> urllib3.BaseHTTPResponse:
        """open()'s hops, all under one watch: the deadline holds to the last byte of
        the response a redirect leads to."""
        headers = dict(headers)
        origin = _origin(url)
        via = ""
        for _hop in range(MAX_REDIRECTS + 1):
            self.check_url(url, peer, via)
            target = _host_port(url) if _origin(url) != origin else None
            try:
                resp = self._pools[self.verifies(url)].request(
                    method,
                    url,
                    body=body,
                    headers=headers,
                    preload_content=False,
                    decode_content=False,  # digests are of the bytes as stored
                    redirect=False,
                )
            except HTTPError as e:
                if target is None:
                    raise
                raise HopError(target, e) from e
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or not location:
                self._watches[resp] = watch
                if target is not None:
                    self._targets[resp] = target
                return resp
            # Not release(), which would end the watch: the next hop is under it too.
            self._give_back(resp)
            # That socket is back in the pool, another request's to use: not ours to shut.
            watch.attach(None)
            watch.progress()  # an answer: the next hop has the whole timeout too
            url = _next_hop(url, location, peer)
            via = "redirected us to"
            if _origin(url) != origin:
                headers.pop("Authorization", None)
            if resp.status == 303:
                method, body = "GET", None
        raise Oci2vmError(f"{peer} redirected us more than {MAX_REDIRECTS} times")

    def redirected(self, resp: urllib3.BaseHTTPResponse) -> str | None:
        """The host[:port] that sent `resp`, when a redirect led to another origin."""
        return self._targets.get(resp)

    def expired(self, resp: urllib3.BaseHTTPResponse | None = None) -> bool:
        """Whether the deadline of `resp` (or of this thread's last request) passed."""
        watch = self._watches.get(resp) if resp is not None else None
        if watch is None:
            watch = getattr(self.watchdog.current, "watch", None)
        return watch is not None and watch.expired

    def read(self, resp: urllib3.BaseHTTPResponse, limit: int) -> bytes | None:
        """The whole body, or None when it is larger than `limit` bytes."""
        watch = self._watches.get(resp)
        data = bytearray()
        while chunk := resp.read(PROGRESS_BYTES):
            data += chunk
            if watch is not None:
                watch.progress()
            if len(data) > limit:
                return None
        return bytes(data)

    def body(self, resp: urllib3.BaseHTTPResponse) -> _Body:
        """The body as a file whose reads count as progress."""
        return _Body(resp, self._watches.get(resp))

    def release(self, resp: urllib3.BaseHTTPResponse, *, drain: bool = True) -> None:
        """Give the connection back (see _give_back) and end the response's watch."""
        watch = self._watches.pop(resp, None)
        try:
            self._give_back(resp, drain=drain)
        finally:
            if watch is not None:
                self.watchdog.end(watch)

    @staticmethod
    def _give_back(resp: urllib3.BaseHTTPResponse, *, drain: bool = True) -> None:
        """Give the connection back, reading what is left of a small body first (unread
        bytes would garble the next response), or close it (a body not worth reading)."""
        try:
            remaining = resp.length_remaining
            if drain and remaining is not None and remaining <= PROGRESS_BYTES:
                resp.drain_conn()
            else:
                resp.close()
        except (HTTPError, OSError):
            resp.close()
        finally:
            resp.release_conn()


class _Body:
    """A response body read as it comes: each read returns what one read of the socket
    brought (up to the size asked, so that a fast response takes few calls, each one a
    handover of the GIL that a build's threads wait for). Progress is counted per
    PROGRESS_BYTES brought, not per read: a server trickling a byte at a time makes none."""

    def __init__(self, resp: urllib3.BaseHTTPResponse, watch: Watch | None) -> None:
        self._resp = resp
        self._watch = watch
        self._unaccounted = 0  # bytes brought since the last progress

    def _brought(self, n: int) -> None:
        self._unaccounted += n
        if self._watch is not None and self._unaccounted >= PROGRESS_BYTES:
            self._watch.progress()
            self._unaccounted = 0

    def readinto(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer)
        data = self._resp.read1(len(view)) if view else b""
        view[: len(data)] = data
        self._brought(len(data))
        return len(data)

    def read(self, size: int) -> bytes:
        data = self._resp.read1(size) if size else b""
        self._brought(len(data))
        return data


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = parse_url(url)
    return (parts.scheme or "", (parts.host or "").lower(), parts.port)


def _host_port(url: str) -> str:
    """host[:port] of a URL (not its netloc, which may hold a user and password)."""
    parts = parse_url(url)
    host = (parts.host or "").lower()
    return f"{host}:{parts.port}" if parts.port is not None else host


def _without_query(url: str) -> str:
    """A URL as shown in messages: presigned storage URLs carry credentials in the query
    (cut off by hand when the URL does not parse), a URL may carry a user and password,
    and a header anything at all."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        return shown(urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")))
    except ValueError:
        return shown(hide_query(url))


_URL_SECRETS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s/?#@]*@)?([^\s?#]*)(?:[?#]\S*)?")


def hide_query(text: str) -> str:
    """`text` (an error's, which may quote a URL) with each URL's query, fragment and
    user cut off."""
    return _URL_SECRETS.sub(r"\1\2", text)


def _next_hop(url: str, location: str, peer: str) -> str:
    """The URL a redirect from `url` to `location` leads to, checked as urllib3 will
    read it, or an error that shows it without its query."""
    try:
        target = urllib.parse.urljoin(url, location)
        parse_url(target)
        _ = urllib.parse.urlsplit(target).port  # a port out of range raises
    except ValueError:  # urllib3's LocationParseError is one; its text holds the query
        raise Oci2vmError(
            f"{peer} redirected us to {_without_query(location)}, which is not a valid URL"
        ) from None
    return target
