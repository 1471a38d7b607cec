"""What reading a verified kernel package once learned, kept beside the blob cache so that
the next build injecting the same package skips the work:

    <cache>/kernels/sha256/<hex of the .deb>/modinfo-v1.json      every module's metadata
    <cache>/kernels/sha256/<hex of the .deb>/modules-v1-<key>.bin  an initramfs's modules
    <cache>/kernels/sha256/<hex of the .deb>/indices-v1-<key>.bin  depmod's files

A kernel split into several packages (forky's) is keyed by the sha256 of its packages'
digests, one per line, in the order they are read.

Reading a Debian kernel package's metadata means inflating each of its ~4,200 compressed
modules (12 s of CPU on the project's machine for Debian 13's); the initramfs's modules
take a second pass over the package, and depmod's indexes 1.7 s of Python. All are
functions of the package's bytes alone, and the package is known by its digest (verified
against the archive's signed index before it is used), so they are cached under that
digest. A user's own .deb (no digest known before it is read) is not cached.

Trust: like the run cache (oci2vm.runcache), these entries live in the user's private
cache directory and are not derived again on use; what is checked is their shape (the
modules a cached record names must be those the package holds; a file of modules or
indexes must hold exactly what its index says, for the key it was saved under), so a
truncated, stale or foreign entry is read as absent and written anew, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oci2vm.image.blobs import BlobRef, BlobStore, check_digest
from oci2vm.kernel.modinfo import ModInfo
from oci2vm.util.atomic import replace_whole

log = logging.getLogger(__name__)

MODINFO_VERSION = 1  # bump when ModInfo's reading or its fields change
MODULES_VERSION = 1
INDICES_VERSION = 1  # bump when depmod's files as oci2vm writes them change
_TUPLE_FIELDS = ("depends", "aliases", "softdeps", "weakdeps", "firmware", "exports", "needs")


class KernelCache:
    """The cached facts of one kernel package (by the digest of its .deb)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of(cls, store: BlobStore | None, debs: Sequence[BlobRef]) -> KernelCache | None:
        """The cache of the kernel the packages `debs` hold, or None when there is no
        store or a package has no digest to key it by."""
        digests = [deb.digest for deb in debs]
        if store is None or not digests or None in digests:
            return None
        known = [check_digest(d) for d in digests if d is not None]
        if len(known) == 1:
            algorithm, hexdigest = known[0].split(":", 1)
        else:
            algorithm = "sha256"
            hexdigest = hashlib.sha256("".join(f"{d}\n" for d in known).encode()).hexdigest()
        return cls(store.root / "kernels" / algorithm / hexdigest)

    # -- every module's metadata, by the module's name in the package's data.tar -----------

    @property
    def _modinfo_path(self) -> Path:
        return self.directory / f"modinfo-v{MODINFO_VERSION}.json"

    def load_modinfo(self) -> dict[str, ModInfo] | None:
        """The modules' metadata, by member name, or None when not cached (or unreadable)."""
        try:
            doc = json.loads(self._modinfo_path.read_bytes())
            return {name: _modinfo(fields) for name, fields in doc["modules"]}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.debug("%s: unusable (%s): reading the package's modules again", self.directory, e)
            return None

    def save_modinfo(self, modules: Sequence[tuple[str, ModInfo]]) -> None:
        doc = {"modules": [[name, _fields(info)] for name, info in modules]}
        self._write(self._modinfo_path, json.dumps(doc, separators=(",", ":")).encode())

    # -- the uncompressed bytes of a set of modules (an initramfs's), in their order --------

    def _modules_path(self, wanted: Sequence[str]) -> Path:
        key = hashlib.sha256("\n".join(wanted).encode("utf-8", "surrogateescape")).hexdigest()
        return self.directory / f"modules-v{MODULES_VERSION}-{key[:32]}.bin"

    def load_modules(self, wanted: Sequence[str]) -> list[tuple[str, bytes]] | None:
        """The (name, bytes) saved for `wanted` by save_modules(), or None."""
        return self._load_files(self._modules_path(wanted), list(wanted))

    def save_modules(self, wanted: Sequence[str], modules: Sequence[tuple[str, bytes]]) -> None:
        self._save_files(self._modules_path(wanted), list(wanted), modules)

    # -- the module indexes depmod would write (by the kernel's version) -------------------

    def _indices_path(self, version: str) -> Path:
        key = hashlib.sha256(version.encode("utf-8", "surrogateescape")).hexdigest()
        return self.directory / f"indices-v{INDICES_VERSION}-{key[:32]}.bin"

    def load_indices(self, version: str) -> dict[str, bytes] | None:
        files = self._load_files(self._indices_path(version), [version])
        return None if files is None else dict(files)

    def save_indices(self, version: str, indices: dict[str, bytes]) -> None:
        self._save_files(self._indices_path(version), [version], list(indices.items()))

    # -- named files, whole, behind a one-line JSON index ----------------------------------

    def _load_files(self, path: Path, key: list[str]) -> list[tuple[str, bytes]] | None:
        """The files saved at `path` for `key`, or None when absent or not whole."""
        try:
            data = path.read_bytes()
            head_end = data.index(b"\n")
            head = json.loads(data[:head_end])
            if head["key"] != key:
                raise ValueError("saved for another key")
            out: list[tuple[str, bytes]] = []
            pos = head_end + 1
            for name, size in head["files"]:
                if not isinstance(name, str) or not isinstance(size, int) or size < 0:
                    raise TypeError("a name and a size were expected")
                if pos + size > len(data):
                    raise ValueError("shorter than its index")
                out.append((name, data[pos : pos + size]))
                pos += size
            if pos != len(data):
                raise ValueError("longer than its index")
            return out
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.debug("%s: unusable (%s): derived from the package again", path, e)
            return None

    def _save_files(self, path: Path, key: list[str], files: Sequence[tuple[str, bytes]]) -> None:
        head = {"key": key, "files": [[name, len(data)] for name, data in files]}
        index = json.dumps(head, separators=(",", ":")).encode()
        self._write(path, b"".join([index, b"\n", *(data for _, data in files)]))

    def _write(self, path: Path, data: bytes) -> None:
        """Write `path` whole or not at all; a cache that cannot be written only costs the
        next build the work again."""
        try:
            replace_whole(path, data)
        except OSError as e:
            log.debug("%s: not cached (%s)", path, e)


def _fields(info: ModInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "vermagic": info.vermagic,
        **{key: list(getattr(info, key)) for key in _TUPLE_FIELDS},
    }


def _modinfo(fields: dict[str, Any]) -> ModInfo:
    def strings(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise TypeError("a list of strings was expected")
        return tuple(value)

    name, vermagic = fields["name"], fields["vermagic"]
    if not isinstance(name, str) or not isinstance(vermagic, str):
        raise TypeError("a string was expected")
    return ModInfo(
        name=name, vermagic=vermagic, **{key: strings(fields[key]) for key in _TUPLE_FIELDS}
    )
