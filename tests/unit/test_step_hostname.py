"""The hostname step, and the rules for a hostname."""

from __future__ import annotations

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.hostname import check_hostname, hostname_from


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("docker.io/library/debian:12", "debian"),
        ("debian", "debian"),
        ("ubuntu:22.04", "ubuntu"),
        ("localhost:5000/team/my_app:v1", "my-app"),
        ("quay.io/Fedora/Fedora-Minimal@sha256:" + "0" * 64, "fedora-minimal"),
        ("registry.example.com/a/b/c.d:tag", "c-d"),
        ("rootfs.tar.gz", "rootfs-tar-gz"),
        ("_weird__name_", "weird-name"),
        ("x" * 80, "x" * 63),
        ("___", "oci2vm"),
    ],
)
def test_hostname_from_image_name(name: str, hostname: str) -> None:
    assert hostname_from(name) == hostname
    assert check_hostname(hostname) == hostname


@pytest.mark.parametrize(
    "bad", ["", "Upper", "under_score", "-lead", "trail-", "a" * 64, "a.b", "vm\n"]
)
def test_check_hostname_rejects_malformed(bad: str) -> None:
    with pytest.raises(Oci2vmError) as raised:
        check_hostname(bad)
    assert str(raised.value) == (
        f"malformed --hostname {bad!r}: use lowercase letters, digits and '-', at most 63"
    )
