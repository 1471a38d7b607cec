"""Image references (`debian:12`, `ghcr.io/org/app@sha256:…`, `localhost:5000/x:y`),
parsed and normalized as Docker does: no registry means docker.io, a one-part name on
docker.io lives under library/, and no tag means latest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from oci2vm.errors import Oci2vmError

DEFAULT_REGISTRY = "docker.io"
# A path component in any case: docker's grammar is lowercase, and an uppercase name is
# matched here so that it is refused as such ("must be lowercase"), as docker refuses it,
# rather than taken for something else (a transport, a path).
_COMPONENT = r"[a-zA-Z0-9]+(?:(?:[._]|__|[-]+)[a-zA-Z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}"
_REF_RE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str  # host[:port] as the user wrote it; docker.io for Docker Hub
    repository: str  # library/debian
    tag: str | None
    digest: str | None

    @property
    def api_host(self) -> str:
        """Where the registry API lives: Docker Hub's API host differs from its name."""
        return "registry-1.docker.io" if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def reference(self) -> str:
        """What to ask the manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def short_name(self) -> str:
        """The last path component: debian for docker.io/library/debian:12."""
        return self.repository.rsplit("/", 1)[-1]


def looks_like_reference(text: str) -> bool:
    return bool(_REF_RE.match(text))


def parse_reference(text: str) -> Reference:
    m = _REF_RE.match(text)
    if not m:
        raise Oci2vmError(f"malformed image reference {text!r}")
    name = m["name"]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if repository != repository.lower():
        raise Oci2vmError(
            f"malformed image reference {text!r}: repository name ({repository}) must be lowercase"
        )
    tag = m["tag"]
    digest = m["digest"]
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)
