"""A kernel oci2vm cannot inject, through the CLI: a mirror signed by another key, a cached
kernel package whose bytes changed while the mirror is unreachable, an unknown flavour or
suite, no network and nothing cached, and --init / --kernel asking for what the image lacks.
Each fails before anything boots, with exit status 1, one line on stderr that names the
fix, and nothing left behind: no output file, no temporary file (in the output's
directory, the temporary directory or the cache).

The mirrors are built here (support.debarchives) and signed by throwaway gpg keys; their
kernel is a fake: every case fails before its bytes would matter."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.debian.archive import Archive
from oci2vm.debian.kernel import kernel_package
from oci2vm.image.blobs import BlobStore
from support.debarchives import GpgKey, MirrorTree, kernel_pkgs, need_gpg, served, write_mirror
from support.disks import cli, image_members
from support.layouts import write_layout
from support.runcli import free_port

pytestmark = pytest.mark.requires("gpg", "gpgv")

KERNEL = "debian:bookworm:test"  # the fake flavour of support.debarchives.kernel_pkgs
KERNEL_PACKAGE = "linux-image-6.1.0-9-test"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> GpgKey:
    need_gpg()
    return GpgKey(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> GpgKey:
    need_gpg()
    return GpgKey(tmp_path_factory.mktemp("gnupg-other"), "Someone Else")


@pytest.fixture(scope="module")
def mirror(key: GpgKey, tmp_path_factory: pytest.TempPathFactory) -> MirrorTree:
    return write_mirror(tmp_path_factory.mktemp("mirror"), kernel_pkgs(), sign=key.sign)


@pytest.fixture(scope="module")
def no_init(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image with neither init nor kernel (its Cmd would be the workload)."""
    path = tmp_path_factory.mktemp("layouts") / "noinit"
    members = [m for m in image_members() if not m.info.name.startswith(("boot/", "sbin/", "lib/"))]
    write_layout(path, [members], config={"Cmd": ["/bin/true"]})
    return f"oci:{path}"


@dataclass
class Places:
    out: Path  # the -o file, alone in its directory
    cache: Path
    tmp: Path  # the temporary directory the build sees


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Places:
    for name in ("out", "cache", "tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return Places(tmp_path / "out" / "disk.img", tmp_path / "cache", tmp_path / "tmp")


def fails_cleanly(places: Places, source: str, *args: str) -> str:
    """Build `source` with `args`; assert the failure's shape and return its one line."""
    result = cli("build", source, "-o", str(places.out), "--cache-dir", str(places.cache), *args)
    assert result.code == 1, result.err
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("oci2vm: error: "), result.err
    assert list(places.out.parent.iterdir()) == []
    assert list(places.tmp.iterdir()) == []
    leftovers = [p for p in places.cache.rglob("*") if p.name.startswith((".tmp", ".build"))]
    assert leftovers == []
    assert list((places.cache / "tmp").glob("*")) == []
    assert list((places.cache / "run").glob("*")) == []
    return lines[0].removeprefix("oci2vm: error: ")


def test_a_mirror_signed_by_another_key_is_refused(
    kernelless: str, key: GpgKey, other_key: GpgKey, places: Places, tmp_path: Path
) -> None:
    forged = write_mirror(tmp_path / "forged", kernel_pkgs(), sign=other_key.sign)
    message = fails_cleanly(places, kernelless, "--kernel", KERNEL, "--mirror", forged.url,
                            "--keyring", str(key.keyring))  # fmt: skip
    assert message == (
        f"{forged.url}/dists/bookworm/InRelease: signed by no key of {key.keyring}: "
        "update debian-archive-keyring, or give the mirror's key with --keyring FILE"
    )
    # Nothing of the forged archive was kept: not its Release, not its packages.
    kept = [p for part in ("blobs", "refs") for p in (places.cache / part).rglob("*")]
    assert not any(p.is_file() for p in kept)


def test_a_tampered_cached_kernel_package_is_refused_while_the_mirror_is_unreachable(
    kernelless: str, key: GpgKey, mirror: MirrorTree, places: Places
) -> None:
    store = BlobStore(places.cache)
    with served(mirror.root) as url:
        archive = Archive(store, "bookworm", Arch.AMD64, mirror=url, keyrings=[key.keyring])
        package = kernel_package(archive, "test")
        cached = archive.download(package)
    # The mirror is gone; the cache still holds its Release and the kernel package, whose
    # bytes change (same size, one byte flipped).
    data = bytearray(cached.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.path.write_bytes(data)
    message = fails_cleanly(places, kernelless, "--kernel", KERNEL, "--mirror", url,
                            "--keyring", str(key.keyring))  # fmt: skip
    assert message.startswith(f"{url}/{package.filename}: unreachable")
    assert message.endswith(f"and {package} is not cached: connect to the network and retry")
    # The tampered copy is gone, and not replaced by anything.
    assert store.get(f"sha256:{package.sha256}") is None
    assert KERNEL_PACKAGE in str(package)


def test_the_same_cache_untampered_would_have_served(
    kernelless: str, key: GpgKey, mirror: MirrorTree, places: Places
) -> None:
    """The control of the test above: offline with an intact cache, the kernel package is
    read (the build goes on, and fails only where the fake kernel lacks ext4)."""
    store = BlobStore(places.cache)
    with served(mirror.root) as url:
        archive = Archive(store, "bookworm", Arch.AMD64, mirror=url, keyrings=[key.keyring])
        archive.download(kernel_package(archive, "test"))
    result = cli("build", kernelless, "-o", str(places.out), "--cache-dir", str(places.cache),
                 "--kernel", KERNEL, "--mirror", url, "--keyring", str(key.keyring))  # fmt: skip
    assert result.code == 1
    assert f"{KERNEL_PACKAGE} 6.1.1-1: the kernel has no ext4" in result.err
    assert not places.out.exists()


def test_an_unknown_flavour_names_the_suites_flavours(
    kernelless: str, key: GpgKey, mirror: MirrorTree, places: Places
) -> None:
    message = fails_cleanly(places, kernelless, "--kernel", "debian:bookworm:nosuch",
                            "--mirror", mirror.url, "--keyring", str(key.keyring))  # fmt: skip
    assert message == "unknown kernel flavour 'nosuch' in bookworm for amd64: name one of test"


def test_an_unknown_suite_names_the_known_ones(
    kernelless: str, key: GpgKey, mirror: MirrorTree, places: Places
) -> None:
    message = fails_cleanly(places, kernelless, "--kernel", "debian:nosuch:test",
                            "--mirror", mirror.url, "--keyring", str(key.keyring))  # fmt: skip
    assert message == (
        f"unknown suite 'nosuch' on {mirror.url} (no InRelease): name one of bookworm, "
        "trixie, sid (or stable, testing, unstable), or check --mirror"
    )


def test_no_network_and_nothing_cached(kernelless: str, key: GpgKey, places: Places) -> None:
    closed = f"http://127.0.0.1:{free_port()}/debian"
    message = fails_cleanly(places, kernelless, "--kernel", KERNEL, "--mirror", closed,
                            "--keyring", str(key.keyring))  # fmt: skip
    assert message.startswith(f"{closed}/dists/bookworm/InRelease: unreachable")
    assert message.endswith(
        "and no Release of bookworm is cached: connect to the network (or choose a "
        "reachable --mirror) and retry"
    )


def test_init_system_on_an_image_without_init(no_init: str, places: Places) -> None:
    message = fails_cleanly(places, no_init, "--init", "system")
    assert message == (
        f"{no_init}: the image has no init (looked for /sbin/init, /usr/sbin/init, "
        "/bin/init, /lib/systemd/systemd): run its Entrypoint and Cmd with --init app"
    )


def test_kernel_image_on_an_image_without_kernel(kernelless: str, places: Places) -> None:
    message = fails_cleanly(places, kernelless, "--kernel", "image")
    assert message == (
        f"{kernelless}: the image has no kernel (looked for /boot/vmlinuz-*, "
        "/lib/modules/*/vmlinuz, /vmlinuz): drop --kernel image to inject Debian's"
    )
