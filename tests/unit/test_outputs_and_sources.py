"""What a build refuses before it writes anything, and how sources are named: outputs
that are not regular files, skopeo's transports, empty root filesystem tarballs, a
Docker 25 archive whose index.json lists no manifests, whiteouts in a tar: source."""

from __future__ import annotations

import bz2
import io
import json
import lzma
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.layers.decompress import detect_compression
from oci2vm.sources import Fetch, oci_layout, resolve
from support.disks import build
from support.layouts import (
    build_image,
    build_index,
    directory,
    file,
    layer_tar,
    sha256,
    write_layout,
)


def small_layout(tmp_path: Path) -> str:
    write_layout(tmp_path / "img", [[directory("etc"), file("etc/hostname", b"x\n")]])
    return f"oci:{tmp_path / 'img'}"


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink-to-fifo"])
def test_output_that_is_no_regular_file_is_refused_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "special.ext4"
    if kind == "socket":
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
    else:
        os.mkfifo(tmp_path / "fifo")
        if kind == "fifo":
            os.replace(tmp_path / "fifo", target)
        else:
            target.symlink_to(tmp_path / "fifo")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = build(small_layout(tmp_path), "-o", str(target))
    assert result.code == 1
    assert "oci2vm replaces only regular files: choose another -o" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "img"])


def test_output_over_a_character_device_with_a_good_source_is_refused(tmp_path: Path) -> None:
    result = build(small_layout(tmp_path), "-o", "/dev/null", "--format", "ext4")
    assert result.code == 1
    assert "/dev/null: is a character device" in result.err


@pytest.mark.parametrize("transport", ["dir", "sif", "containers-storage", "ostree", "atomic"])
def test_skopeo_transports_are_never_registry_references(transport: str) -> None:
    with pytest.raises(Oci2vmError, match=f"transport {transport}: is not supported"):
        resolve(f"{transport}:image", Fetch())


def test_an_empty_rootfs_tarball_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "rootfs.tar"
    empty.write_bytes(b"")
    with pytest.raises(Oci2vmError, match="is empty, not a root filesystem tarball"):
        resolve(f"tar:{empty}", Fetch())


def test_whiteouts_in_a_rootfs_tarball_hide_nothing_and_are_dropped(tmp_path: Path) -> None:
    """A tar: source is one layer, as `docker import` and `podman import` read it: its
    whiteouts have nothing below them to hide, so they leave no entry behind."""
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(
        layer_tar(
            [
                directory("etc"),
                file("etc/a", b"a\n"),
                file("etc/.wh.b"),
                file(".wh..wh..opq"),
                directory("srv"),
                file("srv/.wh..wh..opq"),
            ]
        )
    )
    out = tmp_path / "root.ext4"
    result = build(f"tar:{tarball}", "-o", str(out), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["entries"] == 3  # /etc, /etc/a, /srv


@pytest.mark.parametrize(
    ("suffix", "pack"),
    [("xz", lambda data: lzma.compress(data) + lzma.compress(b"")), ("bz2", bz2.compress)],
)
def test_a_rootfs_tarball_compressed_by_xz_or_bzip2_is_read_as_docker_import_reads_it(
    tmp_path: Path, suffix: str, pack: Callable[[bytes], bytes]
) -> None:
    """debuerreotype's Debian, Gentoo's stage3 and Void's root filesystems come as
    .tar.xz; a layer of an image stays refused (no OCI media type names xz)."""
    tarball = tmp_path / f"rootfs.tar.{suffix}"
    tarball.write_bytes(pack(layer_tar([directory("etc"), file("etc/motd", b"hi\n")])))
    result = build(f"tar:{tarball}", "-o", str(tmp_path / "root.ext4"), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["entries"] == 2
    with pytest.raises(Oci2vmError, match=rf"^unsupported layer compression \({suffix[:2]}"):
        detect_compression(tarball.read_bytes()[:4], "application/vnd.oci.image.layer.v1.tar")


def test_a_file_larger_than_ext4_holds_is_refused_naming_it(tmp_path: Path) -> None:
    largest = (1 << 32) * 4096 - 4096  # 16 TiB less a block, with 4 KiB blocks
    sparse = {"GNU.sparse.size": str(largest + 1), "GNU.sparse.numblocks": "1",
              "GNU.sparse.map": f"{largest},1"}  # fmt: skip
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(layer_tar([directory("srv"), file("srv/huge.img", b"x", pax=sparse)]))
    out = tmp_path / "root.ext4"
    result = build(f"tar:{tarball}", "-o", str(out))
    assert result.code == 1
    assert result.err.strip() == (
        f"oci2vm: error: {tarball}: /srv/huge.img: a file of {largest + 1} bytes exceeds "
        "ext4's 16 TiB limit with 4 KiB blocks"
    )
    assert not out.exists()


def test_acls_as_text_are_left_out_as_container_runtimes_leave_them_and_said(
    tmp_path: Path,
) -> None:
    """GNU tar --acls writes SCHILY.acl.access/default (text, names or numbers): Go's
    archive/tar, docker, podman and umoci read only the binary xattr form. The build
    says what it left out."""
    acl = {"SCHILY.acl.access": "user::rw-\nuser:bob:r--\ngroup::r--\nmask::r--\nother::r--\n"}
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(
        layer_tar(
            [
                directory("srv", pax={**acl, "SCHILY.acl.default": "user::rwx\n"}),
                file("srv/a", b"a", pax=acl),
                file("srv/b", b"b"),
            ]
        )
    )
    result = build(f"tar:{tarball}", "-o", str(tmp_path / "root.ext4"), "--json")
    assert result.code == 0, result.err
    note = (  # (a tar: source is named by its file, an image's layer by its number)
        f"{tarball}: POSIX ACLs as text (SCHILY.acl.*, tar --acls) on 2 entries left out, "
        "as docker, podman and umoci leave them"
    )
    assert json.loads(result.out)["notes"] == [note]
    assert result.err.strip() == f"warning: {note}"


def docker25_archive(path: Path, manifests: object) -> None:
    """`docker save` of Docker >= 25: manifest.json beside an OCI layout's files."""
    layer = layer_tar([directory("etc"), file("etc/motd", b"hello\n")])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            "config": {},
        }
    ).encode()
    members = {
        f"blobs/sha256/{sha256(config)[7:]}": config,
        f"blobs/sha256/{sha256(layer)[7:]}": layer,
        "manifest.json": json.dumps(
            [
                {
                    "Config": f"blobs/sha256/{sha256(config)[7:]}",
                    "RepoTags": ["app:1"],
                    "Layers": [f"blobs/sha256/{sha256(layer)[7:]}"],
                }
            ]
        ).encode(),
        "index.json": json.dumps({"schemaVersion": 2, "manifests": manifests}).encode(),
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
    }
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("manifests", [None, [], "garbage"])
def test_docker_archive_without_usable_index_manifests_is_read_from_manifest_json(
    tmp_path: Path, manifests: object
) -> None:
    archive = tmp_path / "app.tar"
    docker25_archive(archive, manifests)
    image = resolve(f"docker-archive:{archive}", Fetch())
    assert image.name == "app:1"
    assert len(image.layers) == 1


def tar_members(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_docker25_archive_whose_index_names_another_image_is_read_from_manifest_json(
    tmp_path: Path,
) -> None:
    """index.json lists one image and manifest.json another (a hand-made archive): the
    image is manifest.json's, as skopeo reads it, not whichever the index lists."""
    members: dict[str, bytes] = {}
    images = []
    for motd in (b"one\n", b"two\n"):
        layer = layer_tar([directory("etc"), file("etc/motd", motd)])
        config = json.dumps(
            {"architecture": "amd64", "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}
        ).encode()  # fmt: skip
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": sha256(config), "size": len(config)},
             "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                         "digest": sha256(layer), "size": len(layer)}]}
        ).encode()  # fmt: skip
        for blob in (layer, config, manifest):
            members[f"blobs/sha256/{sha256(blob)[7:]}"] = blob
        images.append((sha256(config), sha256(layer), sha256(manifest), len(manifest)))
    (_, _, one_manifest, one_size), (two_config, two_layer, _, _) = images
    members["index.json"] = json.dumps(
        {"schemaVersion": 2,
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": one_manifest, "size": one_size}]}
    ).encode()  # fmt: skip
    members["manifest.json"] = json.dumps(
        [{"Config": f"blobs/sha256/{two_config[7:]}", "RepoTags": ["app:2"],
          "Layers": [f"blobs/sha256/{two_layer[7:]}"]}]
    ).encode()  # fmt: skip
    members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    archive = tmp_path / "app.tar"
    tar_members(archive, members)
    for ref in ("", ":app:2"):
        image = resolve(f"docker-archive:{archive}{ref}", Fetch())
        assert image.config_digest == two_config
        assert [layer.digest for layer in image.layers] == [two_layer]


@pytest.mark.parametrize("tags", [5, True, "app:1", {"app": 1}, [1]])
def test_repo_tags_that_are_not_a_list_of_names_are_a_malformed_manifest(
    tmp_path: Path, tags: object
) -> None:
    archive = tmp_path / "app.tar"
    docker25_archive(archive, None)
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    doc = json.loads(members["manifest.json"])
    doc[0]["RepoTags"] = tags
    members["manifest.json"] = json.dumps(doc).encode()
    tar_members(archive, members)
    for ref in ("", ":app:1"):
        with pytest.raises(Oci2vmError, match=r"malformed manifest\.json: RepoTags is not a list"):
            resolve(f"docker-archive:{archive}{ref}", Fetch())


def test_docker_archive_images_are_picked_by_skopeos_index_syntax(tmp_path: Path) -> None:
    archive = tmp_path / "app.tar"
    docker25_archive(archive, None)
    image = resolve(f"docker-archive:{archive}:@0", Fetch())
    assert image.name == "app:1" and len(image.layers) == 1
    with pytest.raises(Oci2vmError, match=r"app.tar: no image @1 \(the archive holds 1\)$"):
        resolve(f"docker-archive:{archive}:@1", Fetch())


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/srv/debian", "debian"),
        ("/srv/debian-v1/oci", "debian-v1"),
        ("/srv/app/image.tar", "app"),
        ("/srv/app.tar", "app"),
        ("/oci", "oci"),
    ],
)
def test_a_layouts_name_skips_generic_directory_names(path: str, name: str) -> None:
    assert oci_layout.layout_name(Path(path)) == name


def test_a_tag_on_an_index_and_on_a_manifest_is_not_guessed_between(tmp_path: Path) -> None:
    amd64 = build_image([[file("a", b"1")]])
    arm64 = build_image([[file("b", b"2")]], platform="linux/arm64")
    layout = write_layout(tmp_path / "l", {"old": build_index([arm64]), "new": amd64})
    index = json.loads((layout.path / "index.json").read_text())
    for entry in index["manifests"]:  # both tagged "latest", as a moved tag may be left
        entry["annotations"]["org.opencontainers.image.ref.name"] = "latest"
    (layout.path / "index.json").write_text(json.dumps(index))
    with pytest.raises(Oci2vmError, match=r":latest: 2 entries of index.json match: name one by"):
        resolve(f"oci:{layout.path}:latest", Fetch())
    image = resolve(f"oci:{layout.path}:{amd64.manifest_digest}", Fetch())
    assert image.config_digest == amd64.config_digest


def retag(layout: Path, tags: list[str], *, platforms: bool = True) -> None:
    index = json.loads((layout / "index.json").read_text())
    for entry, tag in zip(index["manifests"], tags, strict=True):
        entry["annotations"]["org.opencontainers.image.ref.name"] = tag
        if not platforms:
            entry.pop("platform", None)
    (layout / "index.json").write_text(json.dumps(index))


def test_one_manifest_listed_twice_under_a_tag_is_one_image(tmp_path: Path) -> None:
    """containers/image's fixture delete_image_two_identical_references: 1.0.0 twice."""
    image = build_image([[file("a", b"1")]])
    layout = write_layout(tmp_path / "l", {"a": image})
    index = json.loads((layout.path / "index.json").read_text())
    index["manifests"] *= 2
    (layout.path / "index.json").write_text(json.dumps(index))
    assert resolve(f"oci:{layout.path}:a", Fetch()).config_digest == image.config_digest


def test_two_images_under_one_tag_are_named_by_digest(tmp_path: Path) -> None:
    one, two = build_image([[file("a", b"1")]]), build_image([[file("b", b"2")]])
    layout = write_layout(tmp_path / "l", {"x": one, "y": two})
    retag(layout.path, ["1.0.0", "1.0.0"], platforms=False)
    with pytest.raises(Oci2vmError) as raised:
        resolve(f"oci:{layout.path}:1.0.0", Fetch())
    message = str(raised.value)
    assert "holds 2 images: name one by digest (sha256:" in message and "by tag" not in message
    assert one.manifest_digest in message and two.manifest_digest in message


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--root-password", "pw", "--hostname", "vm1"], "--hostname, --root-password"),
        (["--add-user", "alice:pw"], "--add-user"),
        (["--network", "none"], "--network"),
        (["--init", "app", "-e", "A=1"], "--init, --env"),
    ],
)
def test_a_bare_root_filesystem_refuses_the_system_options_it_would_drop(
    tmp_path: Path, options: list[str], named: str
) -> None:
    """--format ext4 is the image's tree as its layers have it: no preparation step runs,
    so the options of one are refused, not accepted and dropped."""
    out = tmp_path / "root.ext4"
    result = build(small_layout(tmp_path), "-o", str(out), *options)
    assert result.code == 1
    assert result.err.startswith(f"oci2vm: error: {named}: these prepare a bootable disk")
    assert not out.exists()
