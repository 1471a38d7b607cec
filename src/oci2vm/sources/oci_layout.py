"""oci:PATH[:TAG] and oci-archive:PATH[:TAG]: an OCI image layout, as a directory or a
tar of one (image-layout spec: oci-layout, index.json, blobs/<alg>/<hex>).

Blobs are read in place, never copied; each is verified against its digest as read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, BlobStore
from oci2vm.image.model import (
    MANIFEST_TYPES,
    MAX_MANIFEST_SIZE,
    Descriptor,
    Image,
    assemble,
    index_entries,
    load_json,
    manifest_kind,
    select_platform,
)
from oci2vm.sources.container import Container, store_of
from oci2vm.util.text import shown

if TYPE_CHECKING:
    from oci2vm.sources.base import Fetch

REF_NAME = "org.opencontainers.image.ref.name"
DOCKER_REF_NAME = "io.containerd.image.name"


def resolve(source: str, path: Path, tag: str, fetch: Fetch, *, archive: bool) -> Image:
    if not archive and os.path.isfile(path):
        raise Oci2vmError(f"{path}: is a file; use oci-archive:{path}")
    container = Container(path, store_of(fetch))
    if archive and not container.is_archive:
        raise Oci2vmError(f"{path}: is a directory; use oci:{path}")
    name = layout_name(path)
    return resolve_in(source, container, tag, fetch, name=f"{name}:{tag}" if tag else name)


# Names a layout's directory or archive often has that say nothing of the image in it.
GENERIC_NAMES = frozenset({"oci", "layout", "oci-layout", "image", "img", "oci-archive"})


def layout_name(path: Path) -> str:
    """The image's name a layout's path gives, for the default hostname:
    oci:./debian:bookworm -> debian:bookworm; a generic name (./debian/oci, image.tar)
    gives way to the directory holding it."""
    absolute = path.absolute()
    for part in (absolute, *absolute.parents):
        stem = archive_stem(part.name)
        if stem and stem.lower() not in GENERIC_NAMES:
            return stem
    return absolute.name


def archive_stem(name: str) -> str:
    """image.tar, image.tar.xz, image.tgz -> image."""
    for suffix in (".tar", ".tgz", ".tar.gz", ".tar.zst", ".tar.xz", ".tar.bz2"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _digests(entries: list[Descriptor]) -> str:
    """The first few entries' digests, for a message that asks to pick one."""
    return ", ".join(d.digest for d in entries[:3]) + (", ..." if len(entries) > 3 else "")


def blob_ref(
    container: Container, desc: Descriptor, store: Callable[[], BlobStore] | None = None
) -> BlobRef:
    """The blob a descriptor names; where the layout lacks it (a layout MAY), the content
    the descriptor embeds, put in the blob cache, as containerd and umoci read it."""
    algorithm, hexdigest = desc.digest.split(":", 1)
    name = f"blobs/{algorithm}/{hexdigest}"
    if desc.data is not None and store is not None and not container.exists(name):
        return store().put_bytes(desc.digest, desc.data)
    if desc.urls and not container.exists(name):
        raise Oci2vmError(
            f"{container.path}: blob {desc.digest} is non-distributable and not in the "
            f"layout: it is at {shown(desc.urls[0])}, which oci2vm does not fetch"
        )
    ref = container.ref(name, desc.digest)
    if ref.size != desc.size:
        raise Oci2vmError(
            f"{container.path}: blob {desc.digest} is {ref.size} bytes, "
            f"the descriptor says {desc.size}"
        )
    return ref


def resolve_in(source: str, container: Container, tag: str, fetch: Fetch, *, name: str) -> Image:
    """Resolve an image in a layout (also used for Docker >= 25 `docker save` output)."""
    if not container.exists("index.json"):
        raise Oci2vmError(f"{container.path}: not an OCI image layout (no index.json)")
    index = load_json(container.read("index.json"), f"{container.path}/index.json")
    entries = index_entries(index, f"{container.path}/index.json")
    if tag:
        entries = [
            d
            for d in entries
            if tag in (d.annotations.get(REF_NAME), d.annotations.get(DOCKER_REF_NAME), d.digest)
        ]
        if not entries:
            raise Oci2vmError(f"{container.path}: no image tagged {tag!r} in the layout")
    if not entries:
        raise Oci2vmError(f"{container.path}: the layout's index.json lists no image")
    # The same manifest listed twice (under one tag or two) is one image: its first entry.
    first: dict[str, Descriptor] = {}
    for d in entries:
        first.setdefault(d.digest, d)
    entries = list(first.values())
    where = f"{container.path}" + (f":{tag}" if tag else "")
    if len(entries) > 1 and all(d.media_type in MANIFEST_TYPES for d in entries):
        # Several single-platform manifests: choose by platform, or ask for a tag.
        if any(d.platform for d in entries):
            desc = select_platform(entries, fetch.platform, where)
        else:
            tags = sorted({t for d in entries if (t := d.annotations.get(REF_NAME))})
            raise Oci2vmError(
                f"{where}: the layout holds {len(entries)} images: name one"
                + (f" by tag ({', '.join(tags)}) or" if len(tags) == len(entries) else "")
                + f" by digest ({_digests(entries)})"
            )
    elif len(entries) > 1:
        # An index among them: which to read is not for a guess (a tag moved from one
        # entry to another is kept on both by some tools).
        tags = sorted({t for d in entries if (t := d.annotations.get(REF_NAME))})
        raise Oci2vmError(
            f"{where}: {len(entries)} entries of index.json match: name one by digest "
            f"({_digests(entries)})"
            + (f" or, if they differ, by tag ({', '.join(tags[:5])})" if len(tags) > 1 else "")
        )
    else:
        desc = entries[0]
    for _depth in range(4):
        data = blob_ref(container, desc, store_of(fetch)).read_all(MAX_MANIFEST_SIZE)
        doc = load_json(data, f"manifest {desc.digest}")
        if manifest_kind(doc, desc.media_type) == "manifest":
            return assemble(
                source=source,
                name=name,
                manifest_bytes=data,
                manifest_digest=desc.digest,
                manifest_media_type=desc.media_type or None,
                blob=lambda d: blob_ref(container, d, store_of(fetch)),
                what=f"manifest {desc.digest}",
            )
        desc = select_platform(index_entries(doc, f"index {desc.digest}"), fetch.platform, where)
    raise Oci2vmError(f"{where}: image indexes nested too deeply")
