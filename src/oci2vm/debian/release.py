"""A suite's Release file (the signed text of InRelease), as apt reads it: which suite it
is, when it was made and until when it may be used, and the sha256 and size of every index
it lists (Debian's wiki, "DebianRepository/Format")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from oci2vm.debian.control import parse_fields
from oci2vm.errors import Oci2vmError

# apt's Acquire::Max-FutureTime: a Release dated later than this ahead is not valid yet.
MAX_FUTURE = timedelta(seconds=10)
_SHA256_LINE = re.compile(r"^([0-9a-f]{64})\s+([0-9]+)\s+(\S+)$")


@dataclass(frozen=True, slots=True)
class IndexFile:
    """A file the Release lists: its path under dists/SUITE/, sha256 (hex) and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Release:
    suite: str  # "stable", "oldstable", "unstable"...
    codename: str  # "bookworm", "trixie", "sid"...
    date: datetime
    valid_until: datetime | None
    architectures: tuple[str, ...]
    components: tuple[str, ...]
    by_hash: bool  # Acquire-By-Hash: indices may be fetched by their hash
    files: dict[str, IndexFile]

    def names(self, suite: str) -> bool:
        """Whether this is the Release of `suite` (a codename or a suite name)."""
        return suite in (self.suite, self.codename)


def _date(value: str | None, field: str, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Oci2vmError(f"{what}: malformed {field} {value!r}")
    return parsed.astimezone(UTC)


def _files(text: str, what: str) -> dict[str, IndexFile]:
    files: dict[str, IndexFile] = {}
    for line in text.splitlines():
        match = _SHA256_LINE.match(line.strip())
        if match is None:
            if line.strip():
                raise Oci2vmError(f"{what}: malformed SHA256 line {line.strip()[:80]!r}")
            continue
        files[match[3]] = IndexFile(match[3], match[1], int(match[2]))
    return files


def parse_release(text: bytes, what: str) -> Release:
    """The Release fields apt checks; a Release without SHA256 sums is refused (apt no
    longer trusts MD5 or SHA1 alone)."""
    fields = parse_fields(text, what)
    if "SHA256" not in fields:
        raise Oci2vmError(f"{what}: lists no SHA256 sums: use a mirror of a current archive")
    date = _date(fields.get("Date"), "Date", what)
    if date is None:
        raise Oci2vmError(f"{what}: has no Date field")
    return Release(
        suite=fields.get("Suite", ""),
        codename=fields.get("Codename", ""),
        date=date,
        valid_until=_date(fields.get("Valid-Until"), "Valid-Until", what),
        architectures=tuple(fields.get("Architectures", "").split()),
        components=tuple(fields.get("Components", "").split()),
        by_hash=fields.get("Acquire-By-Hash", "no").lower() == "yes",
        files=_files(fields["SHA256"], what),
    )


def check_release(
    release: Release, suite: str, now: datetime, *, allow_expired: bool, what: str
) -> None:
    """Refuse a Release as apt does: one of another suite (a mirror answering with the
    wrong, maybe older, suite), one not valid yet, and one past its Valid-Until unless
    `allow_expired` (snapshot mirrors keep a suite's Release long after it expired)."""
    if not release.names(suite):
        found = release.codename or release.suite or "an unnamed suite"
        raise Oci2vmError(f"{what}: is the Release of {found}, not {suite}: check --mirror")
    if release.date > now + MAX_FUTURE:
        raise Oci2vmError(
            f"{what}: dated {release.date:%Y-%m-%d %H:%M} UTC, in the future: "
            "check this machine's clock"
        )
    if release.valid_until is not None and release.valid_until < now and not allow_expired:
        raise Oci2vmError(
            f"{what}: expired on {release.valid_until:%Y-%m-%d %H:%M} UTC (Valid-Until): "
            "use an up-to-date --mirror, or accept it with --allow-expired-release"
        )
