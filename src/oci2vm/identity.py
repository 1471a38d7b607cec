"""What makes a build deterministic: UUIDs, seeds and timestamps derived from the image's
digest (and SOURCE_DATE_EPOCH), never from the clock or a random source."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from oci2vm.errors import Oci2vmError
from oci2vm.image.model import Image

# Namespace for the UUIDs derived from an image's identity (random, fixed forever).
UUID_NAMESPACE = uuid.UUID("5f0f6c43-1b7e-4c55-9d0e-3f6f3c8a3a21")


@dataclass(frozen=True, slots=True)
class Identity:
    """Derived from the image's digests: the same image and options give the same bytes."""

    digest: str  # the image ID, or the digest of a rootfs tarball
    fs_uuid: uuid.UUID
    hash_seed: uuid.UUID
    fs_time: int  # seconds since the epoch, for filesystem timestamps
    # What the disk's own identifiers (disk GUID, PARTUUIDs, MBR signature, the ESP's
    # serial) derive from: the digest, and the --uuid given, so that two disks of one
    # image told apart by --uuid are apart in every identifier (attached to one VM).
    seed: str = ""

    @property
    def disk_seed(self) -> str:
        return self.seed or self.digest

    def derive(self, label: str) -> uuid.UUID:
        return uuid.uuid5(UUID_NAMESPACE, f"{self.disk_seed}:{label}")


def image_identity(image: Image, fs_uuid: str | None = None) -> Identity:
    """The identity of a build of `image`; `fs_uuid` (--uuid) overrides the derived one."""
    digest = image.config_digest
    if digest is None:
        # A rootfs tarball: its digest is its identity (one extra read, cached by the OS).
        digest = image.layers[0].blob.compute_digest()
    derived = uuid.uuid5(UUID_NAMESPACE, f"{digest}:fs")
    if fs_uuid:
        try:
            derived = uuid.UUID(fs_uuid)
        except ValueError as e:
            raise Oci2vmError(f"malformed --uuid {fs_uuid!r}: {e}") from e
    return Identity(
        digest=digest,
        fs_uuid=derived,
        hash_seed=uuid.uuid5(UUID_NAMESPACE, f"{digest}:hash-seed"),
        fs_time=fs_time(image),
        seed=f"{digest}:uuid={derived}" if fs_uuid else digest,
    )


def fs_time(image: Image) -> int:
    """SOURCE_DATE_EPOCH when set, else the image's creation time, else 0. A creation time
    without an offset is UTC (the host's TZ must not change the bytes), and one before 1970
    is no date at all (Go's zero time, 0001-01-01, is what go-containerregistry writes when
    none was given)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        # The reproducible-builds spec's form: a decimal count of seconds since 1970.
        if not epoch.isascii() or not epoch.isdigit():
            raise Oci2vmError(f"malformed SOURCE_DATE_EPOCH {epoch!r}: expected seconds since 1970")
        return int(epoch)
    created = image.config.created
    if created:
        try:
            when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return 0
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0, int(when.timestamp()))
    return 0
