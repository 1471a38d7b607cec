"""Options every source takes (kept apart from the dispatcher so that sources can
import it without importing each other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oci2vm.config import Config, PullPolicy
from oci2vm.image.blobs import BlobStore, ProgressFn
from oci2vm.image.model import Platform
from oci2vm.sources.downloads import Downloads


@dataclass(frozen=True, slots=True)
class Fetch:
    """How to fetch: the options that every source may need."""

    platform: Platform = field(default_factory=Platform)
    store: BlobStore | None = None
    creds: str | None = None  # USER:PASS
    tls_verify: bool = True  # false: not for the source's registry (its host)
    insecure_hosts: tuple[str, ...] = ()  # other hosts with TLS unverified, plain HTTP allowed
    network_timeout: float = 60.0  # seconds a response may go without progress
    pull: PullPolicy = PullPolicy.ALWAYS  # when a registry is asked for the manifest
    auth_file: Path | None = None
    quiet: bool = True
    # Called as (what, total bytes or None) when a blob download starts; returns the
    # per-chunk callback that advances its progress bar.
    on_blob: Callable[[str, int | None], ProgressFn] | None = None
    # Where a registry starts its layer downloads and returns at once, the layers then
    # read as they arrive (a build); None: every blob is in the cache on return.
    downloads: Downloads | None = None


def fetch_from(
    config: Config,
    store: BlobStore | None,
    *,
    quiet: bool = True,
    on_blob: Callable[[str, int | None], ProgressFn] | None = None,
    downloads: Downloads | None = None,
) -> Fetch:
    """The fetch options a build's Config gives, for its image or another it reads (a
    kernel image)."""
    return Fetch(
        platform=config.platform,
        store=store,
        creds=config.creds,
        auth_file=config.auth_file,
        tls_verify=config.tls_verify,
        insecure_hosts=config.insecure_hosts,
        network_timeout=config.network_timeout,
        pull=config.pull,
        quiet=quiet,
        on_blob=on_blob,
        downloads=downloads,
    )
