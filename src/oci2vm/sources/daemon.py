"""docker-daemon:REF: asks a local Docker (or Podman) to `save` the image, then reads
the archive like docker-archive:. This is the only source that needs a daemon, and only
because the image lives inside one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore
from oci2vm.image.model import Image
from oci2vm.sources import docker_archive
from oci2vm.util import tools

if TYPE_CHECKING:
    from oci2vm.sources.base import Fetch


def resolve(source: str, ref: str, fetch: Fetch) -> Image:
    if not ref:
        raise Oci2vmError("docker-daemon: needs an image reference, e.g. docker-daemon:debian:12")
    savers = [
        argv
        for argv in (["docker", "save"], ["podman", "save", "--format", "docker-archive"])
        if tools.have_program(argv[0])
    ]
    if not savers:
        raise Oci2vmError("docker-daemon: needs docker or podman: install 'docker.io' or 'podman'")
    store = fetch.store or BlobStore(BlobStore.default_root())
    archive = store.scratch_tar("daemon")
    failures = []
    for argv in savers:
        # A docker client without a reachable engine fails at once; podman may have it.
        try:
            tools.run([*argv, "-o", str(archive), ref])
            break
        except Oci2vmError as e:
            failures.append(str(e))
    else:
        archive.unlink(missing_ok=True)
        raise Oci2vmError(f"docker-daemon:{ref}: " + "; ".join(failures))
    return docker_archive.resolve(source, archive, ref, fetch)
