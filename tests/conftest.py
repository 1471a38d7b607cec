"""The test suite's plumbing: what the markers do, and the fixtures shared by several
test modules. Helpers live in tests/support/; this directory is on sys.path (pytest puts
a rootdir-less conftest's directory there), so tests import `support.*` and
`fixture_images`.

Markers (declared in pyproject.toml):
  requires(*needs)  skip naming the Debian package when a program or file is missing;
                    under CI (CI=true) fail instead. Use support.programs.requires.
  root              skip unless running as root (loop mounts, debootstrap).
  qemu, registry, fixture   only select (-m "not qemu").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from oci2vm.image.blobs import BlobStore
    from support.disks import Disk, Layout
    from support.registries import PushedImages, Registry

# Helpers in support/ assert too: rewrite them like test modules, for readable failures.
# (Hence support is imported inside the functions below, after this line.)
pytest.register_assert_rewrite("support")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from support.programs import need

    needs = [name for mark in item.iter_markers("requires") for name in mark.args]
    if needs:
        need(*needs, at_item=True)
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root")


# --- registries --------------------------------------------------------------------------


@pytest.fixture
def no_host_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's own auth files and trust store out of a registry test (modules
    that talk to registries use it for every test: pytestmark usefixtures)."""
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    from oci2vm.image.blobs import BlobStore

    return BlobStore(tmp_path / "cache")


@pytest.fixture(scope="session")
def pushed_images(tmp_path_factory: pytest.TempPathFactory) -> PushedImages:
    from support.registries import pushed_images

    return pushed_images(tmp_path_factory.mktemp("layout"))


@pytest.fixture(scope="session")
def registry_anonymous(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    from support.programs import need
    from support.registries import push_all, running_registry

    need("docker-registry", "skopeo")
    with running_registry(tmp_path_factory.mktemp("registry-anonymous")) as registry:
        yield push_all(registry, pushed_images)


@pytest.fixture(scope="session")
def registry_basic(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    from support.programs import need
    from support.registries import PASSWORD, USER, push_all, running_registry

    need("docker-registry", "skopeo", "htpasswd")
    directory = tmp_path_factory.mktemp("registry-basic")
    with running_registry(directory, basic=(USER, PASSWORD)) as registry:
        yield push_all(registry, pushed_images)


@pytest.fixture(scope="session")
def registry_token(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    from support.programs import need
    from support.registries import PASSWORD, USER, push_all, running_registry
    from support.tokens import token_server

    need("docker-registry", "skopeo")
    directory = tmp_path_factory.mktemp("registry-token")
    with (
        token_server(directory, {USER: PASSWORD}) as tokens,
        running_registry(directory, tokens=tokens) as registry,
    ):
        registry.user, registry.password = USER, PASSWORD  # for pushing
        push_all(registry, pushed_images)
        tokens.requests.clear()
        yield registry


@pytest.fixture(scope="session")
def registry_tls(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    from support.programs import need
    from support.registries import push_all, running_registry

    need("docker-registry", "skopeo")
    with running_registry(tmp_path_factory.mktemp("registry-tls"), tls=True) as registry:
        yield push_all(registry, pushed_images)


# --- bootable disks built through the CLI (tests/readback/test_disk_*.py) ----------------


@pytest.fixture(scope="session")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A small Debian-like image with a (fake) kernel, as an OCI layout."""
    from support.disks import Layout, image_members
    from support.layouts import write_layout

    path = tmp_path_factory.mktemp("layouts") / "debian"
    return Layout(f"oci:{path}", write_layout(path, [image_members()]))


@pytest.fixture(scope="session")
def kernelless(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same image without /boot: no kernel to boot."""
    from support.disks import image_members
    from support.layouts import write_layout

    path = tmp_path_factory.mktemp("layouts") / "nokernel"
    members = [m for m in image_members() if not m.info.name.startswith("boot/")]
    write_layout(path, [members])
    return f"oci:{path}"


@pytest.fixture(scope="session")
def hybrid(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Disk:
    """The default build: GPT, BIOS + UEFI, raw."""
    from support.disks import Disk, build_ok
    from support.programs import DISK_TOOLS, need

    need(*DISK_TOOLS)
    out = tmp_path_factory.mktemp("hybrid") / "disk.img"
    return Disk(out, build_ok(layout.source, "-o", str(out)))


@pytest.fixture(scope="session")
def mbr_bios(layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> Disk:
    from support.disks import Disk, build_ok
    from support.programs import DISK_TOOLS, need

    need(*DISK_TOOLS)
    out = tmp_path_factory.mktemp("mbr") / "disk.img"
    return Disk(out, build_ok(layout.source, "-o", str(out), "--table", "mbr", "--boot", "bios"))
