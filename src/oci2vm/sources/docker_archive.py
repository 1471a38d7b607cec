"""docker-archive:PATH[:REF]: the output of `docker save` or `podman save`.

Two forms exist. The classic one (manifest.json listing <config>.json and
<id>/layer.tar) has no registry manifest; layers are verified through the diff_ids of
the config, whose digest (the image ID) is that of its bytes: `docker load` and
containers/image read it by its path and never hold its name to it (go-containerregistry
writes archives whose config name is another digest). Docker >= 25 writes an OCI
layout inside the tar as well (oci-layout, index.json, blobs/sha256): that form is read
as a layout, so it reports the same manifest digest a registry would.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oci2vm.errors import Oci2vmError
from oci2vm.image.model import (
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    Image,
    Layer,
    index_entries,
    load_json,
    load_json_list,
    parse_config,
)
from oci2vm.sources import oci_layout
from oci2vm.sources.container import Container, store_of
from oci2vm.sources.reference import parse_reference

if TYPE_CHECKING:
    from oci2vm.sources.base import Fetch

_BLOB_PATH = re.compile(r"^(?:blobs/)?(sha256)[/:]([0-9a-f]{64})(?:\.json)?$")
_LEGACY_CONFIG = re.compile(r"^([0-9a-f]{64})\.json$")


def _normalize(tag: str) -> str:
    try:
        return str(parse_reference(tag))
    except Oci2vmError:
        return tag


def _digest_of_path(name: str) -> str | None:
    """The digest a member's name promises: blobs/sha256/<hex> or <hex>.json."""
    m = _BLOB_PATH.match(name) or None
    if m:
        return f"{m[1]}:{m[2]}"
    m = _LEGACY_CONFIG.match(posixpath.basename(name))
    return f"sha256:{m[1]}" if m else None


def resolve(source: str, path: Path, ref: str, fetch: Fetch) -> Image:
    container = Container(path, store_of(fetch))
    if not container.is_archive:
        raise Oci2vmError(f"{path}: is a directory; docker-archive: takes a tar file")
    if not container.exists("manifest.json"):
        if container.exists("index.json"):
            name = ref or oci_layout.archive_stem(path.name)
            return oci_layout.resolve_in(source, container, ref, fetch, name=name)
        raise Oci2vmError(f"{path}: not a docker save archive (no manifest.json)")
    doc: Any = load_json_list(container.read("manifest.json"), f"{path}: manifest.json")
    images = _images(doc, path)
    index = re.fullmatch(r"@(\d+)", ref)
    wanted = _normalize(ref) if ref and index is None else None
    if index is not None:  # skopeo's @N: the Nth image of manifest.json, from 0
        if int(index[1]) >= len(images):
            raise Oci2vmError(f"{path}: no image {ref} (the archive holds {len(images)})")
        images = [images[int(index[1])]]
        ref = ""
    elif wanted is not None:
        images = [
            e
            for e in images
            if any(_normalize(t) == wanted for t in e.get("RepoTags") or [])
            or str(e.get("Config", "")).removesuffix(".json").split("/")[-1]
            in (ref, ref.rsplit(":", maxsplit=1)[-1])
        ]
        if not images:
            raise Oci2vmError(f"{path}: no image tagged {ref!r} in the archive")
    if not images:
        raise Oci2vmError(f"{path}: manifest.json lists no image")
    if len(images) > 1:
        tags = sorted(t for e in images for t in e.get("RepoTags") or [])
        raise Oci2vmError(
            f"{path}: the archive holds {len(images)} images: name one"
            + (f" ({', '.join(tags)})" if tags else "")
        )
    entry = images[0]
    repo_tags: list[str] = entry.get("RepoTags") or []
    name = ref or (repo_tags[0] if repo_tags else oci_layout.archive_stem(path.name))

    image = _as_layout(source, container, entry, fetch, name)
    if image is not None:
        return image

    config_name = entry.get("Config")
    layer_names = entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise Oci2vmError(f"{path}: malformed manifest.json: needs Config and Layers")
    config_bytes = container.ref(config_name, None).read_all(MAX_CONFIG_SIZE)
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    config = parse_config(config_bytes, f"{path}: {config_name}")
    if len(config.diff_ids) != len(layer_names):
        raise Oci2vmError(
            f"{path}: malformed manifest.json: {len(layer_names)} layers but the config "
            f"lists {len(config.diff_ids)} diff_ids"
        )
    layers = []
    for layer_name, diff_id in zip(layer_names, config.diff_ids, strict=True):
        digest = _digest_of_path(str(layer_name))
        layers.append(Layer(container.ref(str(layer_name), digest), digest, "", diff_id))
    return Image(
        source=source,
        name=name,
        manifest_digest=None,
        manifest_media_type=None,
        config_digest=config_digest,
        config=config,
        layers=tuple(layers),
    )


def _images(doc: list[Any], path: Path) -> list[dict[str, Any]]:
    """manifest.json's images (its objects), their RepoTags checked."""
    images = [e for e in doc if isinstance(e, dict)]
    for e in images:
        tags = e.get("RepoTags")
        if tags is not None and not (
            isinstance(tags, list) and all(isinstance(t, str) for t in tags)
        ):
            raise Oci2vmError(f"{path}: malformed manifest.json: RepoTags is not a list of names")
    return images


def _as_layout(
    source: str, container: Container, entry: dict[str, Any], fetch: Fetch, name: str
) -> Image | None:
    """Docker >= 25: the same image is also an OCI layout; read it as one, where the
    layout's image is the one manifest.json names (its config), as skopeo reads only
    manifest.json. None: read manifest.json."""
    if not (container.exists("index.json") and container.exists("oci-layout")):
        return None
    try:
        tag = _layout_tag(container, entry)
    except _NoLayoutMatchError:
        return None
    image = oci_layout.resolve_in(source, container, tag, fetch, name=name)
    if image.config_digest != _digest_of_path(str(entry.get("Config", ""))):
        return None
    return image


class _NoLayoutMatchError(Exception):
    pass


def _layout_tag(container: Container, entry: dict[str, Any]) -> str:
    """Find the index.json entry for this manifest.json entry: Docker annotates it with
    the image name, else match it by its config digest."""
    try:
        index = load_json(container.read("index.json"), f"{container.path}: index.json")
        # Docker 25 can write "manifests": null; skopeo reads manifest.json alone anyway.
        if not index.get("manifests"):
            raise _NoLayoutMatchError
        entries = index_entries(index, f"{container.path}: index.json")
    except Oci2vmError:
        raise _NoLayoutMatchError from None
    config_digest = _digest_of_path(str(entry.get("Config", "")))
    for d in entries:
        if len(entries) == 1:
            return d.digest
        blob = oci_layout.blob_ref(container, d).read_all(MAX_MANIFEST_SIZE)
        manifest = load_json(blob, f"manifest {d.digest}")
        cfg = manifest.get("config")
        if isinstance(cfg, dict) and cfg.get("digest") == config_digest:
            return d.digest
    raise _NoLayoutMatchError
