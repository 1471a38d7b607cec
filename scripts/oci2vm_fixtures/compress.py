"""Layer blobs: a layer's uncompressed tar, its diff ID, and the blob compressed per its OCI
media type (plain tar, gzip with mtime 0, zstd level 3), deterministically."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .tarwriter import HashingWriter, file_chunks

MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZIP = MT_TAR + "+gzip"
MT_ZSTD = MT_TAR + "+zstd"


@dataclass
class Layer:
    tar: Path  # uncompressed tar
    diff_id: str
    blob: Path  # as stored in the OCI layout (compressed per media_type)
    digest: str
    size: int
    media_type: str
    created_by: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def compress_layer(tar: Path, media_type: str, created_by: str, diff_id: str = "") -> Layer:
    """Compress `tar` next to itself per `media_type`, deterministically (gzip mtime 0)."""
    diff_id = diff_id or sha256_file(tar)
    if media_type == MT_TAR:
        return Layer(tar, diff_id, tar, diff_id, tar.stat().st_size, media_type, created_by)
    blob = tar.with_suffix(".gz" if media_type == MT_GZIP else ".zst")
    with open(blob, "wb") as raw:
        sink = HashingWriter(raw)
        if media_type == MT_GZIP:
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6
            ) as gz:
                for chunk in file_chunks(tar):
                    gz.write(chunk)
        elif media_type == MT_ZSTD:
            import zstandard

            with open(tar, "rb") as source:
                zstandard.ZstdCompressor(level=3).copy_stream(source, sink)  # type: ignore[arg-type]
        else:
            raise ValueError(media_type)
    return Layer(tar, diff_id, blob, sink.digest, sink.count, media_type, created_by)
