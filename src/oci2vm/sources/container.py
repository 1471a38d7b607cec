"""Named files inside a directory or an uncompressed tar archive, located in place.

OCI layouts, oci-archives and both forms of `docker save` output are sets of named
files; reading them through one interface lets each format's parser ignore whether it
was handed a directory or a tarball. Nothing is extracted: a member is a byte range of
the archive.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from oci2vm.layers.decompress import GZIP_MAGIC, ZSTD_MAGIC

MAX_SMALL = 16 << 20  # manifests, configs and index files are never this big


class Container:
    """A directory or an uncompressed tar archive of named files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._members: dict[str, tuple[int, int]] | None = None
        if not path.exists():
            raise Oci2vmError(f"{path}: no such file or directory")
        if not path.is_dir():
            self._members = _scan_tar(path)

    @property
    def is_archive(self) -> bool:
        return self._members is not None

    def exists(self, name: str) -> bool:
        name = _clean(name)
        if self._members is not None:
            return name in self._members
        return (self.path / name).is_file()

    def ref(self, name: str, digest: str | None = None) -> BlobRef:
        """A BlobRef for a member (or file), raising if it is absent."""
        name = _clean(name)
        if self._members is not None:
            try:
                offset, size = self._members[name]
            except KeyError:
                raise Oci2vmError(f"{self.path}: {name} is missing from the archive") from None
            return BlobRef(self.path, offset, size, digest)
        file = self.path / name
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise Oci2vmError(f"{self.path}: {name} is missing") from None
        return BlobRef(file, 0, size, digest)

    def read(self, name: str) -> bytes:
        return self.ref(name).read_all(MAX_SMALL)


def _clean(name: str) -> str:
    name = posixpath.normpath(name.lstrip("/"))
    return "" if name == "." else name


def _scan_tar(path: Path) -> dict[str, tuple[int, int]]:
    """Map member name -> (data offset, size), following in-archive links (docker save
    links repeated layers to their first copy)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC):
        raise Oci2vmError(
            f"{path}: compressed archive: decompress it first (e.g. gunzip or zstd -d)"
        )
    members: dict[str, tuple[int, int]] = {}
    links: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                name = _clean(m.name)
                if m.isfile():
                    members[name] = (m.offset_data, m.size)
                elif m.issym():
                    links[name] = _clean(posixpath.join(posixpath.dirname(name), m.linkname))
                elif m.islnk():
                    links[name] = _clean(m.linkname)
    except tarfile.TarError as e:
        raise Oci2vmError(f"{path}: not a readable tar archive: {e}") from e
    for name, target in links.items():
        seen = {name}
        while target in links and target not in seen:
            seen.add(target)
            target = links[target]
        if target in members:
            members[name] = members[target]
    return members
