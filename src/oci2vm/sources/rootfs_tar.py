"""tar:PATH: a root filesystem tarball, such as `docker export` writes (gzip, zstd, xz,
bzip2 or plain, as docker import reads it). It is one layer with no config and no digest
to check against; its digest is computed while it is read and reported."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, regular_file_size
from oci2vm.image.model import Image, Layer, empty_config

if TYPE_CHECKING:
    from oci2vm.sources.base import Fetch


def resolve(source: str, path: Path, fetch: Fetch) -> Image:
    if not os.path.lexists(path):
        raise Oci2vmError(f"{path}: no such file")
    size = regular_file_size(path)
    if size == 0:
        raise Oci2vmError(f"{path}: is empty, not a root filesystem tarball")
    blob = BlobRef(path, 0, size, None)
    name = path.name
    for suffix in (".gz", ".tgz", ".zst", ".xz", ".txz", ".bz2", ".tbz2", ".tar"):
        name = name.removesuffix(suffix)
    return Image(
        source=source,
        name=name or "rootfs",
        manifest_digest=None,
        manifest_media_type=None,
        config_digest=None,
        config=empty_config(fetch.platform),
        layers=(Layer(blob, None, "", None, rootfs=True),),
    )
