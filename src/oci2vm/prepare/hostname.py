"""The machine's name: /etc/hostname and the /etc/hosts lines that resolve it, plus the
rules for a valid name (RFC 1123 labels) and the default taken from the image's name."""

from __future__ import annotations

import re

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor

_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def hostname_from(name: str) -> str:
    """A valid hostname from an image name: docker.io/library/debian:12 -> debian."""
    base = name.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0].lower()
    base = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:63].strip("-")
    return base or "oci2vm"


def check_hostname(hostname: str) -> str:
    if not _HOSTNAME_RE.fullmatch(hostname):
        raise Oci2vmError(
            f"malformed --hostname {hostname!r}: use lowercase letters, digits and '-', at most 63"
        )
    return hostname


def hosts(hostname: str) -> bytes:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    ).encode()


def apply(edit: TreeEditor, target: Target) -> list[str]:
    edit.write("/etc/hostname", f"{target.hostname}\n".encode(), mode=0o644, uid=0, gid=0)
    edit.write("/etc/hosts", hosts(target.hostname), mode=0o644, uid=0, gid=0)
    return []


STEP = Step("hostname", apply)
