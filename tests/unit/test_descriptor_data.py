"""A descriptor's embedded `data` (OCI image-spec 1.1): a layout that lacks a blob the
descriptor embeds is read from the embedding, as containerd and umoci read it, and data
that is not what the digest names is refused wherever a descriptor carries it."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore
from oci2vm.image.model import parse_descriptor
from oci2vm.sources import Fetch, resolve
from support.layouts import file, write_layout


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _rewrite_manifest(layout: Path, change: Callable[[dict[str, Any], Path], None]) -> None:
    """The layout's manifest changed by `change(manifest, blobs directory)`, and the index
    pointed at the rewritten one."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / entry["digest"][7:]).read_bytes())
    change(manifest, blobs)
    raw = json.dumps(manifest).encode()
    (blobs / _sha(raw)[7:]).write_bytes(raw)
    entry.update(digest=_sha(raw), size=len(raw))
    (layout / "index.json").write_text(json.dumps(index))


def _embed_config(layout: Path, data: bytes | None = None) -> None:
    """The manifest's config embedded (or `data` in its place), its blob removed."""

    def embed(manifest: dict[str, Any], blobs: Path) -> None:
        config = manifest["config"]
        blob = blobs / config["digest"][7:]
        config["data"] = base64.b64encode(data if data is not None else blob.read_bytes()).decode()
        blob.unlink()

    _rewrite_manifest(layout, embed)


def test_a_config_only_embedded_in_its_descriptor_is_read(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "img", [[file("a", b"x")]])
    _embed_config(layout.path)
    image = resolve(f"oci:{layout.path}", Fetch(store=BlobStore(tmp_path / "cache")))
    assert image.config.platform.os == "linux"


def test_embedded_data_that_is_not_what_the_digest_names_is_refused(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "img", [[file("a", b"x")]])
    _embed_config(layout.path, b'{"architecture": "amd64", "os": "linux"}')
    with pytest.raises(Oci2vmError, match=r"config: its embedded data does not match its digest"):
        resolve(f"oci:{layout.path}", Fetch(store=BlobStore(tmp_path / "cache")))


@pytest.mark.parametrize("data", ["not base64!", 7])
def test_data_that_is_no_base64_is_malformed(data: object) -> None:
    doc = {"mediaType": "x", "digest": _sha(b""), "size": 0, "data": data}
    with pytest.raises(Oci2vmError, match=r"^malformed d: its data is not base64$"):
        parse_descriptor(doc, "d")


def test_an_absent_non_distributable_layer_is_named_with_its_url(tmp_path: Path) -> None:
    """skopeo fetches a foreign layer's urls; oci2vm says that is what is missing."""
    layout = write_layout(tmp_path / "img", [[file("a", b"x")]])

    def foreign(manifest: dict[str, Any], blobs: Path) -> None:
        layer = manifest["layers"][0]
        layer["urls"] = ["https://example.invalid/layer\n.tgz"]
        (blobs / layer["digest"][7:]).unlink()

    _rewrite_manifest(layout.path, foreign)
    with pytest.raises(Oci2vmError, match=r"is non-distributable and not in the layout: it is at "
                       r"https://example.invalid/layer \.tgz, which"):  # fmt: skip
        resolve(f"oci:{layout.path}", Fetch(store=BlobStore(tmp_path / "cache")))
