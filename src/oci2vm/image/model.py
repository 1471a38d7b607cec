"""Image records: manifest, config and layers, parsed and checked, whatever the source.

Follows the OCI image spec (image-index, image-manifest, config) and Docker's
v2 schema 2 manifest and manifest list, which differ only in media types.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oci2vm.arch import Arch
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, check_digest, digest_of

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
# Documents are read whole, so their size is capped. Registries refuse manifests (and
# indexes) over 4 MiB (the OCI distribution spec's floor, distribution's and
# containers/image's limit); containers/image also caps configs at 4 MiB, and this
# allows twice that. Nesting is capped so that no parser or message recurses deeply:
# OCI documents nest five levels or so.
MAX_MANIFEST_SIZE = 4 << 20
MAX_CONFIG_SIZE = 8 << 20
MAX_JSON_DEPTH = 100
MAX_PLATFORMS_SHOWN = 10  # in the message for a platform an index lacks
_JSON_ESCAPE = re.compile(r"\\.", re.DOTALL)  # in a string: \" does not end it
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_NOT_BRACKETS = {c: None for c in range(128) if chr(c) not in "[]{}"}  # for str.translate
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
    # What old registries and pushers wrote, which Docker still pulls as images.
    "application/octet-stream",
    "application/json",
    "text/html",
)
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
    data: bytes | None = None  # the content embedded in the descriptor, checked
    urls: tuple[str, ...] = ()  # where a non-distributable blob is (not fetched)


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
    rootfs: bool = False  # a rootfs tarball (tar:): xz and bzip2 too, as docker import reads

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


def _size_text(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def _too_large(what: str, size: int, limit: int) -> Oci2vmError:
    return Oci2vmError(
        f"{what} is too large: {_size_text(size)}, over {_size_text(limit)} (registries and "
        "container tools refuse such documents too)"
    )


def _quote(value: object) -> str:
    """A value from the input, for a one-line message of bounded length."""
    text = repr(value[:81] if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:80] + "…"


def _check_depth(text: str, what: str) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH, before a parser recurses into it:
    escapes and strings are dropped, then the brackets left are counted."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return  # the common case: too few brackets to nest that deep
    outside = "".join(_JSON_ESCAPE.sub("", text).split('"')[::2])  # even pieces: not strings
    steps = map(_BRACKET_STEP.get, outside.translate(_NOT_BRACKETS), itertools.repeat(0))
    if max(itertools.accumulate(steps), default=0) > MAX_JSON_DEPTH:
        raise Oci2vmError(f"malformed {what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _parse_int(digits: str) -> int:
    """A JSON integer; one too long for any field of these documents (Go reads them into
    64 bits) is refused before Python's own limit on converting digits says more."""
    if len(digits) > 64:
        raise ValueError(f"an integer of {len(digits)} digits")
    return int(digits)


def _load(data: bytes, what: str, kind: type[Any], kind_name: str, limit: int) -> Any:
    if len(data) > limit:
        raise _too_large(what, len(data), limit)
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass")
        _check_depth(text, what)
        doc = json.loads(text, parse_int=_parse_int)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, digits
        raise Oci2vmError(f"malformed {what}: not valid JSON ({e})") from e
    if not isinstance(doc, kind):
        raise Oci2vmError(f"malformed {what}: expected a JSON {kind_name}")
    return doc


def load_json(data: bytes, what: str, limit: int = MAX_MANIFEST_SIZE) -> dict[str, Any]:
    """A JSON object of at most `limit` bytes, nested at most MAX_JSON_DEPTH levels, or
    a one-line error naming `what`."""
    doc: dict[str, Any] = _load(data, what, dict, "object", limit)
    return doc


def load_json_list(data: bytes, what: str, limit: int = MAX_MANIFEST_SIZE) -> list[Any]:
    """A JSON list, under the same limits as load_json, or a one-line error naming `what`."""
    doc: list[Any] = _load(data, what, list, "list", limit)
    return doc


def _str(doc: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise Oci2vmError(f"malformed {what}: {key!r} must be a string")
    return value


def _platform_field(doc: dict[str, Any], key: str, what: str, default: str = "") -> str:
    """A platform's os, architecture or variant: a string; absent gives `default`, null
    gives "" (as Go's decoder, which every registry client uses, reads it)."""
    value = doc.get(key, default)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Oci2vmError(f"malformed {what}: platform {key} must be a string")
    return value


def _digest(doc: dict[str, Any], what: str) -> str:
    digest = _str(doc, "digest", what)
    if len(digest) > 200:  # sha512 takes 135 characters
        raise Oci2vmError(f"malformed {what} digest: {_quote(digest)}")
    return check_digest(digest, f"{what} digest")


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
            _platform_field(p, "os", what),
            _platform_field(p, "architecture", what),
            _platform_field(p, "variant", what),
        )
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise Oci2vmError(f"malformed {what}: annotations must map strings to strings")
    digest = _digest(doc, what)
    return Descriptor(
        media_type=_str(doc, "mediaType", what, ""),
        digest=digest,
        size=size,
        platform=platform,
        annotations=annotations,
        data=_embedded(doc, digest, size, what),
        urls=tuple(u for u in doc.get("urls") or () if isinstance(u, str)),
    )


def _embedded(doc: dict[str, Any], digest: str, size: int, what: str) -> bytes | None:
    """A descriptor's `data` (base64, OCI image-spec 1.1): its content, which MUST be
    what the digest and size name; one that is not is refused, as umoci refuses it."""
    if "data" not in doc:
        return None
    text = doc["data"]
    try:
        data = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except ValueError:
        data = None
    if data is None:
        raise Oci2vmError(f"malformed {what}: its data is not base64")
    if len(data) != size or digest != digest_of(data, digest.partition(":")[0]):
        raise Oci2vmError(f"malformed {what}: its embedded data does not match its digest")
    return data


def manifest_kind(doc: dict[str, Any], declared: str | None = None) -> str:
    """'index' or 'manifest', from the mediaType field, the declared content type, or
    the shape of the document."""
    media_type = doc.get("mediaType") or declared or ""
    if not isinstance(media_type, str):
        raise Oci2vmError(
            f"malformed manifest: mediaType must be a string, not {_quote(media_type)}"
        )
    if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise Oci2vmError(
            "Docker schema 1 manifests are not supported (deprecated since 2017): "
            "push the image again with a current client"
        )
    if media_type in INDEX_TYPES or (not media_type and "manifests" in doc):
        kind = "index"
    elif media_type in MANIFEST_TYPES or (not media_type and "layers" in doc):
        kind = "manifest"
    else:
        raise Oci2vmError(f"unsupported manifest media type {_quote(media_type)}")
    # A document that reads as the other kind too is refused, as containers/image does
    # (the image-spec ambiguity of CVE-2021-41190): so is one whose descriptor or
    # Content-Type names a known type of the other kind.
    foreign = ("config", "layers") if kind == "index" else ("manifests",)
    stray = [field for field in foreign if field in doc]
    said = (
        "index" if declared in INDEX_TYPES else "manifest" if declared in MANIFEST_TYPES else kind
    )
    if stray or said != kind:
        found = f"fields {', '.join(stray)}" if stray else f"declared as {_quote(declared)}"
        raise Oci2vmError(
            f"ambiguous manifest: a{'n' if kind == 'index' else ''} {kind} "
            f"({_quote(media_type or 'by its fields')}) with {found}"
        )
    return kind


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
        # An exact variant match first; then, asked for none, the lowest variant, which
        # runs on the most CPUs (v1 before v3, as containerd picks for a plain request:
        # a v3 build dies of an illegal instruction on QEMU's default CPU).
        exact = [d for d in candidates if d.platform and d.platform.variant == platform.variant]
        return (exact or sorted(candidates, key=_variant_order))[0]
    bare = [d for d in entries if d.platform is None]
    if len(bare) == 1 and len(entries) == 1:
        return bare[0]
    have = sorted({str(d.platform) for d in entries if d.platform} - {"unknown/unknown"})
    shown = ", ".join(_quote(p)[1:-1] for p in have[:MAX_PLATFORMS_SHOWN])
    if len(have) > MAX_PLATFORMS_SHOWN:
        shown += f" and {len(have) - MAX_PLATFORMS_SHOWN} more"
    raise Oci2vmError(
        f"{what} has no manifest for platform {platform}" + (f" (it has: {shown})" if have else "")
    )


def _variant_order(desc: Descriptor) -> tuple[int, str]:
    """Variants by level ("", then v1, v2 ... by number); the sort keeps index order
    among equals."""
    variant = desc.platform.variant if desc.platform else ""
    if not variant:
        return -1, ""
    digits = variant.removeprefix("v")
    return int(digits) if digits.isdigit() else 1 << 30, variant


def parse_manifest(
    doc: dict[str, Any], what: str = "manifest"
) -> tuple[Descriptor, list[Descriptor]]:
    """Return the config descriptor and the layer descriptors of an image manifest."""
    config = parse_descriptor(doc.get("config"), f"{what} config")
    if config.media_type and config.media_type.lower() not in CONFIG_TYPES:
        # An OCI artifact (a Helm chart, a signature, a SIF file...): its config says
        # what it is; the manifest's artifactType, when set, says it better.
        kind = doc.get("artifactType")
        kind = kind if isinstance(kind, str) and kind else config.media_type
        raise Oci2vmError(f"{what} is an OCI artifact ({_quote(kind)}), not a container image")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise Oci2vmError(f"malformed {what}: 'layers' must be a list")
    descs = [parse_descriptor(layer, f"{what} layer") for layer in layers]
    for d in descs:
        if d.media_type and d.media_type not in LAYER_TYPES:
            raise Oci2vmError(f"unsupported layer media type {_quote(d.media_type)} in {what}")
    return config, descs


def _strings(value: Any, key: str, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Oci2vmError(f"malformed {what}: {key} must be a list of strings")
    return tuple(value)


def parse_config(data: bytes, what: str = "image config") -> ImageConfig:
    doc = load_json(data, what, MAX_CONFIG_SIZE)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise Oci2vmError(f"malformed {what}: 'config' must be an object")
    rootfs = doc.get("rootfs") or {}
    if not isinstance(rootfs, dict):
        raise Oci2vmError(f"malformed {what}: 'rootfs' must be an object")
    if rootfs.get("type", "layers") != "layers":  # image-spec: MUST be "layers"
        raise Oci2vmError(
            f"unsupported {what}: rootfs.type {_quote(rootfs.get('type'))} (only 'layers')"
        )
    diff_ids = _strings(rootfs.get("diff_ids", []), "rootfs.diff_ids", what) or ()
    for d in diff_ids:
        check_digest(d, f"{what} diff_id")
    labels = cfg.get("Labels") or {}
    ports = cfg.get("ExposedPorts") or {}
    return ImageConfig(
        platform=Platform(
            _platform_field(doc, "os", what, "linux"),
            _platform_field(doc, "architecture", what, Arch.default().value),
            _platform_field(doc, "variant", what),
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
    if have.os != want.os and want.os == "linux":
        check_linux(source, have)
    if have.architecture and not want.matches(have):
        raise Oci2vmError(
            f"{source}: the image config says {have}, not {want}: pass --platform {have} to use it"
        )


def check_linux(source: str, platform: Platform) -> None:
    """Refuse to build a system from an image of another OS (a Windows image's layers
    are no Linux root filesystem)."""
    if platform.os != "linux":
        raise Oci2vmError(f"{source}: the image is for {platform}: oci2vm builds Linux systems")


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
    if config_desc.size > MAX_CONFIG_SIZE:  # before anything is downloaded
        raise _too_large(f"image config of {what}", config_desc.size, MAX_CONFIG_SIZE)
    config_bytes = blob(config_desc).read_all(MAX_CONFIG_SIZE)
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
