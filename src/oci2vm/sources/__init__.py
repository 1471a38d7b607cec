"""Image sources, named in skopeo's transport syntax.

    docker://REF, REF            a registry (sources/registry.py)
    oci:PATH[:TAG]               an OCI image layout directory
    oci-archive:PATH[:TAG]       a tar of an OCI image layout
    docker-archive:PATH[:REF]    `docker save` / `podman save` output (both forms)
    docker-daemon:REF            `docker save` (or `podman save`) run for you
    tar:PATH                     a root filesystem tarball (`docker export` output)

Each source resolves to an image.Image whose blobs are located and checked by digest.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.image.model import Image, check_platform
from oci2vm.sources import daemon, docker_archive, oci_layout, rootfs_tar
from oci2vm.sources.base import Fetch
from oci2vm.sources.reference import looks_like_reference, parse_reference

__all__ = ["Fetch", "check_output", "resolve"]

TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive", "docker-daemon", "tar")
# skopeo transports that oci2vm does not read
SKOPEO_ONLY = ("dir", "containers-storage", "ostree", "sif", "atomic")


def split_path_ref(spec: str) -> tuple[str, str]:
    """Split PATH[:REF] the way skopeo does for oci: and docker-archive:, where a
    reference may itself hold a colon (name:tag): the path ends at the first colon
    whose prefix is an existing path; otherwise at the first colon."""
    if not spec:
        raise Oci2vmError("missing path")
    # (os.path answers False where the path cannot be looked at: too long, no access)
    if os.path.exists(spec):
        return spec, ""
    idx = spec.find(":")
    while idx != -1:
        if os.path.exists(spec[:idx]):
            return spec[:idx], spec[idx + 1 :]
        idx = spec.find(":", idx + 1)
    path, _, ref = spec.partition(":")
    return path, ref


def resolve(source: str, fetch: Fetch) -> Image:
    """Resolve a source string to an Image for fetch.platform."""
    image = _resolve(source, fetch)
    if image.config_digest is not None:
        check_platform(source, image.config.platform, fetch.platform)
    return image


# Names that are files' (a disk `run` or `check` was to boot, a saved image), never an
# image in a registry, though some would parse as a reference (debian.qcow2).
_FILE_SUFFIXES = (
    ".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst", ".tar.bz2", ".img", ".raw", ".qcow2",
    ".vmdk", ".vdi", ".vhdx", ".vhd", ".ext4", ".iso",
)  # fmt: skip


def _refuse_a_path(source: str) -> None:
    """A source without a transport that names a file or directory: say which transport
    reads it, or that it is not there, rather than asking a registry for it. A bare name
    that is also a local directory or file (`layout`) is refused naming both readings."""
    if not source.startswith(("/", "./", "../", "~")) and not source.lower().endswith(
        _FILE_SUFFIXES
    ):
        if ":" not in source and os.path.lexists(source):
            kind = "directory" if os.path.isdir(source) else "file"
            local = f"oci:{source}" if kind == "directory" else f"docker-archive:{source}"
            raise Oci2vmError(
                f"{source} names a {kind} here and an image in a registry: write {local} "
                f"for the {kind} (or another transport), docker://{source} for the image"
            )
        return
    if os.path.isdir(source):
        raise Oci2vmError(f"{source} is a directory: for an OCI image layout, write oci:{source}")
    if os.path.isfile(source):
        raise Oci2vmError(
            f"{source}: name what it holds: docker-archive:{source} (docker save), "
            f"oci-archive:{source} (an OCI layout's tar) or tar:{source} (a root filesystem)"
        )
    raise Oci2vmError(f"{source}: no such file or directory")


def check_output(source: str, output: Path) -> None:
    """Refuse an output that is the source's file, or inside its layout's directory: the
    build would replace what it reads (-o r.tar for tar:r.tar, through a symlink too)."""
    transport, sep, rest = source.partition(":")
    if not sep or transport not in ("oci", "oci-archive", "docker-archive", "tar"):
        return
    given = Path(split_path_ref(rest)[0] if transport != "tar" else rest)
    try:
        read = given.resolve()
        written = output.resolve()
    except (OSError, RuntimeError):  # (a symlink loop: the build tells it)
        return
    if written == read or (read.is_dir() and written.is_relative_to(read)):
        raise Oci2vmError(f"-o {output}: that is where the source {source} is read from")


def _close_transport(transport: str) -> str | None:
    """The transport `transport` is likely a misspelling of (oci-archve: oci-archive)."""
    return next(iter(difflib.get_close_matches(transport, TRANSPORTS, n=1, cutoff=0.8)), None)


def _unknown_transport(transport: str, source: str) -> Oci2vmError:
    close = _close_transport(transport)
    hint = f"did you mean {close}:? " if close else ""
    return Oci2vmError(
        f"unknown transport {transport!r} in {source!r}: {hint}use one of "
        + ", ".join(f"{t}:" for t in TRANSPORTS)
    )


def _resolve(source: str, fetch: Fetch) -> Image:
    transport, sep, rest = source.partition(":")
    if sep and transport in SKOPEO_ONLY:
        # skopeo's transports are always transports, even where the rest could pass for
        # a tag (dir:image is a directory, never docker.io/library/dir:image).
        raise Oci2vmError(
            f"transport {transport}: is not supported: use one of "
            + ", ".join(f"{t}:" for t in TRANSPORTS)
        )
    if sep and transport.lower() in TRANSPORTS + SKOPEO_ONLY and transport not in TRANSPORTS:
        raise Oci2vmError(f"unknown transport {transport!r}: transports are lowercase: "
                          f"{transport.lower()}:{rest}")  # fmt: skip
    if not sep or transport not in TRANSPORTS:
        # A bare reference (debian:12, localhost:5000/app:1) goes to a registry; an
        # unknown transport (ftp://x) is reported as such, and a file's name as one.
        if sep and (
            rest.startswith("/")  # ftp://x, oci-archve:/x.tar
            or (_close_transport(transport) and source.lower().endswith(_FILE_SUFFIXES))
        ):
            raise _unknown_transport(transport, source)
        _refuse_a_path(source)
        if "@" in source and not rest.startswith("/"):
            parse_reference(source)  # a pinned reference: says what is wrong with it
        if rest.startswith("/") or not looks_like_reference(source):
            raise _unknown_transport(transport, source)
        transport, rest = "docker", "//" + source
    if not rest:
        raise Oci2vmError(f"malformed source {source!r}: nothing after {transport}:")
    if transport == "docker":
        if not rest.startswith("//"):
            raise Oci2vmError(f"malformed source {source!r}: expected docker://REFERENCE")
        from oci2vm.sources import registry  # urllib3 is loaded only for registries

        return registry.resolve(source, parse_reference(rest[2:]), fetch)
    if transport in ("oci", "oci-archive"):
        path, ref = split_path_ref(rest)
        return oci_layout.resolve(source, Path(path), ref, fetch, archive=transport != "oci")
    if transport == "docker-archive":
        path, ref = split_path_ref(rest)
        return docker_archive.resolve(source, Path(path), ref, fetch)
    if transport == "docker-daemon":
        return daemon.resolve(source, rest, fetch)
    return rootfs_tar.resolve(source, Path(rest), fetch)
