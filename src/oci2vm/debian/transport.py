"""Reading files of a Debian mirror: http(s) through urllib3, or file:// for a local one.

Which mirror: the --mirror option, else $OCI2VM_DEBIAN_MIRROR, else Debian's official
archive. Nothing read here is trusted: the archive chain (archive.py) verifies every byte.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import BinaryIO

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util.retry import Retry

from oci2vm.errors import Oci2vmError

DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "OCI2VM_DEBIAN_MIRROR"
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
RETRIES = 3
RETRY_STATUSES = (429, 500, 502, 503, 504)


class UnreachableError(Oci2vmError):
    """The mirror could not be reached or did not answer: the cache may serve instead."""


class NotFoundError(Oci2vmError):
    """The mirror answered that the file does not exist."""


def mirror_url(option: str | None = None) -> str:
    """The mirror to use, without a trailing slash."""
    url = option or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise Oci2vmError(
            f"mirror {url!r}: give an http://, https:// or file:// URL, such as {DEFAULT_MIRROR}"
        )
    return url.rstrip("/")


class Mirror:
    """The files of one mirror, by their path under its root (dists/..., pool/...)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = mirror_url(url)
        self._http: urllib3.PoolManager | None = None

    def _pool(self) -> urllib3.PoolManager:
        if self._http is None:
            self._http = urllib3.PoolManager(
                retries=Retry(
                    total=RETRIES, redirect=5, status_forcelist=RETRY_STATUSES,
                    backoff_factor=0.25, raise_on_status=False,
                ),
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            )  # fmt: skip
        return self._http

    def open(self, path: str) -> tuple[BinaryIO, int | None]:
        """A reader of the file at `path` and its size if known; the caller closes it."""
        if ".." in path.split("/") or path.startswith("/") or "://" in path:
            raise Oci2vmError(f"{self.url}: refusing the path {path!r} outside the mirror")
        url = f"{self.url}/{path}"
        if url.startswith("file:"):
            return self._open_file(url)
        try:
            response = self._pool().request("GET", url, preload_content=False)
        except HTTPError as e:
            raise UnreachableError(f"{url}: unreachable ({type(e).__name__})") from e
        if response.status == 200:
            length = response.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else None
            return response, size  # type: ignore[return-value]
        response.release_conn()
        if response.status in (404, 410):
            raise NotFoundError(f"{url}: not found (HTTP {response.status})")
        if response.status in RETRY_STATUSES:
            raise UnreachableError(f"{url}: the mirror answered HTTP {response.status}")
        raise Oci2vmError(f"{url}: HTTP {response.status}: check --mirror")

    @staticmethod
    def _open_file(url: str) -> tuple[BinaryIO, int | None]:
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        try:
            f = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise NotFoundError(f"{url}: not found") from None
        except OSError as e:
            raise UnreachableError(f"{url}: cannot read it ({e.strerror})") from e
        return f, os.fstat(f.fileno()).st_size
