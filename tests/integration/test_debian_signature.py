"""InRelease signatures checked by gpgv, as apt checks them, against keys made for the test
with gpg: a good signature, a tampered text, an unknown key, text outside the signed part,
keyrings gpgv cannot read; and the whole chain on a test mirror signed for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.debian.archive import Archive
from oci2vm.debian.deb import open_deb
from oci2vm.debian.signature import verify_clearsigned
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore
from support.debarchives import NOW, SUITE, GpgKey, kernel_pkgs, need_gpg, write_mirror

TEXT = b"Origin: Test\nCodename: bookworm\n-dash line\n"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> GpgKey:
    need_gpg()
    return GpgKey(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> GpgKey:
    need_gpg()
    return GpgKey(tmp_path_factory.mktemp("gnupg-other"), "Another Key")


def test_a_good_signature_yields_the_signed_text(key: GpgKey) -> None:
    assert verify_clearsigned(key.sign(TEXT), [key.keyring], "InRelease") == TEXT


def test_one_good_signature_among_unknown_keys_is_enough(key: GpgKey, other_key: GpgKey) -> None:
    signed = key.sign(TEXT)
    assert verify_clearsigned(signed, [other_key.keyring, key.keyring], "InRelease") == TEXT


def test_a_tampered_text_is_a_bad_signature(key: GpgKey) -> None:
    signed = key.sign(TEXT).replace(b"Origin: Test", b"Origin: Evil")
    with pytest.raises(
        Oci2vmError, match=r"^InRelease: BAD signature \(a tampered or broken mirror\): check"
    ):
        verify_clearsigned(signed, [key.keyring], "InRelease")


def test_a_signature_by_a_key_not_in_the_keyring_names_the_fix(
    key: GpgKey, other_key: GpgKey
) -> None:
    with pytest.raises(
        Oci2vmError,
        match=r"^InRelease: signed by no key of .*keyring.gpg: update debian-archive-keyring, "
        r"or give the mirror's key with --keyring FILE$",
    ):
        verify_clearsigned(other_key.sign(TEXT), [key.keyring], "InRelease")


@pytest.mark.parametrize(
    "wrap",
    [lambda s: b"Origin: Unsigned\n" + s, lambda s: s + b"Origin: Unsigned\n", lambda s: s + s],
    ids=["text-before", "text-after", "two-messages"],
)
def test_text_outside_the_signed_message_is_refused(key: GpgKey, wrap: object) -> None:
    with pytest.raises(Oci2vmError, match=r"not one clearsigned OpenPGP message: check --mirror$"):
        verify_clearsigned(wrap(key.sign(TEXT)), [key.keyring], "InRelease")  # type: ignore[operator]


def test_keyrings_gpgv_cannot_read_are_named(key: GpgKey, tmp_path: Path) -> None:
    armored = tmp_path / "key.asc"
    armored.write_bytes(key.armored())
    with pytest.raises(Oci2vmError, match=r"ASCII-armoured: convert it with 'gpg --dearmor"):
        verify_clearsigned(key.sign(TEXT), [armored], "InRelease")
    with pytest.raises(Oci2vmError, match=r"^keyring /nonexistent.gpg not found: check --keyring$"):
        verify_clearsigned(key.sign(TEXT), [Path("/nonexistent.gpg")], "InRelease")


def test_the_chain_on_a_mirror_signed_for_real(key: GpgKey, tmp_path: Path) -> None:
    mirror = write_mirror(tmp_path / "mirror", kernel_pkgs(), sign=key.sign)
    store = BlobStore(tmp_path / "cache")
    archive = Archive(store, SUITE, Arch.AMD64, mirror=mirror.url, keyrings=[key.keyring],
                      now=lambda: NOW)  # fmt: skip
    package = archive.resolve("linux-image-test")
    with open_deb(archive.download(package)).data() as tar:
        names = [m.name for m in tar if m.isfile()]
    assert names == ["./boot/vmlinuz-6.1.0-9-test", "./usr/lib/modules/6.1.0-9-test/modules.dep"]


def test_a_mirror_signed_by_another_key_is_refused(
    key: GpgKey, other_key: GpgKey, tmp_path: Path
) -> None:
    mirror = write_mirror(tmp_path / "mirror", kernel_pkgs(), sign=other_key.sign)
    archive = Archive(BlobStore(tmp_path / "cache"), SUITE, Arch.AMD64, mirror=mirror.url,
                      keyrings=[key.keyring], now=lambda: NOW)  # fmt: skip
    with pytest.raises(Oci2vmError, match=r"dists/bookworm/InRelease: signed by no key of"):
        archive.release()
