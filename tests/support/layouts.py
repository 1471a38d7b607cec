"""OCI images built inside tests, every byte known to the test, and the one writer that
puts them in an OCI image layout directory.

A layer is a list of Members (tar entries made with file, directory, symlink, hardlink,
whiteout, opaque) or raw tar bytes. build_image turns layers into an in-memory image,
build_index groups images into an index, and write_layout writes them:

    write_layout(path, [layer, ...])                 # one image tagged "latest"
    write_layout(path, {"app": image, "multi": index})  # several, each under its tag
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

OCI_LAYOUT = '{"imageLayoutVersion": "1.0.0"}'
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- tar entries ---------------------------------------------------------------------


@dataclass
class Member:
    info: tarfile.TarInfo
    data: bytes = b""


def _info(name: str, kind: bytes, mode: int, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.mtime = int(kw.pop("mtime", 1_700_000_000))  # type: ignore[call-overload]
    ti.uid = int(kw.pop("uid", 0))  # type: ignore[call-overload]
    ti.gid = int(kw.pop("gid", 0))  # type: ignore[call-overload]
    pax = kw.pop("pax", None)
    if pax:
        ti.pax_headers = dict(pax)  # type: ignore[call-overload]
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def file(name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> Member:
    ti = _info(name, tarfile.REGTYPE, mode, **kw)
    ti.size = len(data)
    return Member(ti, data)


def directory(name: str, mode: int = 0o755, **kw: object) -> Member:
    return Member(_info(name, tarfile.DIRTYPE, mode, **kw))


def symlink(name: str, target: str, **kw: object) -> Member:
    return Member(_info(name, tarfile.SYMTYPE, 0o777, linkname=target, **kw))


def hardlink(name: str, target: str, **kw: object) -> Member:
    return Member(_info(name, tarfile.LNKTYPE, 0o644, linkname=target, **kw))


def whiteout(path: str) -> Member:
    head, _, base = path.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}", mode=0o600)


def opaque(dirpath: str) -> Member:
    return file(f"{dirpath}/.wh..wh..opq", mode=0o600)


def layer_tar(members: Sequence[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(m.info, io.BytesIO(m.data) if m.data else None)
    return buf.getvalue()


Layer = Sequence[Member] | bytes


# --- images in memory ------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    """A single-platform image: its manifest, config and layer blobs."""

    platform: str
    media_type: str
    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]  # the blobs, compressed as the manifest says
    diff_ids: tuple[str, ...]

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(sha256(b) for b in self.layers)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(b): b for b in (self.config, *self.layers)}

    def descriptor(self) -> dict[str, Any]:
        os_, arch, *variant = self.platform.split("/")
        platform = {"architecture": arch, "os": os_} | ({"variant": variant[0]} if variant else {})
        return {
            "mediaType": self.media_type,
            "digest": self.manifest_digest,
            "size": len(self.manifest),
            "platform": platform,
        }


@dataclass(frozen=True)
class BuiltIndex:
    media_type: str
    index: bytes
    images: tuple[BuiltImage, ...]

    @property
    def digest(self) -> str:
        return sha256(self.index)


def _compress(raw: bytes, compression: str, docker: bool) -> tuple[bytes, str]:
    if docker:
        if compression != "gzip":
            raise ValueError("Docker's media types here are for gzip layers only")
        return gzip.compress(raw, mtime=0), DOCKER_LAYER_GZIP
    if compression == "gzip":
        return gzip.compress(raw, mtime=0), OCI_LAYER + "+gzip"
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(raw), OCI_LAYER + "+zstd"
    if compression == "none":
        return raw, OCI_LAYER
    if compression == "xz":  # what no runtime reads, under a media type the bytes belie
        return lzma.compress(raw), OCI_LAYER + "+gzip"
    raise ValueError(f"unknown compression {compression!r}")


def build_image(
    layers: Sequence[Layer],
    *,
    compression: str | Sequence[str] = "gzip",
    config: Mapping[str, object] | None = None,
    platform: str = "linux/amd64",
    created: str | None = None,
    docker: bool = False,
) -> BuiltImage:
    """An image of `layers` (members or raw tar bytes), each compressed as `compression`
    says (one for all, or one per layer: gzip, zstd, none); OCI media types, or Docker's
    v2 schema 2 ones."""
    os_, arch, *variant = platform.split("/")
    comps = [compression] * len(layers) if isinstance(compression, str) else list(compression)
    blobs, descriptors, diff_ids = [], [], []
    for layer, comp in zip(layers, comps, strict=True):
        raw = layer if isinstance(layer, bytes) else layer_tar(layer)
        diff_ids.append(sha256(raw))
        blob, media_type = _compress(raw, comp, docker)
        blobs.append(blob)
        descriptors.append({"mediaType": media_type, "digest": sha256(blob), "size": len(blob)})
    config_doc: dict[str, Any] = {
        "architecture": arch,
        "os": os_,
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    if variant:
        config_doc["variant"] = variant[0]
    if created is not None:
        config_doc["created"] = created
    config_bytes = json.dumps(config_doc, sort_keys=True).encode()
    media_type, config_type = (
        (DOCKER_MANIFEST, DOCKER_CONFIG) if docker else (OCI_MANIFEST, OCI_CONFIG)
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": config_type,
                "digest": sha256(config_bytes),
                "size": len(config_bytes),
            },
            "layers": descriptors,
        },
        sort_keys=True,
    ).encode()
    return BuiltImage(platform, media_type, manifest, config_bytes, tuple(blobs), tuple(diff_ids))


def build_index(images: Sequence[BuiltImage], *, docker: bool = False) -> BuiltIndex:
    media_type = DOCKER_LIST if docker else OCI_INDEX
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [i.descriptor() for i in images],
        },
        sort_keys=True,
    ).encode()
    return BuiltIndex(media_type, index, tuple(images))


# --- the layout on disk ----------------------------------------------------------------


@dataclass
class OciLayout:
    """A written layout: where it is and what it holds under each tag. The digests are
    those of its only image (for the common one-image layout)."""

    path: Path
    tags: dict[str, BuiltImage | BuiltIndex] = field(default_factory=dict)

    @property
    def image(self) -> BuiltImage:
        (item,) = self.tags.values()
        assert isinstance(item, BuiltImage), "the layout holds an index, not one image"
        return item

    @property
    def manifest_digest(self) -> str:
        return self.image.manifest_digest

    @property
    def config_digest(self) -> str:
        return self.image.config_digest

    @property
    def diff_ids(self) -> list[str]:
        return list(self.image.diff_ids)

    @property
    def layer_digests(self) -> list[str]:
        return list(self.image.layer_digests)


def write_layout(
    path: Path,
    images: Sequence[Layer] | Mapping[str, BuiltImage | BuiltIndex],
    *,
    tag: str = "latest",
    compression: str | Sequence[str] = "gzip",
    config: Mapping[str, object] | None = None,
    platform: str = "linux/amd64",
) -> OciLayout:
    """Write an OCI image layout at `path`: one image built from a list of layers (tagged
    `tag`; compression, config and platform as build_image takes them), or the built
    images and indexes of a {tag: image} mapping."""
    if isinstance(images, Mapping):
        tags = dict(images)
    else:
        tags = {tag: build_image(images, compression=compression, config=config, platform=platform)}
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(digest: str, data: bytes) -> None:
        (blobs / digest.split(":")[1]).write_bytes(data)

    entries = []
    for name, item in tags.items():
        for image in item.images if isinstance(item, BuiltIndex) else (item,):
            for digest, data in {**image.blobs, image.manifest_digest: image.manifest}.items():
                put(digest, data)
        if isinstance(item, BuiltIndex):
            put(item.digest, item.index)
            desc = {"mediaType": item.media_type, "digest": item.digest, "size": len(item.index)}
        else:
            desc = {k: v for k, v in item.descriptor().items() if k != "platform"}
        desc["annotations"] = {REF_NAME: name}
        entries.append(desc)
    (path / "oci-layout").write_text(OCI_LAYOUT)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    (path / "index.json").write_text(json.dumps(index))
    return OciLayout(path, tags)
