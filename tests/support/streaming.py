"""Builds and checks shared by the tests of builds that read layers while they download
(tests/integration/test_registry_stream.py, test_registry_stripes.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from oci2vm import pipeline
from oci2vm.cli import config_from, parse
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore
from oci2vm.report import Reporter
from support.layouts import BuiltImage, write_layout
from support.registries import FakeRegistry, cache_files


def build_args(source: str, out: Path, cache: BlobStore) -> list[str]:
    return ["build", "--format", "ext4", source, "-o", str(out), "--cache-dir", str(cache.root)]


def build_from(fake: FakeRegistry, out: Path, cache: BlobStore, reporter: Reporter) -> None:
    args = [*build_args(f"docker://{fake.host}/app:1", out, cache), "--tls-verify=false"]
    pipeline.build(config_from(parse(args)), reporter)


def layout_build(image: BuiltImage, tmp_path: Path) -> bytes:
    """The output of a build of the same image from an OCI layout (no download at all)."""
    layout = write_layout(tmp_path / "layout", {"app": image})
    out = tmp_path / "from-layout.ext4"
    cache = BlobStore(tmp_path / "layout-cache")
    pipeline.build(config_from(parse(build_args(f"oci:{layout.path}:app", out, cache))), Reporter())
    return out.read_bytes()


def blob_path(image: BuiltImage, index: int) -> str:
    return f"/v2/app/blobs/{image.layer_digests[index]}"


def whole_requests(fake: FakeRegistry, path: str) -> int:
    """GETs of a whole blob (not Range requests)."""
    return sum(1 for s in fake.seen if s.path == path and "Range" not in s.headers)


def assert_nothing_half_written(store: BlobStore, *digests: str) -> None:
    names = cache_files(store)
    assert not [n for n in names if n.startswith(".tmp-")], names
    for digest in digests:
        assert not store.path(digest).exists()


def download_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("download")]


def error_of_build(fake: FakeRegistry, out: Path, store: BlobStore) -> str:
    with pytest.raises(Oci2vmError) as e:
        build_from(fake, out, store, Reporter())
    message = str(e.value)
    assert "\n" not in message
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []
    return message
