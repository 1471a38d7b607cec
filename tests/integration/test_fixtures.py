"""Sanity checks of the fixture images themselves: outside tools (skopeo, umoci, GNU tar)
accept every form, every digest names its bytes, and the busybox case table holds."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import pytest
import zstandard

from fixture_images import (
    BUSYBOX_CASES,
    SCRIPT,
    FixtureSet,
    busybox_fixture,
    debian_fixture,
    expected_tree,
    fixture,
    fixture_is_cached,
)
from support.programs import requires

pytestmark = pytest.mark.fixture

MT_TAR = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(
    scope="module", params=["busybox", "busybox-app", "debian", "debian-systemd", "debian-minbase"]
)
def image(request: pytest.FixtureRequest) -> FixtureSet:
    name = request.param
    if name.startswith("debian") and not fixture_is_cached(name) and os.geteuid() != 0:
        pytest.skip(f"building the {name} fixture needs root (debootstrap, chroot)")
    return fixture(name)


@pytest.fixture(scope="module")
def busybox() -> FixtureSet:
    return busybox_fixture()


@pytest.fixture(scope="module")
def debian() -> FixtureSet:
    if not fixture_is_cached("debian") and os.geteuid() != 0:
        pytest.skip("building the debian fixture needs root (debootstrap, chroot)")
    return debian_fixture()


def run_json(*argv: str) -> Any:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def raw_digest(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return "sha256:" + hashlib.sha256(proc.stdout).hexdigest()


def sha256_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def decompressed(path: Path, media_type: str) -> IO[bytes]:
    handle = open(path, "rb")  # noqa: SIM115 - the caller closes the returned stream
    if media_type.endswith("+gzip"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=handle))
    if media_type.endswith("+zstd"):
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(handle, closefd=True))
    assert media_type == MT_TAR
    return handle


def layout_layers(image: FixtureSet) -> Iterator[tuple[Path, str]]:
    blobs = image.oci_layout / "blobs" / "sha256"
    for digest, media_type in zip(image.layer_digests, image.layer_media_types, strict=True):
        yield blobs / digest.removeprefix("sha256:"), media_type


@requires("skopeo")
def test_skopeo_reads_the_oci_layout(image: FixtureSet) -> None:
    ref = f"oci:{image.oci_layout}:{image.tag}"
    assert raw_digest("skopeo", "inspect", "--raw", ref) == image.manifest_digest
    assert raw_digest("skopeo", "inspect", "--config", "--raw", ref) == image.config_digest
    info = run_json("skopeo", "inspect", ref)
    assert info["Layers"] == list(image.layer_digests)
    assert info["Env"] == list(image.env)


@requires("umoci")
def test_umoci_stat_reads_the_oci_layout(image: FixtureSet) -> None:
    stat = run_json("umoci", "stat", "--json", "--image", f"{image.oci_layout}:{image.tag}")
    layers = [h["layer"]["digest"] for h in stat["history"] if h.get("layer")]
    assert layers == list(image.layer_digests)


@requires("skopeo")
@pytest.mark.parametrize("name", ["busybox", "busybox-app"])
def test_skopeo_reads_the_oci_archive(name: str) -> None:
    image = fixture(name)
    assert image.oci_archive is not None
    ref = f"oci-archive:{image.oci_archive}:{image.tag}"
    assert raw_digest("skopeo", "inspect", "--raw", ref) == image.manifest_digest


@requires("skopeo")
@pytest.mark.parametrize("form", ["docker_archive", "docker_oci_archive"])
def test_skopeo_reads_the_docker_archives(image: FixtureSet, form: str) -> None:
    ref = f"docker-archive:{getattr(image, form)}"
    assert raw_digest("skopeo", "inspect", "--config", "--raw", ref) == image.config_digest
    info = run_json("skopeo", "inspect", ref)
    assert info["Layers"] == list(image.diff_ids)


def test_layout_digests_name_their_bytes(image: FixtureSet) -> None:
    index = json.loads((image.oci_layout / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == image.tag
    assert entry["digest"] == image.manifest_digest
    blobs = image.oci_layout / "blobs" / "sha256"
    manifest_bytes = (blobs / entry["digest"].removeprefix("sha256:")).read_bytes()
    assert len(manifest_bytes) == entry["size"]
    manifest = json.loads(manifest_bytes)
    config_bytes = (blobs / image.config_digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(config_bytes).hexdigest() == image.config_digest
    assert manifest["config"]["size"] == len(config_bytes)
    config = json.loads(config_bytes)
    assert config["rootfs"]["diff_ids"] == list(image.diff_ids)
    for descriptor, diff_id in zip(manifest["layers"], image.diff_ids, strict=True):
        blob = blobs / descriptor["digest"].removeprefix("sha256:")
        with open(blob, "rb") as handle:
            assert sha256_stream(handle) == descriptor["digest"]
        assert blob.stat().st_size == descriptor["size"]
        with decompressed(blob, descriptor["mediaType"]) as stream:
            assert sha256_stream(stream) == diff_id
    for path in blobs.iterdir():
        assert path.name in {d.removeprefix("sha256:") for d in image.layer_digests} | {
            image.config_digest.removeprefix("sha256:"),
            image.manifest_digest.removeprefix("sha256:"),
        }


@pytest.mark.parametrize("form", ["docker_archive", "docker_oci_archive"])
def test_docker_archive_members_name_their_bytes(image: FixtureSet, form: str) -> None:
    with tarfile.open(getattr(image, form)) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        [entry] = manifest
        assert entry["RepoTags"] == [image.repo_tag]
        config = archive.extractfile(entry["Config"])
        assert config is not None and sha256_stream(config) == image.config_digest
        assert len(entry["Layers"]) == len(image.diff_ids)
        for member, diff_id in zip(entry["Layers"], image.diff_ids, strict=True):
            layer = archive.extractfile(member)
            assert layer is not None and sha256_stream(layer) == diff_id
        if form == "docker_archive":
            assert all(name.endswith("/layer.tar") for name in entry["Layers"])
        else:
            index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
            assert index["manifests"][0]["digest"] == image.docker_oci_manifest_digest


@requires("tar")
def test_gnu_tar_lists_every_layer(image: FixtureSet) -> None:
    for blob, media_type in layout_layers(image):
        with decompressed(blob, media_type) as stream:
            lister = subprocess.Popen(
                ["tar", "-tvf", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            assert lister.stdin is not None
            shutil.copyfileobj(stream, lister.stdin)
            lister.stdin.close()
            errors = lister.stderr.read() if lister.stderr else b""
            assert lister.wait() == 0, errors


def test_rootfs_tar_matches_the_expected_tree(image: FixtureSet) -> None:
    tree = expected_tree(image)
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
             tarfile.FIFOTYPE: "fifo"}  # fmt: skip
    seen = []
    with tarfile.open(image.rootfs_tar, encoding="utf-8", errors="surrogateescape") as archive:
        for member in archive:
            path = member.name.rstrip("/")
            record = tree[path]
            assert kinds[member.type] == record["kind"], path
            assert (member.mode & 0o7777, member.uid, member.gid) == (
                record["mode"], record["uid"], record["gid"],
            ), path  # fmt: skip
            if member.issym() or member.islnk():
                assert member.linkname == record["linkname"], path
            seen.append(path)
    assert seen == list(tree)
    assert image.entries == len(tree)


def test_busybox_cases_hold_after_flattening(busybox: FixtureSet) -> None:
    tree = expected_tree(busybox)
    for case in BUSYBOX_CASES:
        assert (case.path in tree) == case.present, case


def test_busybox_special_entries_are_exact(busybox: FixtureSet) -> None:
    tree = expected_tree(busybox)
    assert tree["bin/busybox"]["kind"] == tree["bin/sh"]["kind"] == "hardlink"
    assert tree["bin/sh"]["linkname"] == "bin/ash"
    assert tree["data/upper-link"] == {**tree["data/upper-link"], "linkname": "data/lower-only"}
    assert tree["dev/null"]["rdev"] == [1, 3] and tree["dev/sda"]["rdev"] == [8, 0]
    assert tree["srv"]["mode"] == 0o750 and tree["srv"]["uid"] == 1000
    assert tree["tmp"]["mode"] == 0o1777 and tree["usr/bin/suid"]["mode"] == 0o4755
    assert tree["times/nanosecond"]["mtime_ns"] == 1_700_000_000_123_456_789
    assert tree["times/pre-1970"]["mtime_ns"] == -315_619_200 * 10**9
    assert tree["etc/recreated"]["size"] == len("layer 3 version\n")
    assert tree["sparse/file"]["size"] == 64 << 20
    assert tree["usr/bin/netcap"]["xattrs"]["security.capability"] == (
        "0100000200200000000000000000000000000000"
    )
    assert set(tree["srv/acl-dir"]["xattrs"]) == {
        "system.posix_acl_access",
        "system.posix_acl_default",
    }
    assert sum(1 for path in tree if path.startswith("many/")) == 3000
    assert busybox.entrypoint == ("/bin/sh", "-c") and busybox.cmd == ("echo hello",)
    assert (busybox.working_dir, busybox.user) == ("/app", "1000:1000")
    assert "FOO=bar" in busybox.env


def test_busybox_sh_runs(busybox: FixtureSet, tmp_path: Path) -> None:
    with tarfile.open(busybox.rootfs_tar) as archive:
        binary = archive.extractfile("bin/ash")
        assert binary is not None
        (tmp_path / "sh").write_bytes(binary.read())
    (tmp_path / "sh").chmod(0o755)
    proc = subprocess.run(
        [tmp_path / "sh", "-c", "echo hello"], capture_output=True, text=True, check=False
    )
    assert proc.stdout == "hello\n"


def test_debian_fixture_looks_like_the_article(debian: FixtureSet) -> None:
    image = debian
    tree = expected_tree(image)
    assert 11_000 < image.entries < 16_000
    assert image.layer_media_types == (MT_TAR + "+gzip",) * 2
    assert image.cmd == ("/bin/bash",)
    assert any(path.startswith("boot/vmlinuz-") for path in tree)
    assert "system.posix_acl_default" in tree["var/log/journal"].get("xattrs", {})
    assert not [p for p in tree if p.startswith("var/lib/apt/lists/")]


def test_a_cached_fixture_loads_in_well_under_a_second(busybox: FixtureSet) -> None:
    started = time.monotonic()
    again = busybox_fixture()
    assert time.monotonic() - started < 0.5
    assert again == busybox


def test_two_builders_at_once_share_one_deterministic_build(
    busybox: FixtureSet, tmp_path: Path
) -> None:
    shutil.copytree(busybox.root.parent / "downloads", tmp_path / "downloads")  # no network
    command = [sys.executable, str(SCRIPT), "busybox", "--cache", str(tmp_path)]
    builders = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [builder.communicate()[1] for builder in builders]
    assert [builder.returncode for builder in builders] == [0, 0], logs
    assert sum(log.count("building busybox") for log in logs) == 1
    rebuilt = busybox_fixture(tmp_path)
    facts = ("config_digest", "diff_ids", "layer_digests", "manifest_digest", "entries",
             "docker_oci_manifest_digest")  # fmt: skip
    assert [getattr(rebuilt, f) for f in facts] == [getattr(busybox, f) for f in facts]
    assert rebuilt.rootfs_tar.read_bytes() == busybox.rootfs_tar.read_bytes()


def _tree_of_tar(path: Path) -> dict[str, tuple[object, ...]]:
    """Path -> (type, mode, uid, gid, whole-second mtime, link target, content hash)."""
    tree: dict[str, tuple[object, ...]] = {}
    with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as archive:
        for member in archive:
            data = archive.extractfile(member) if member.isreg() else None
            tree[member.name.removeprefix("./").rstrip("/")] = (
                member.type, member.mode & 0o7777, member.uid, member.gid, int(member.mtime),
                member.linkname, sha256_stream(data) if data else None,
            )  # fmt: skip
    return tree


@requires("podman")
def test_podman_flattens_busybox_to_the_same_tree(busybox: FixtureSet, tmp_path: Path) -> None:
    """containers/storage is an independent flattener: `podman export` of a container made
    from the oci-archive must match rootfs.tar, except what podman's vfs driver and export
    drop (xattrs, sub-second mtimes, mtimes before 1970)."""
    assert busybox.oci_archive is not None
    runroot = Path(tempfile.mkdtemp(prefix="podman-"))  # podman wants <= 50 characters
    podman = ["podman", "--storage-driver", "vfs", "--root", str(tmp_path / "root"),
              "--runroot", str(runroot)]  # fmt: skip
    for argv in (
        ["load", "-i", str(busybox.oci_archive)],
        ["create", "--name", "flat", "localhost/fixture:latest"],
        ["export", "flat", "-o", str(tmp_path / "export.tar")],
    ):
        proc = subprocess.run([*podman, *argv], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    ours, theirs = _tree_of_tar(busybox.rootfs_tar), _tree_of_tar(tmp_path / "export.tar")
    assert ours.keys() == theirs.keys()
    differing = {path for path in ours if ours[path] != theirs[path]}
    assert differing == {"times/pre-1970"}
    subprocess.run([*podman, "rm", "-a"], capture_output=True, check=False)
    subprocess.run([*podman, "rmi", "-a"], capture_output=True, check=False)
    shutil.rmtree(runroot, ignore_errors=True)
