"""The archive chain on a test mirror (file://): Release → Packages index → .deb, each
checked by the hash the step before lists; Valid-Until, Date and suite as apt checks them;
the blob cache, offline runs and a tampered cache. The OpenPGP check is stood in for by
support.debarchives.fake_verify here (tests/integration/test_debian_signature.py runs gpgv)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.debian.archive import Archive
from oci2vm.debian.kernel import kernel_package, kernel_packages
from oci2vm.debian.transport import Mirror, UnreachableError
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore
from support.debarchives import NOW, SUITE, MirrorTree, Pkg, kernel_pkgs, later, write_mirror
from support.debarchives import fake_verify as verify


class OfflineMirror(Mirror):
    def open(self, path: str) -> tuple[object, int]:  # type: ignore[override]
        raise UnreachableError(f"{self.url}/{path}: unreachable (NewConnectionError)")


def archive(
    mirror: MirrorTree | str, store: BlobStore, *, offline: bool = False, **kw: object
) -> Archive:
    url = mirror if isinstance(mirror, str) else mirror.url
    transport = OfflineMirror(url) if offline else Mirror(url)
    return Archive(store, SUITE, Arch.AMD64, mirror=transport, verify=verify,
                   now=lambda: NOW, **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture
def mirror(tmp_path: Path) -> MirrorTree:
    return write_mirror(tmp_path / "mirror", kernel_pkgs())


def test_metapackage_resolves_to_the_versioned_package_it_pins(
    mirror: MirrorTree, store: BlobStore
) -> None:
    package = archive(mirror, store).resolve("linux-image-test")
    assert (package.name, package.version, package.source) == (
        "linux-image-6.1.0-9-test", "6.1.1-1", "linux-signed"
    )  # fmt: skip
    assert package.sha256 == hashlib.sha256(mirror.debs[package.name]).hexdigest()
    assert package.filename == "pool/main/l/linux-image-6.1.0-9-test/" \
        "linux-image-6.1.0-9-test_6.1.1-1_amd64.deb"  # fmt: skip


def test_a_metapackage_pinning_two_goes_to_the_one_named_like_it(
    tmp_path: Path, store: BlobStore
) -> None:
    """sid's linux-image-amd64 (2026) pins linux-base-amd64 first, another metapackage
    of the same source, and linux-image-V-amd64, which holds the kernel."""
    pkgs = kernel_pkgs()
    source = {"Source": "linux-signed (6.1.1+1)"}
    pkgs[2] = Pkg(
        "linux-image-test",
        "6.1.1-1",
        fields={
            **source,
            "Depends": "linux-base-test (= 6.1.1-1), linux-image-6.1.0-9-test (= 6.1.1-1)",
        },
    )
    pkgs.append(Pkg("linux-base-test", "6.1.1-1", fields=source))
    sid = write_mirror(tmp_path / "mirror", pkgs)
    assert kernel_package(archive(sid, store), "test").name == "linux-image-6.1.0-9-test"


def split_kernel_pkgs() -> list[Pkg]:
    """sid's kernel (2026): linux-image-V holds documentation and pins linux-base-V,
    linux-binary-V (the kernel, of the signed source) and linux-modules-V; the
    metapackage pins the metapackage linux-base-FLAVOUR too."""
    signed, linux = {"Source": "linux-signed (7.2.1+1)"}, {"Source": "linux"}
    release, version = "7.2.1+deb14-test", "7.2.1-1"
    pin = f"linux-base-{release} (= {version})"
    parts = ", ".join(f"linux-{p}-{release} (= {version})" for p in ("base", "binary", "modules"))
    return [
        Pkg("linux-image-test", version, fields={
            **signed, "Depends": f"linux-base-test (= {version}), "
                                 f"linux-image-{release} (= {version})"}),
        Pkg("linux-base-test", version, fields={**signed, "Depends": pin}),
        Pkg(f"linux-image-{release}", version, fields={
            **signed, "Depends": f"linux-base (>= 4.17~), dracut | initramfs-tools, {parts}"}),
        Pkg(f"linux-base-{release}", version, fields=linux),
        Pkg(f"linux-binary-{release}", version, fields={**signed, "Depends": pin}),
        Pkg(f"linux-modules-{release}", version, fields={**linux, "Depends": f"kmod, {pin}"}),
        Pkg("linux-base", "4.17"),
    ]  # fmt: skip


def test_a_split_kernel_is_every_package_it_pins_in_the_order_dpkg_unpacks(
    tmp_path: Path, store: BlobStore
) -> None:
    a = archive(write_mirror(tmp_path / "mirror", split_kernel_pkgs()), store)
    passes = counting_passes(a)
    names = [p.name for p in kernel_packages(a, "test")]
    assert names == [f"linux-{p}-7.2.1+deb14-test" for p in ("base", "binary", "modules", "image")]
    assert len(passes) == 1  # the parts were expected by the kernel's pass
    one = archive(write_mirror(tmp_path / "one", kernel_pkgs()), store)
    assert [p.name for p in kernel_packages(one, "test")] == ["linux-image-6.1.0-9-test"]
    # every part of another source than linux-image-V's: the chain stops at linux-image-V
    unsigned = [Pkg(p.name, p.version, p.files, {**p.fields, "Source": "linux"})
                if p.name.startswith(("linux-binary-", "linux-base-7")) else p
                for p in split_kernel_pkgs()]  # fmt: skip
    other = archive(write_mirror(tmp_path / "other", unsigned), store)
    assert [p.name for p in kernel_packages(other, "test")] == names


def test_a_package_that_is_no_metapackage_resolves_to_itself(
    mirror: MirrorTree, store: BlobStore
) -> None:
    a = archive(mirror, store)
    assert a.resolve("busybox-static") == a.package("busybox-static")
    assert a.resolve("linux-image-6.1.0-9-test").name == "linux-image-6.1.0-9-test"
    assert [p.name for p in a.index().providers("busybox")] == ["busybox-static"]


def test_download_gives_the_verified_deb_from_the_blob_cache(
    mirror: MirrorTree, store: BlobStore
) -> None:
    a = archive(mirror, store)
    blob = a.download(a.package("busybox-static"))
    assert blob.path.read_bytes() == mirror.debs["busybox-static"]
    assert blob.path == store.path("sha256:" + hashlib.sha256(blob.path.read_bytes()).hexdigest())


def test_a_second_run_works_offline_from_the_cache(mirror: MirrorTree, store: BlobStore) -> None:
    archive(mirror, store).download(archive(mirror, store).resolve("linux-image-test"))
    offline = archive(mirror, store, offline=True)
    blob = offline.download(offline.resolve("linux-image-test"))
    assert blob.path.read_bytes() == mirror.debs["linux-image-6.1.0-9-test"]
    assert offline.notes == [
        f"{mirror.url} is unreachable: using the {SUITE} Release cached from 2026-07-01 "
        "(updates since are missing)"
    ]


def test_offline_without_a_cached_release_names_the_fix(
    mirror: MirrorTree, store: BlobStore
) -> None:
    with pytest.raises(Oci2vmError, match=r"no Release of bookworm is cached: connect to the"):
        archive(mirror, store, offline=True).release()


def test_offline_without_the_cached_package_names_the_fix(
    mirror: MirrorTree, store: BlobStore
) -> None:
    archive(mirror, store).resolve("busybox-static")
    offline = archive(mirror, store, offline=True)
    with pytest.raises(Oci2vmError, match=r"is not cached: connect to the network and retry$"):
        offline.download(offline.package("busybox-static"))


def test_a_tampered_packages_index_is_refused(mirror: MirrorTree, store: BlobStore) -> None:
    index = mirror.root / "dists" / SUITE / "main" / "binary-amd64" / "Packages.xz"
    index.write_bytes(index.read_bytes()[:-1] + b"\0")
    with pytest.raises(Oci2vmError, match=r"digest mismatch.*other bytes than its signed index"):
        archive(mirror, store).package("kmod")


def test_a_tampered_deb_is_refused_and_not_cached(mirror: MirrorTree, store: BlobStore) -> None:
    deb = mirror.path("busybox-static")
    deb.write_bytes(deb.read_bytes().replace(b"2.0\n", b"2.1\n"))
    a = archive(mirror, store)
    with pytest.raises(Oci2vmError, match=r"digest mismatch.*retry, or use another --mirror$"):
        a.download(a.package("busybox-static"))
    assert store.get(a.package("busybox-static").digest) is None


def test_a_truncated_deb_is_refused(mirror: MirrorTree, store: BlobStore) -> None:
    deb = mirror.path("busybox-static")
    deb.write_bytes(deb.read_bytes()[:-10])
    a = archive(mirror, store)
    with pytest.raises(Oci2vmError, match=r"truncated"):
        a.download(a.package("busybox-static"))


def test_a_tampered_cache_entry_is_fetched_again_online_and_refused_offline(
    mirror: MirrorTree, store: BlobStore
) -> None:
    a = archive(mirror, store)
    package = a.package("busybox-static")
    a.download(package).path.write_bytes(b"tampered")
    offline = archive(mirror, store, offline=True)
    with pytest.raises(Oci2vmError, match=r"is not cached: connect to the network"):
        offline.download(package)
    assert offline.notes[-1] == f"the cached {package} was corrupt: fetched it again"
    again = archive(mirror, store)
    assert again.download(package).path.read_bytes() == mirror.debs["busybox-static"]


def test_an_expired_release_is_refused_unless_allowed(tmp_path: Path, store: BlobStore) -> None:
    mirror = write_mirror(tmp_path, kernel_pkgs(), valid_until=later(-1))
    with pytest.raises(
        Oci2vmError,
        match=r"expired on 2026-06-30 12:00 UTC \(Valid-Until\): use an up-to-date --mirror, "
        r"or accept it with --allow-expired-release$",
    ):
        archive(mirror, store).release()
    assert archive(mirror, store, allow_expired=True).package("kmod").version == "30+20221128-1"


def test_a_release_valid_until_later_is_accepted(tmp_path: Path, store: BlobStore) -> None:
    mirror = write_mirror(tmp_path, kernel_pkgs(), valid_until=later(7))
    assert archive(mirror, store).release().valid_until == later(7)


def test_an_expired_cached_release_is_refused_offline(tmp_path: Path, store: BlobStore) -> None:
    mirror = write_mirror(tmp_path, kernel_pkgs(), valid_until=later(1))
    archive(mirror, store).release()
    offline = Archive(store, SUITE, Arch.AMD64, mirror=OfflineMirror(mirror.url),
                      verify=verify, now=lambda: later(2))  # fmt: skip
    with pytest.raises(Oci2vmError, match=r"InRelease \(cached\): expired on"):
        offline.release()


def test_a_release_dated_in_the_future_is_refused(tmp_path: Path, store: BlobStore) -> None:
    mirror = write_mirror(tmp_path, kernel_pkgs(), date=later(1))
    with pytest.raises(Oci2vmError, match=r"in the future: check this machine's clock$"):
        archive(mirror, store).release()


def test_an_older_release_than_one_verified_before_is_refused(
    tmp_path: Path, store: BlobStore
) -> None:
    archive(write_mirror(tmp_path, kernel_pkgs()), store).release()
    older = write_mirror(tmp_path, kernel_pkgs(), date=later(-3))
    with pytest.raises(Oci2vmError, match=r"older than the Release .* replayed mirror\): use"):
        archive(older, store).release()


def test_the_release_of_another_suite_is_refused(tmp_path: Path, store: BlobStore) -> None:
    write_mirror(tmp_path, kernel_pkgs(), suite="bullseye")
    (tmp_path / "dists" / "bullseye").rename(tmp_path / "dists" / SUITE)
    with pytest.raises(Oci2vmError, match=r"is the Release of bullseye, not bookworm: check"):
        archive(tmp_path.as_uri(), store).release()


def test_a_bad_signature_is_refused_before_anything_is_read(
    mirror: MirrorTree, store: BlobStore
) -> None:
    inrelease = mirror.root / "dists" / SUITE / "InRelease"
    inrelease.write_bytes(inrelease.read_bytes().replace(b"Origin: Debian", b"Origin: Evil"))
    with pytest.raises(Oci2vmError, match=r"BAD signature"):
        archive(mirror, store).release()
    assert not (store.root / "refs").exists()


def test_an_unknown_suite_names_the_known_ones(mirror: MirrorTree, store: BlobStore) -> None:
    a = Archive(store, "bookwrom", Arch.AMD64, mirror=mirror.url, verify=verify)
    with pytest.raises(
        Oci2vmError,
        match=r"^unknown suite 'bookwrom' on file://.* \(no InRelease\): name one of bookworm, "
        r"trixie, sid \(or stable, testing, unstable\), or check --mirror$",
    ):
        a.release()


def test_an_unknown_package_names_the_fix(mirror: MirrorTree, store: BlobStore) -> None:
    with pytest.raises(
        Oci2vmError,
        match=r"^no package 'linux-image-nosuch' in bookworm/main for amd64: check the name",
    ):
        archive(mirror, store).resolve("linux-image-nosuch")


def test_an_architecture_the_suite_lacks_is_named(tmp_path: Path, store: BlobStore) -> None:
    mirror = write_mirror(tmp_path, kernel_pkgs(), architectures="all arm64")
    with pytest.raises(Oci2vmError, match=r"has no packages for amd64 \(it has all, arm64\)$"):
        archive(mirror, store).release()


@pytest.mark.parametrize("index", ["gzip", "none"])
def test_indices_other_than_xz_are_read(tmp_path: Path, store: BlobStore, index: str) -> None:
    mirror = write_mirror(tmp_path, kernel_pkgs(), index=index)
    assert archive(mirror, store).resolve("linux-image-test").version == "6.1.1-1"


def test_acquire_by_hash_fetches_the_index_by_its_hash(tmp_path: Path, store: BlobStore) -> None:
    mirror = write_mirror(tmp_path, kernel_pkgs(), by_hash=True)
    index = mirror.root / "dists" / SUITE / "main" / "binary-amd64" / "Packages.xz"
    index.unlink()  # only the by-hash copy is left
    assert archive(mirror, store).package("kmod").name == "kmod"


def test_the_highest_version_of_a_package_listed_twice_wins(
    tmp_path: Path, store: BlobStore
) -> None:
    pkgs = [Pkg("tool", "1.9-1"), Pkg("tool", "1.10-1"), Pkg("tool", "1.10~rc1-1")]
    mirror = write_mirror(tmp_path, pkgs)
    assert archive(mirror, store).package("tool").version == "1.10-1"


def test_the_kernel_of_a_flavour_is_its_pinned_package(
    mirror: MirrorTree, store: BlobStore
) -> None:
    assert kernel_package(archive(mirror, store), "test").name == "linux-image-6.1.0-9-test"


def test_an_unknown_kernel_flavour_names_the_known_ones(
    mirror: MirrorTree, store: BlobStore
) -> None:
    with pytest.raises(
        Oci2vmError,
        match=r"^unknown kernel flavour 'cloud' in bookworm for amd64: name one of test$",
    ):
        kernel_package(archive(mirror, store), "cloud")


def test_a_cache_that_is_no_directory_is_a_one_line_error(
    mirror: MirrorTree, tmp_path: Path
) -> None:
    (tmp_path / "not-a-dir").write_bytes(b"")  # fails even for root, unlike a chmod
    store = BlobStore(tmp_path / "not-a-dir")
    with pytest.raises(Oci2vmError, match="is not a directory: pass --cache-dir DIR"):
        archive(mirror, store).release()


def counting_passes(a: Archive) -> list[int]:
    """Count the passes over the archive's Packages index from now on."""
    index = a.index()
    passes: list[int] = []
    opened = index._open

    def counted() -> object:
        passes.append(1)
        return opened()

    index._open = counted  # type: ignore[assignment]
    return passes


def test_a_kernel_and_busybox_take_one_pass_over_the_index_when_expected(
    mirror: MirrorTree, store: BlobStore
) -> None:
    """A pass inflates the whole index (56 MB for trixie's): the kernel's metapackage, the
    package it pins and busybox-static are found by one when they were expected."""
    a = archive(mirror, store)
    passes = counting_passes(a)
    a.index().expect("busybox-static")
    assert kernel_package(a, "test").name == "linux-image-6.1.0-9-test"
    assert a.resolve("busybox-static").name == "busybox-static"
    assert [p.name for p in a.index().providers("busybox")] == ["busybox-static"]  # not covered
    assert len(passes) == 2
    fresh = archive(mirror, store)
    for name in ("linux-image-test", "linux-image-6.1.0-9-test", "busybox-static"):
        assert a.package(name) == fresh.package(name)  # what a pass of its own finds


def test_a_name_nobody_expected_takes_a_pass_of_its_own(
    mirror: MirrorTree, store: BlobStore
) -> None:
    a = archive(mirror, store)
    passes = counting_passes(a)
    kernel_package(a, "test")
    a.resolve("busybox-static")
    assert len(passes) == 2
    a.index().expect("linux-image-")  # covered already: no pass, nothing kept twice
    a.package("linux-image-6.1.0-9-test")
    assert len(passes) == 2


def test_an_expected_prefix_covers_providers_and_the_highest_version(
    tmp_path: Path, store: BlobStore
) -> None:
    pkgs = [Pkg("tool-a", "1.9-1"), Pkg("tool-a", "1.10-1"),
            Pkg("other", fields={"Provides": "tool-virtual"}), Pkg("unrelated")]  # fmt: skip
    a = archive(write_mirror(tmp_path, pkgs), store)
    passes = counting_passes(a)
    a.index().expect("tool-")
    assert a.package("unrelated").name == "unrelated"
    assert a.package("tool-a").version == "1.10-1"
    assert [p.name for p in a.index().providers("tool-virtual")] == ["other"]
    assert a.index().lookup(["tool-absent"]) == {}
    assert len(passes) == 1
