"""Small OCI layouts built inside tests, so each test states its own layers.

A layer is a list of tarfile.TarInfo (+ data) made with the helpers below; write_layout
turns layers into an OCI image layout directory with a config and an index."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard


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


def layer_tar(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(m.info, io.BytesIO(m.data) if m.data else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Built:
    path: Path
    manifest_digest: str
    config_digest: str
    diff_ids: list[str]
    layer_digests: list[str] = field(default_factory=list)


def write_layout(
    path: Path,
    layers: list[list[Member]] | list[bytes],
    *,
    compression: str | list[str] = "gzip",
    tag: str = "latest",
    config: dict[str, object] | None = None,
    platform: tuple[str, str] = ("linux", "amd64"),
) -> Built:
    """Write an OCI layout with one image; layers given as members or raw tar bytes."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    comps = [compression] * len(layers) if isinstance(compression, str) else compression
    layer_descs = []
    diff_ids = []
    for members, comp in zip(layers, comps, strict=True):
        raw = members if isinstance(members, bytes) else layer_tar(members)  # type: ignore[arg-type]
        diff_ids.append(sha(raw))
        if comp == "gzip":
            blob, mt = gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif comp == "zstd":
            blob = zstandard.ZstdCompressor().compress(raw)
            mt = "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            blob, mt = raw, "application/vnd.oci.image.layer.v1.tar"
        layer_descs.append({"mediaType": mt, "digest": put(blob), "size": len(blob)})
    cfg = {
        "architecture": platform[1],
        "os": platform[0],
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(cfg_bytes),
            "size": len(cfg_bytes),
        },
        "layers": layer_descs,
    }
    man_bytes = json.dumps(manifest, sort_keys=True).encode()
    man_digest = put(man_bytes)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": man_digest,
                "size": len(man_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(index))
    return Built(path, man_digest, sha(cfg_bytes), diff_ids, [d["digest"] for d in layer_descs])  # type: ignore[misc]
