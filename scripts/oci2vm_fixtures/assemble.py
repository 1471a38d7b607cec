"""Image assembly: layers -> config, manifest and every archive form of one image (OCI layout,
oci-archive, legacy and Docker >= 25 `docker save`), plus the flattened rootfs.tar/tree.json."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .compress import MT_TAR, Layer
from .tarentry import TarEntry, walk_key
from .tarwriter import write_tar

CREATED = "2023-11-14T22:13:20Z"
TAG = "fixture"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def file_entry(path: str, data: bytes = b"", source: Path | None = None) -> TarEntry:
    size = source.stat().st_size if source is not None else 0
    return TarEntry(path, "file", data=data, source=source, size=size)


def dir_entry(path: str) -> TarEntry:
    return TarEntry(path, "dir", mode=0o755)


def hex_of(digest: str) -> str:
    return digest.removeprefix("sha256:")


def write_archive(path: Path, members: Iterable[TarEntry]) -> None:
    write_tar(path, sorted(members, key=lambda e: walk_key(e.path)))


def config_json(
    layers: list[Layer], image_config: dict[str, object], extra_history: list[dict[str, object]]
) -> bytes:
    """The image config blob: one history step per layer, then `extra_history`."""
    history: list[dict[str, object]] = [
        {"created": CREATED, "created_by": layer.created_by} for layer in layers
    ]
    history += extra_history
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": history,
    }
    return canonical_json(config)


def manifest_json(config_desc: dict[str, object], layer_descs: list[dict[str, object]]) -> bytes:
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": config_desc,
            "layers": layer_descs,
        }
    )


def index_json(manifest: bytes, annotations: dict[str, str]) -> bytes:
    entry = descriptor(MT_MANIFEST, manifest)
    entry["annotations"] = annotations
    return canonical_json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [entry]})


def write_oci_layout(out: Path, config: bytes, manifest: bytes, layers: list[Layer]) -> Path:
    """(1) OCI image layout directory `out`/oci, tagged TAG; the layer blobs are hardlinks."""
    layout = out / "oci"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_bytes(OCI_LAYOUT)
    (layout / "index.json").write_bytes(index_json(manifest, {REF_NAME: TAG}))
    for data in (config, manifest):
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    for layer in layers:
        os.link(layer.blob, blobs / hex_of(layer.digest))
    return layout


def write_oci_archive(out: Path, layout: Path) -> None:
    """(2) oci-archive: the layout directory as one tar."""
    blobs = layout / "blobs" / "sha256"
    members = [dir_entry("blobs"), dir_entry("blobs/sha256")]
    members += [file_entry(f"blobs/sha256/{p.name}", source=p) for p in sorted(blobs.iterdir())]
    members += [file_entry(n, source=layout / n) for n in ("index.json", "oci-layout")]
    write_archive(out / "oci-archive.tar", members)


def write_docker_archive(
    out: Path, repo: str, layers: list[Layer], image_config: dict[str, object], config: bytes
) -> None:
    """(3) legacy `docker save`: <v1 id>/layer.tar (uncompressed), <config hex>.json."""
    members: list[TarEntry] = []
    parent = ""
    layer_paths = []
    for layer in layers:
        v1: dict[str, object] = {"created": CREATED, "layer_id": layer.diff_id}
        if parent:
            v1["parent"] = parent
        v1_id = hashlib.sha256(canonical_json(v1)).hexdigest()
        v1_json: dict[str, object] = {"id": v1_id, "created": CREATED, "os": "linux"}
        if parent:
            v1_json["parent"] = parent
        if layer is layers[-1]:
            v1_json["config"] = image_config
            v1_json["architecture"] = "amd64"
        members += [
            dir_entry(v1_id),
            file_entry(f"{v1_id}/VERSION", b"1.0"),
            file_entry(f"{v1_id}/json", canonical_json(v1_json)),
            file_entry(f"{v1_id}/layer.tar", source=layer.tar),
        ]
        layer_paths.append(f"{v1_id}/layer.tar")
        parent = v1_id
    config_hex = hashlib.sha256(config).hexdigest()
    repo_tag = f"{repo}:{TAG}"
    docker_manifest = [
        {"Config": f"{config_hex}.json", "RepoTags": [repo_tag], "Layers": layer_paths}
    ]
    members += [
        file_entry(f"{config_hex}.json", config),
        file_entry("manifest.json", canonical_json(docker_manifest)),
        file_entry("repositories", canonical_json({repo: {TAG: parent}})),
    ]
    write_archive(out / "docker-archive.tar", members)


def write_docker_oci_archive(
    out: Path, repo: str, layers: list[Layer], config: bytes, config_desc: dict[str, object]
) -> str:
    """(4) Docker >= 25 `docker save`: an OCI layout whose layers are uncompressed tars, plus
    manifest.json pointing into blobs/sha256. Returns its manifest's digest."""
    plain_descs: list[dict[str, object]] = [
        {"mediaType": MT_TAR, "digest": layer.diff_id, "size": layer.tar.stat().st_size}
        for layer in layers
    ]
    plain_manifest = manifest_json(config_desc, plain_descs)
    repo_tag = f"{repo}:{TAG}"
    annotations = {"io.containerd.image.name": f"docker.io/{repo_tag}", REF_NAME: TAG}
    config_hex = hashlib.sha256(config).hexdigest()
    blob_members = {
        config_hex: file_entry("", config),
        hashlib.sha256(plain_manifest).hexdigest(): file_entry("", plain_manifest),
    }
    for layer in layers:
        blob_members[hex_of(layer.diff_id)] = file_entry("", source=layer.tar)
    members = [dir_entry("blobs"), dir_entry("blobs/sha256")]
    members += [replace(e, path=f"blobs/sha256/{h}") for h, e in blob_members.items()]
    oci_docker_manifest = [
        {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": [repo_tag],
            "Layers": [f"blobs/sha256/{hex_of(layer.diff_id)}" for layer in layers],
        }
    ]
    members += [
        file_entry("index.json", index_json(plain_manifest, annotations)),
        file_entry("manifest.json", canonical_json(oci_docker_manifest)),
        file_entry("oci-layout", OCI_LAYOUT),
        file_entry("repositories", canonical_json({repo: {TAG: hex_of(layers[-1].diff_id)}})),
    ]
    write_archive(out / "docker-oci-archive.tar", members)
    return str(descriptor(MT_MANIFEST, plain_manifest)["digest"])


def assemble(
    out: Path,
    repo: str,
    layers: list[Layer],
    image_config: dict[str, object],
    extra_history: list[dict[str, object]],
    *,
    oci_archive: bool,
) -> dict[str, object]:
    """Write every archive form of one image into `out` and return its facts."""
    config = config_json(layers, image_config, extra_history)
    config_desc = descriptor(MT_CONFIG, config)
    layer_descs: list[dict[str, object]] = [
        {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
        for layer in layers
    ]
    manifest = manifest_json(config_desc, layer_descs)
    layout = write_oci_layout(out, config, manifest, layers)
    if oci_archive:
        write_oci_archive(out, layout)
    write_docker_archive(out, repo, layers, image_config, config)
    docker_oci_manifest_digest = write_docker_oci_archive(out, repo, layers, config, config_desc)
    return {
        "repo_tag": f"{repo}:{TAG}",
        "tag": TAG,
        "config_digest": config_desc["digest"],
        "diff_ids": [layer.diff_id for layer in layers],
        "layer_digests": [layer.digest for layer in layers],
        "layer_media_types": [layer.media_type for layer in layers],
        "manifest_digest": descriptor(MT_MANIFEST, manifest)["digest"],
        "docker_oci_manifest_digest": docker_oci_manifest_digest,
        "config": image_config,
        "forms": {
            "oci_layout": "oci",
            "oci_archive": "oci-archive.tar" if oci_archive else None,
            "docker_archive": "docker-archive.tar",
            "docker_oci_archive": "docker-oci-archive.tar",
            "rootfs_tar": "rootfs.tar",
            "expected_tree": "tree.json",
        },
    }


def write_rootfs(out: Path, entries: Iterable[TarEntry]) -> int:
    """(5) the flattened tree as one tar, like `docker export` minus the four files the
    container runtime adds (/.dockerenv, /etc/hosts, /etc/hostname, /etc/resolv.conf)."""
    writer = write_tar(out / "rootfs.tar", entries, expand_sparse=True, type_bits=True)
    (out / "tree.json").write_bytes(canonical_json(writer.records))
    return len(writer.records)
