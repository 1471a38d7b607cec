"""Files a source names that are not readable regular files: a FIFO (which would block
forever), a directory, a symlink loop, an oversized or unreadable index.json, in an OCI
layout, as an archive, as a tar: source. Each is a one-line error, at once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.sources import Fetch, resolve
from support.deadline import within
from support.layouts import directory, file, write_layout

LAYERS = [[directory("etc"), file("etc/hostname", b"x\n")]]


def _error(call: Callable[[], object]) -> str:
    with within(5), pytest.raises(Oci2vmError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def _resolve(source: str) -> Callable[[], object]:
    return lambda: resolve(source, Fetch())


def _fifo_in_place_of(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_a_fifo_as_a_layer_blob_in_a_layout_is_refused(tmp_path: Path) -> None:
    built = write_layout(tmp_path / "img", LAYERS)
    blob = tmp_path / "img/blobs/sha256" / built.layer_digests[0].split(":")[1]
    _fifo_in_place_of(blob)
    assert _error(_resolve(f"oci:{tmp_path / 'img'}")) == f"{blob}: is a FIFO, not a regular file"


def test_a_fifo_or_a_directory_as_manifest_or_index_json_is_refused(tmp_path: Path) -> None:
    built = write_layout(tmp_path / "img", LAYERS)
    manifest = tmp_path / "img/blobs/sha256" / built.manifest_digest.split(":")[1]
    _fifo_in_place_of(manifest)
    assert _error(_resolve(f"oci:{tmp_path / 'img'}")) == (
        f"{manifest}: is a FIFO, not a regular file"
    )
    index = tmp_path / "img/index.json"
    index.unlink()
    index.mkdir()
    assert _error(_resolve(f"oci:{tmp_path / 'img'}")) == (
        f"{index}: is a directory, not a regular file"
    )


def test_a_symlink_loop_as_index_json_or_blob_is_named(tmp_path: Path) -> None:
    built = write_layout(tmp_path / "img", LAYERS)
    config = tmp_path / "img/blobs/sha256" / built.config_digest.split(":")[1]
    config.unlink()
    config.symlink_to(config)
    assert _error(_resolve(f"oci:{tmp_path / 'img'}")) == (
        f"cannot read {config}: Too many levels of symbolic links"
    )
    index = tmp_path / "img/index.json"
    index.unlink()
    index.symlink_to(index)
    assert _error(_resolve(f"oci:{tmp_path / 'img'}")) == (
        f"cannot read {index}: Too many levels of symbolic links"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_index_json_is_named(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", LAYERS)
    index = tmp_path / "img/index.json"
    index.chmod(0)
    assert _error(_resolve(f"oci:{tmp_path / 'img'}")) == (
        f"cannot read {index}: Permission denied"
    )


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive", "tar"])
def test_a_fifo_as_an_archive_is_refused(tmp_path: Path, transport: str) -> None:
    fifo = tmp_path / "image.tar"
    os.mkfifo(fifo)
    assert _error(_resolve(f"{transport}:{fifo}")) == f"{fifo}: is a FIFO, not a regular file"


@pytest.mark.parametrize("transport", ["oci", "oci-archive", "docker-archive", "tar"])
def test_a_symlink_loop_as_the_source_path_is_named(tmp_path: Path, transport: str) -> None:
    loop = tmp_path / "image"
    loop.symlink_to(loop)
    assert _error(_resolve(f"{transport}:{loop}")) == (
        f"cannot read {loop}: Too many levels of symbolic links"
    )


def _tar_header(name: bytes, size: int, kind: bytes) -> bytes:
    header = bytearray(512)
    header[: len(name)] = name
    header[100:108] = b"0000644\0"
    header[124:136] = b"%011o\0" % size
    header[148:156] = b" " * 8
    header[156:157] = kind
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_an_archive_whose_metadata_claims_gigabytes_is_refused_unread(
    tmp_path: Path, kind: bytes
) -> None:
    archive = tmp_path / "image.tar"
    claimed = 2 << 30
    with open(archive, "wb") as f:
        f.write(_tar_header(b"././@PaxHeader", claimed, kind))
        f.truncate(512 + claimed + 1024)  # sparse: the claim is real, the bytes zeros
    assert _error(_resolve(f"oci-archive:{archive}")) == (
        f"{archive}: a tar header claims {claimed} bytes of metadata (more than 1048576): "
        "not an image archive"
    )


def test_an_output_that_is_the_source_is_refused(tmp_path: Path) -> None:
    """-o r.tar for tar:r.tar would replace what the build reads (through a link too)."""
    from oci2vm.sources import check_output

    tar = tmp_path / "r.tar"
    tar.write_bytes(b"")
    (tmp_path / "x.ext4").symlink_to("r.tar")
    layout = tmp_path / "layout"
    (layout / "blobs").mkdir(parents=True)
    for source, output in (
        (f"tar:{tar}", tar),
        (f"docker-archive:{tar}:app:1", tmp_path / "x.ext4"),
        (f"oci:{layout}:app", layout / "blobs/x"),
    ):
        with pytest.raises(Oci2vmError, match=f"-o {output}: that is where the source"):
            check_output(source, output)
    check_output(f"tar:{tar}", tmp_path / "other.ext4")
    check_output("docker://reg/app:1", tar)


def test_a_bare_name_that_is_also_a_local_path_names_both_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oci2vm.sources import Fetch, resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "layout").mkdir()
    with pytest.raises(
        Oci2vmError,
        match=r"^layout names a directory here and an image in a registry: write oci:layout "
        r"for the directory \(or another transport\), docker://layout for the image$",
    ):
        resolve("layout", Fetch())
