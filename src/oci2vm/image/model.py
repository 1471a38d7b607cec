"""Image records: manifest, config and layers, parsed and checked, whatever the source.

Follows the OCI image spec (image-index, image-manifest, config) and Docker's
v2 schema 2 manifest and manifest list, which differ only in media types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oci2vm.arch import Arch
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, check_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
)


@dataclass(frozen=True, slots=True)
class Platform:
    """An OCI platform as images name it: any architecture an image may be built for (a
    build turns the architecture into an Arch, which says whether a disk can boot it)."""

    os: str = "linux"
    architecture: str = Arch.default().value
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise Oci2vmError(f"malformed platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: Platform) -> bool:
        """Whether an image for `other` serves a request for self (variant optional)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if not self.variant or not other.variant:
            return True
        return self.variant == other.variant


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What a runtime takes from the image config (the `config` object and rootfs)."""

    platform: Platform
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    env: tuple[str, ...]
    working_dir: str
    user: str
    labels: dict[str, str]
    exposed_ports: tuple[str, ...]
    stop_signal: str
    diff_ids: tuple[str, ...]
    created: str


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer: the blob as stored (perhaps compressed) and its diff_id (the digest of
    the uncompressed tar, from the config; None for a rootfs tarball)."""

    blob: BlobRef
    digest: str | None
    media_type: str
    diff_id: str | None

    @property
    def size(self) -> int:
        return self.blob.size


@dataclass(frozen=True, slots=True)
class Image:
    """A resolved image: everything needed to flatten it, all blobs located."""

    source: str  # what the user typed
    name: str  # a reference or a file name, for hostnames and messages
    manifest_digest: str | None  # None where no manifest exists (docker save, rootfs tar)
    manifest_media_type: str | None
    config_digest: str | None  # the image ID; None for a rootfs tarball
    config: ImageConfig
    layers: tuple[Layer, ...]


def _load(data: bytes, what: str, kind: type[Any], kind_name: str) -> Any:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Oci2vmError(f"malformed {what}: not valid JSON ({e})") from e
    if not isinstance(doc, kind):
        raise Oci2vmError(f"malformed {what}: expected a JSON {kind_name}")
    return doc


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or a one-line error naming `what`."""
    doc: dict[str, Any] = _load(data, what, dict, "object")
    return doc


def load_json_list(data: bytes, what: str) -> list[Any]:
    """A JSON list, or a one-line error naming `what`."""
    doc: list[Any] = _load(data, what, list, "list")
    return doc


def _str(doc: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise Oci2vmError(f"malformed {what}: {key!r} must be a string")
    return value


def parse_descriptor(doc: Any, what: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise Oci2vmError(f"malformed {what}: a descriptor must be an object")
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Oci2vmError(f"malformed {what}: descriptor size must be a non-negative integer")
    platform = None
    p = doc.get("platform")
    if isinstance(p, dict):
        platform = Platform(
            str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", ""))
        )
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise Oci2vmError(f"malformed {what}: annotations must be an object")
    return Descriptor(
        media_type=_str(doc, "mediaType", what, ""),
        digest=check_digest(_str(doc, "digest", what), f"{what} digest"),
        size=size,
        platform=platform,
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def manifest_kind(doc: dict[str, Any], declared: str | None = None) -> str:
    """'index' or 'manifest', from the mediaType field, the declared content type, or
    the shape of the document."""
    media_type = doc.get("mediaType") or declared or ""
    if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise Oci2vmError(
            "Docker schema 1 manifests are not supported (deprecated since 2017): "
            "push the image again with a current client"
        )
    if media_type in INDEX_TYPES or (not media_type and "manifests" in doc):
        return "index"
    if media_type in MANIFEST_TYPES or (not media_type and "layers" in doc):
        return "manifest"
    raise Oci2vmError(f"unsupported manifest media type {media_type!r}")


def index_entries(doc: dict[str, Any], what: str = "index") -> list[Descriptor]:
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise Oci2vmError(f"malformed {what}: 'manifests' must be a list")
    return [parse_descriptor(m, what) for m in manifests]


def select_platform(entries: Sequence[Descriptor], platform: Platform, what: str) -> Descriptor:
    """Choose the manifest for `platform` from an index. Attestation manifests
    (platform unknown/unknown) are never chosen. An entry without a platform is taken
    only when it is the sole candidate."""
    candidates = [d for d in entries if d.platform is not None and platform.matches(d.platform)]
    if candidates:
        # Prefer an exact variant match over a variant-less one.
        exact = [d for d in candidates if d.platform and d.platform.variant == platform.variant]
        return (exact or candidates)[0]
    bare = [d for d in entries if d.platform is None]
    if len(bare) == 1 and len(entries) == 1:
        return bare[0]
    have = sorted({str(d.platform) for d in entries if d.platform} - {"unknown/unknown"})
    raise Oci2vmError(
        f"{what} has no manifest for platform {platform}"
        + (f" (it has: {', '.join(have)})" if have else "")
    )


def parse_manifest(
    doc: dict[str, Any], what: str = "manifest"
) -> tuple[Descriptor, list[Descriptor]]:
    """Return the config descriptor and the layer descriptors of an image manifest."""
    config = parse_descriptor(doc.get("config"), f"{what} config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise Oci2vmError(f"malformed {what}: 'layers' must be a list")
    descs = [parse_descriptor(layer, f"{what} layer") for layer in layers]
    for d in descs:
        if d.media_type and d.media_type not in LAYER_TYPES:
            raise Oci2vmError(f"unsupported layer media type {d.media_type!r} in {what}")
    return config, descs


def _strings(value: Any, key: str, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Oci2vmError(f"malformed {what}: {key} must be a list of strings")
    return tuple(value)


def parse_config(data: bytes, what: str = "image config") -> ImageConfig:
    doc = load_json(data, what)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise Oci2vmError(f"malformed {what}: 'config' must be an object")
    rootfs = doc.get("rootfs") or {}
    if not isinstance(rootfs, dict):
        raise Oci2vmError(f"malformed {what}: 'rootfs' must be an object")
    diff_ids = _strings(rootfs.get("diff_ids", []), "rootfs.diff_ids", what) or ()
    for d in diff_ids:
        check_digest(d, f"{what} diff_id")
    labels = cfg.get("Labels") or {}
    ports = cfg.get("ExposedPorts") or {}
    return ImageConfig(
        platform=Platform(
            str(doc.get("os", "linux")),
            str(doc.get("architecture", Arch.default().value)),
            str(doc.get("variant", "")),
        ),
        entrypoint=_strings(cfg.get("Entrypoint"), "Entrypoint", what),
        cmd=_strings(cfg.get("Cmd"), "Cmd", what),
        env=_strings(cfg.get("Env"), "Env", what) or (),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        exposed_ports=tuple(sorted(str(p) for p in ports)) if isinstance(ports, dict) else (),
        stop_signal=str(cfg.get("StopSignal") or ""),
        diff_ids=diff_ids,
        created=str(doc.get("created") or ""),
    )


def empty_config(platform: Platform) -> ImageConfig:
    """The config of a rootfs tarball, which carries none."""
    return ImageConfig(platform, None, None, (), "", "", {}, (), "", (), "")


def check_platform(source: str, have: Platform, want: Platform) -> None:
    """Refuse an image built for another platform than the one asked for."""
    if have.architecture and not want.matches(have):
        raise Oci2vmError(
            f"{source}: the image config says {have}, not {want}: pass --platform {have} to use it"
        )


# A function that returns the verified bytes and a BlobRef for a digest (per source).
BlobLookup = Callable[[Descriptor], BlobRef]


def assemble(
    *,
    source: str,
    name: str,
    manifest_bytes: bytes,
    manifest_digest: str | None,
    manifest_media_type: str | None,
    blob: BlobLookup,
    what: str,
    platform: Platform | None = None,
    prefetch: Callable[[Sequence[Descriptor]], None] | None = None,
) -> Image:
    """Build an Image from verified manifest bytes, fetching config and locating layers
    through `blob` (which verifies). Checks that layers and diff_ids agree in number.
    `prefetch`, when given, is handed every layer first (a registry downloads them
    concurrently), once the config has shown that the image is the one wanted."""
    doc = load_json(manifest_bytes, what)
    config_desc, layer_descs = parse_manifest(doc, what)
    config_bytes = blob(config_desc).read_all()
    config = parse_config(config_bytes, f"image config of {what}")
    if platform is not None:  # before any layer is fetched
        check_platform(source, config.platform, platform)
    if len(config.diff_ids) != len(layer_descs):
        raise Oci2vmError(
            f"malformed {what}: {len(layer_descs)} layers but the config lists "
            f"{len(config.diff_ids)} diff_ids"
        )
    if prefetch is not None:
        prefetch(layer_descs)
    layers = tuple(
        Layer(blob(d), d.digest, d.media_type, diff_id)
        for d, diff_id in zip(layer_descs, config.diff_ids, strict=True)
    )
    return Image(
        source=source,
        name=name,
        manifest_digest=manifest_digest,
        manifest_media_type=manifest_media_type or str(doc.get("mediaType") or "") or None,
        config_digest=config_desc.digest,
        config=config,
        layers=layers,
    )
