"""docker-archive and oci-archive inputs as other tools write them: compressed whole (gzip,
zstd, xz, bzip2: `docker save | xz`, podman's and skopeo's test archives), and the classic
form whose config file is named by another digest than its own (go-containerregistry)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
from pathlib import Path

import pytest
import zstandard

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore
from oci2vm.sources import Fetch, resolve
from support.debarchives import tar_of
from support.layouts import directory, file, layer_tar, sha256
from support.runcli import oci2vm

COMPRESS = {  # by suffix
    "gz": gzip.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
    "xz": lzma.compress,
    "bz2": bz2.compress,
}


def classic_archive(config_name: str | None = None) -> tuple[bytes, bytes]:
    """`docker save` before Docker 25 (manifest.json, <id>.json, <dir>/layer.tar), and its
    config; `config_name` names the config file (default: by its own digest)."""
    layer = layer_tar([directory("etc"), file("etc/motd", b"hello\n")])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            "config": {"Cmd": ["sh"]},
        }
    ).encode()
    name = config_name or f"{sha256(config)[7:]}.json"
    manifest = [{"Config": name, "RepoTags": ["app:1"], "Layers": ["abc/layer.tar"]}]
    members = {"abc/layer.tar": layer, name: config, "manifest.json": json.dumps(manifest).encode()}
    return tar_of(members), config


def oci_archive() -> bytes:
    layer = layer_tar([directory("srv"), file("srv/x", b"x\n")])
    config = json.dumps(
        {"architecture": "amd64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}
    ).encode()  # fmt: skip
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()  # fmt: skip
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha256(manifest), "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    }  # fmt: skip
    return tar_of(
        {
            "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
            "index.json": json.dumps(index).encode(),
            **{f"blobs/sha256/{sha256(b)[7:]}": b for b in (config, manifest, layer)},
        }
    )


def read_layers(image: object) -> list[bytes]:
    return [layer.blob.read_all(1 << 20) for layer in image.layers]  # type: ignore[attr-defined]


def test_a_config_named_by_another_digest_is_read_by_its_path_as_docker_load_does(
    tmp_path: Path,
) -> None:
    data, config = classic_archive(config_name=f"{'6e0b05' + '0' * 58}.json")
    archive = tmp_path / "app.tar"
    archive.write_bytes(data)
    image = resolve(f"docker-archive:{archive}", Fetch())
    assert image.config_digest == sha256(config)  # the image ID: its bytes' digest
    assert image.config.cmd == ("sh",)
    assert len(read_layers(image)) == 1


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_compressed_archives_are_read_as_skopeo_reads_them(tmp_path: Path, kind: str) -> None:
    store = BlobStore(tmp_path / "cache")
    fetch = Fetch(store=store)
    classic, _ = classic_archive()
    for transport, data, name in (
        ("docker-archive", classic, "app.tar"),
        ("oci-archive", oci_archive(), "web.tar"),
    ):
        archive = tmp_path / f"{name}.{kind}"
        archive.write_bytes(COMPRESS[kind](data))
        image = resolve(f"{transport}:{archive}", fetch)
        assert image.name == ("app:1" if transport == "docker-archive" else "web")
        assert [len(layer) for layer in read_layers(image)] == [
            len(layer)
            for layer in read_layers(resolve(f"{transport}:{_plain(tmp_path, data)}", Fetch()))
        ]
    assert image.config_digest is not None


def _plain(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"plain-{sha256(data)[7:15]}.tar"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_a_corrupt_or_truncated_compressed_archive_is_named_and_leaves_nothing(
    tmp_path: Path, kind: str
) -> None:
    store = BlobStore(tmp_path / "cache")
    packed = COMPRESS[kind](classic_archive()[0])
    for broken in (packed[: len(packed) // 2], packed[:12] + bytes(64) + packed[76:]):
        archive = tmp_path / f"app.tar.{kind}"
        archive.write_bytes(broken)
        with pytest.raises(Oci2vmError) as raised:
            resolve(f"docker-archive:{archive}", Fetch(store=store))
        message = str(raised.value)
        assert message.startswith(f"{archive}: ") and "\n" not in message
        assert list(store.scratch_dir().iterdir()) == []


def test_the_decompressed_copy_is_gone_when_the_process_ends(tmp_path: Path) -> None:
    archive = tmp_path / "app.tar.xz"
    archive.write_bytes(lzma.compress(classic_archive()[0]))
    cache = tmp_path / "cache"
    done = oci2vm(
        "build", f"docker-archive:{archive}", "-q", "--format", "ext4",
        "-o", str(tmp_path / "root.ext4"), "--cache-dir", str(cache),
    )  # fmt: skip
    assert done.code == 0, done.err
    assert list((cache / "tmp").iterdir()) == []


def test_oci_on_a_file_that_is_no_tar_says_to_use_oci_archive(tmp_path: Path) -> None:
    image = tmp_path / "empty.sif"
    image.write_bytes(b"#!/usr/bin/env run-singularity\n" + bytes(600))
    with pytest.raises(Oci2vmError, match=r"empty.sif: is a file; use oci-archive:"):
        resolve(f"oci:{image}", Fetch())


def test_a_compressed_file_that_is_no_tar_is_refused_at_its_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 MB of zeros after a text line, xz-compressed to a few KB: refused once the
    first block is read, not after all of it is written."""
    from oci2vm.sources import container

    written: list[int] = []
    real_write = container._GuardedCopy.write

    def counting(self: object, data: bytes | memoryview) -> None:
        written.append(len(data))
        real_write(self, data)  # type: ignore[arg-type]

    monkeypatch.setattr(container._GuardedCopy, "write", counting)
    archive = tmp_path / "disk.qcow2.xz"
    archive.write_bytes(lzma.compress(b"QFI\xfb not a tar\n" + bytes(20 << 20), preset=0))
    store = BlobStore(tmp_path / "cache")
    with pytest.raises(Oci2vmError, match=r"disk.qcow2.xz: not a tar archive once decompressed$"):
        resolve(f"docker-archive:{archive}", Fetch(store=store))
    assert sum(written) <= 2 << 20  # the first piece or two
    assert list(store.scratch_dir().iterdir()) == []


def test_decompressing_stops_before_the_scratch_filesystem_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oci2vm.sources import container

    free = os.statvfs(tmp_path)
    monkeypatch.setattr(container, "SCRATCH_RESERVE", free.f_bavail * free.f_frsize)
    archive = tmp_path / "app.tar.gz"
    archive.write_bytes(COMPRESS["gz"](classic_archive()[0]))
    store = BlobStore(tmp_path / "cache")
    with pytest.raises(Oci2vmError, match=r"app.tar.gz: decompressing it would leave less than"):
        resolve(f"docker-archive:{archive}", Fetch(store=store))
    assert list(store.scratch_dir().iterdir()) == []


def test_zeros_in_a_compressed_archive_take_no_room_in_its_copy(tmp_path: Path) -> None:
    """A few KB of gzip may inflate to gigabytes of zeros (a bomb, or a layer of empty
    files): the copy keeps them as holes, byte for byte the same archive when read."""
    from oci2vm.sources import container

    layer = layer_tar([file("big", bytes(96 << 20)), file("small", b"x" * 70_000)])
    archive, _ = classic_archive()
    whole = archive[:-1024] + tar_of({"zeros/layer.tar": layer})  # (one end marker)
    packed = tmp_path / "bomb.tar.gz"
    packed.write_bytes(COMPRESS["gz"](whole))
    copy = tmp_path / "copy.tar"
    container._decompressed_copy(packed, "gzip", copy)
    assert copy.read_bytes() == whole
    assert copy.stat().st_blocks * 512 < 2 << 20  # (96 MB of it zeros)


def test_the_sparse_copy_is_exact_whatever_the_pieces_it_is_written_in(tmp_path: Path) -> None:
    from oci2vm.sources import container

    rng = random.Random(7)
    hole = container._HOLE
    header = tar_of({"a": b"x"})[:512]  # (the copy checks its first block)
    parts = [header, bytes(3 * hole + 5), b"data" * 1000, bytes(hole - 1), b"y", bytes(2 * hole)]
    data = b"".join(parts)
    for _ in range(20):
        copy = tmp_path / "copy"
        with open(copy, "wb") as f:
            out = container._GuardedCopy(f.fileno(), tmp_path / "x.tar.gz", tmp_path)
            at = 0
            while at < len(data):
                n = rng.choice([1, 511, 4096, hole - 3, hole, 2 * hole + 17])
                out.write(memoryview(data)[at : at + n])
                at += n
            out.finish()
        assert copy.read_bytes() == data


def _counting_decompression(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from oci2vm.sources import container

    calls: list[Path] = []
    real = container._decompressed_copy

    def counted(path: Path, kind: str, copy: Path) -> None:
        calls.append(path)
        real(path, kind, copy)

    monkeypatch.setattr(container, "_decompressed_copy", counted)
    return calls


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_a_second_read_of_a_compressed_archive_takes_the_index_of_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """`oci2vm run` of an archive whose root is cached reads only its small members:
    from the index, without decompressing it again (a layer read still would)."""
    from oci2vm.sources import container

    calls = _counting_decompression(monkeypatch)
    fetch = Fetch(store=BlobStore(tmp_path / "cache"))
    data = classic_archive()[0] if transport == "docker-archive" else oci_archive()
    archive = tmp_path / "image.tar.xz"
    archive.write_bytes(lzma.compress(data))
    first = resolve(f"{transport}:{archive}", fetch)
    second = resolve(f"{transport}:{archive}", fetch)
    assert (second.config_digest, second.name) == (first.config_digest, first.name)
    assert read_layers(second) == read_layers(first)  # (small: in the index too)
    assert calls == [archive]
    monkeypatch.setattr(container, "INDEX_SMALL", 4096)  # configs: small; layers: not
    archive.write_bytes(lzma.compress(data, preset=1))  # rewritten: another index
    third = resolve(f"{transport}:{archive}", fetch)
    fourth = resolve(f"{transport}:{archive}", fetch)
    assert len(calls) == 2  # (config and manifests: in the index)
    assert read_layers(fourth) == read_layers(first) == read_layers(third)
    assert len(calls) == 3  # the layer's read decompressed it, once
    assert fourth.config_digest == first.config_digest


def test_a_broken_or_lying_index_is_not_trusted_blindly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oci2vm.sources import container

    monkeypatch.setattr(container, "INDEX_SMALL", 4096)  # configs: small; layers: not
    calls = _counting_decompression(monkeypatch)
    store = BlobStore(tmp_path / "cache")
    archive = tmp_path / "app.tar.gz"
    archive.write_bytes(COMPRESS["gz"](classic_archive()[0]))
    resolve(f"docker-archive:{archive}", Fetch(store=store))
    (index,) = store.archive_index_dir().glob("*/index.json")
    doc = json.loads(index.read_text())
    index.write_text("{not json")  # unreadable: read the archive again
    resolve(f"docker-archive:{archive}", Fetch(store=store))
    assert len(calls) == 2
    offset, size = doc["members"]["abc/layer.tar"]
    doc["members"]["abc/layer.tar"] = [offset - 512, size]  # what the archive does not hold
    index.write_text(json.dumps(doc))
    image = resolve(f"docker-archive:{archive}", Fetch(store=store))
    before = set(store.scratch_dir().iterdir())  # (the copies of the reads above, until exit)
    with pytest.raises(Oci2vmError, match=r"app.tar.gz: the archive changed while it was read"):
        read_layers(image)
    assert set(store.scratch_dir().iterdir()) == before
