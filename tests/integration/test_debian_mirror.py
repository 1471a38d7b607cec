"""The archive chain against a real Debian mirror (the machine's apt mirror): bookworm's
InRelease checked with Debian's archive keys by gpgv, the kernel metapackage resolved and
its index entry verified, busybox-static fetched, verified and read. What is downloaded is
kept in the fixture cache, so a rerun fetches only the InRelease (and works offline).

The kernel package itself (~70 MB) is downloaded once, as the kernel injection's tests
need it anyway. Select these tests with -m fixture."""

from __future__ import annotations

import os
import re

import pytest

from oci2vm.arch import Arch
from oci2vm.debian.archive import Archive
from oci2vm.debian.deb import open_deb
from oci2vm.debian.kernel import kernel_package
from oci2vm.debian.transport import Mirror, UnreachableError
from oci2vm.errors import Oci2vmError
from support.debarchives import configured_mirror, fixture_store, need_gpg

pytestmark = pytest.mark.fixture
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class OfflineMirror(Mirror):
    def open(self, path: str) -> tuple[object, int]:  # type: ignore[override]
        raise UnreachableError(f"{self.url}/{path}: unreachable (test)")


@pytest.fixture(scope="module")
def bookworm() -> Archive:
    need_gpg()
    if not os.path.isfile(KEYRING):
        pytest.skip(f"needs {KEYRING} (apt-get install debian-archive-keyring)")
    archive = Archive(fixture_store(), "bookworm", Arch.AMD64, mirror=configured_mirror())
    try:
        archive.release()
    except Oci2vmError as e:
        if "unreachable" in str(e) and "connect to the network" in str(e):
            pytest.skip(f"no mirror and nothing cached: {e}")
        raise
    return archive


def test_bookworm_release_is_verified_with_debians_keys(bookworm: Archive) -> None:
    release = bookworm.release()
    assert release.codename == "bookworm"
    assert "amd64" in release.architectures
    assert "main/binary-amd64/Packages.xz" in release.files


def test_the_kernel_metapackage_resolves_to_a_versioned_kernel(bookworm: Archive) -> None:
    package = kernel_package(bookworm)
    assert re.fullmatch(r"linux-image-6\.1\.0-\d+-amd64", package.name), package.name
    assert package.source == "linux-signed-amd64"
    assert re.fullmatch(r"[0-9a-f]{64}", package.sha256)
    assert package.size > 20 << 20
    cloud = kernel_package(bookworm, "cloud-amd64")
    assert re.fullmatch(r"linux-image-6\.1\.0-\d+-cloud-amd64", cloud.name), cloud.name


def test_the_kernel_package_verifies_and_holds_vmlinuz(bookworm: Archive) -> None:
    package = kernel_package(bookworm)
    with open_deb(bookworm.download(package), str(package)).data() as tar:
        names = [m.name for m in tar]
    version = package.name.removeprefix("linux-image-")
    assert f"./boot/vmlinuz-{version}" in names
    assert any(n.endswith("/ext4.ko") or n.endswith("/ext4.ko.xz") for n in names)


def test_busybox_static_is_fetched_verified_and_read(bookworm: Archive) -> None:
    package = bookworm.resolve("busybox-static")
    assert package.name == "busybox-static"
    deb = open_deb(bookworm.download(package), str(package))
    assert deb.control()["Package"] == "busybox-static"
    with deb.data() as tar:
        for member in tar:
            if member.name == "./bin/busybox":
                head = bytes(tar.view(4))
                size = member.size
    assert head == b"\x7fELF"
    assert size > 1 << 20


def test_a_second_run_resolves_offline_from_the_cache(bookworm: Archive) -> None:
    package = bookworm.resolve("busybox-static")
    bookworm.download(package)
    offline = Archive(bookworm.store, "bookworm", Arch.AMD64,
                      mirror=OfflineMirror(bookworm.mirror.url))  # fmt: skip
    assert offline.download(offline.resolve("busybox-static")) == bookworm.download(package)
    assert "unreachable: using the bookworm Release cached" in offline.notes[0]
