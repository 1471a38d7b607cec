#!/usr/bin/env python3
"""Build the project-owned fixture images ("busybox", "debian") in every form oci2vm reads.

Deliberately independent of the oci2vm package (stdlib tarfile/hashlib/gzip/json + zstandard
only): the fixtures are the yardstick for our readers, so they must not share their code.
Layer tars are written header by header the way Go's archive/tar (Docker, containerd) writes
them: USTAR headers, a PAX 'x' header when a field does not fit, GNU sparse 1.0 by hand.

Forms per image, in <cache>/<name>-v<version>/: oci/ (OCI layout, tag "fixture"),
oci-archive.tar (busybox), docker-archive.tar (legacy `docker save`, <id>/layer.tar),
docker-oci-archive.tar (Docker >= 25 `docker save`), rootfs.tar (flattened, as `docker
export`), tree.json (rootfs.tar as data) and facts.json (digests, config). The cache is
$OCI2VM_FIXTURE_CACHE, else /var/cache/oci2vm-fixtures when writable, else
~/.cache/oci2vm-fixtures.

Usage: python scripts/build_fixtures.py [busybox|debian|all] [--cache DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Literal

# Bump a version whenever its recipe changes: the cache is keyed by it, so the fixture rebuilds.
BUSYBOX_VERSION = 1
DEBIAN_VERSION = 1
DEBIAN_STAGE_VERSION = 1  # the debootstrap and apt-get stages cached under the debian image

# Every case the busybox image covers: (path in the flattened image, layer that decides it
# (1-based), present after flattening?, what it proves). Exposed to tests via fixture_images.
CASES: tuple[tuple[str, int, bool, str], ...] = (
    ("bin/ash", 1, True, "hardlink group of 3 (ash, busybox, sh): first name carries the data"),
    ("bin/sh", 1, True, "a plain /bin/sh (hardlink to busybox, not a symlink) that runs"),
    ("bin/ls", 1, True, "short applet symlink to busybox"),
    ("dev/null", 1, True, "character device 1,3 mode 0666"),
    ("dev/sda", 1, True, "block device 8,0 owned by gid 6"),
    ("run/fifo", 1, True, "FIFO"),
    ("tmp", 1, True, "sticky bit directory 01777"),
    ("usr/bin/suid", 1, True, "setuid file 04755"),
    ("srv/setgid-dir", 1, True, "setgid directory 02775"),
    ("usr/bin/netcap", 1, True, "security.capability xattr, v2 blob, cap_net_raw+ep"),
    ("etc/xattr-comment", 1, True, "user.comment xattr"),
    ("srv/acl-dir", 1, True, "POSIX access + default ACL xattrs (VFS v2 form), mode 0770"),
    ("srv/acl-file", 1, True, "POSIX access ACL with a named user and mask, mode 0640"),
    ("home/userns/file", 1, True, "uid/gid 100000 (above 65535, fits USTAR octal)"),
    ("home/bigid", 1, True, "uid/gid 2000000000 (too big for USTAR: PAX uid/gid)"),
    ("app/hello.txt", 1, True, "ordinary uid/gid 1000; WorkingDir /app exists"),
    ("times/nanosecond", 1, True, "PAX mtime with 9 decimals (1700000000.123456789)"),
    ("times/nanosecond-dir", 1, True, "directory with a nanosecond mtime"),
    ("times/pre-1970", 1, True, "negative mtime (1960-01-01) via PAX"),
    ("times/post-2038", 1, True, "mtime 2100-01-01 (beyond 32-bit time_t)"),
    ("links/short", 1, True, "symlink target < 60 bytes (inline in an ext4 inode)"),
    ("links/long", 1, True, "symlink target of 80 bytes (> 60: needs a data block)"),
    ("links/pax", 1, True, "symlink target of 150 bytes (PAX linkpath)"),
    ("links/longest", 1, True, "symlink target of 300 bytes (> 255, PAX linkpath)"),
    ("links/absolute", 1, True, "absolute symlink /etc/passwd"),
    ("names/café", 1, True, "UTF-8 name (PAX path)"),
    ("names/日本語.txt", 1, True, "UTF-8 CJK name (PAX path)"),
    ("names/" + "x" * 200, 1, True, "single 200-byte component (PAX path)"),
    (
        "names/ustar/" + "/".join(["p" * 40] * 3) + "/prefix-split",
        1,
        True,
        "path of ~150 bytes stored with the USTAR prefix field, no PAX",
    ),
    ("names/deep/" + "/".join(["d" * 50] * 5) + "/leaf", 1, True, "path > 255 bytes (PAX)"),
    ("names/bad-\udcff-byte", 3, True, "name with a non-UTF-8 byte 0xff (PAX hdrcharset-less)"),
    ("files/empty", 1, True, "empty regular file"),
    ("files/4096", 1, True, "file of exactly 4096 bytes"),
    ("files/big", 1, True, "5 MiB + 12345 bytes of pseudo-random content"),
    ("many", 2, True, "directory with 3000 entries (htree-sized)"),
    ("etc/delete-me", 2, False, "file deleted by a .wh. whiteout"),
    ("opt/dirgone", 2, False, "directory (with children) deleted by a .wh. whiteout"),
    ("opt/opaque/old1", 2, False, "opaque marker hides lower contents"),
    ("opt/opaque/sub/old3", 2, False, "opaque marker hides lower subdirectories too"),
    ("opt/opaque/new1", 2, True, "opaque marker keeps same-layer contents"),
    ("opt/opaque/new2", 3, False, "file added in layer 2, whited out in layer 3"),
    ("replace/file-to-dir/child", 2, True, "lower file replaced by an upper directory"),
    ("replace/dir-to-file", 2, True, "lower directory replaced by an upper file"),
    ("replace/dir-to-file/inner", 2, False, "children of a dir replaced by a file are gone"),
    ("data/upper-link", 2, True, "upper-layer hardlink to a file that lives only below"),
    ("data/lower-only", 1, True, "target of the cross-layer hardlink (same inode after)"),
    ("data/pair-a", 2, False, "one name of a lower hardlink pair whited out"),
    ("data/pair-b", 1, True, "the other name survives with the data"),
    ("srv", 2, True, "dir metadata changed above (0750, 1000:1000), lower children kept"),
    ("srv/keep", 1, True, "lower child of a directory whose metadata changed"),
    ("etc/recreated", 3, True, "whiteout + new file in the same layer: the new file stays"),
    ("etc/motd", 3, True, "file content replaced by an upper layer"),
    ("app/link-a", 3, True, "hardlink pair inside an uncompressed layer, with an xattr"),
    ("sparse/file", 3, True, "GNU sparse 1.0 (PAX), 64 MiB, holes at start/middle/end"),
    ("etc/passwd", 1, True, "mode field with S_IFMT bits (0100644) as moby writes (layers 1-2)"),
    ("etc/recreated", 3, True, "mode field without type bits (0644) in layer 3"),
)

EPOCH = 1_700_000_000  # every busybox entry without a time case of its own
CREATED = "2023-11-14T22:13:20Z"
TAG = "fixture"
MIB = 1 << 20
NS = 1_000_000_000
BLOCK = 512
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZIP = MT_TAR + "+gzip"
MT_ZSTD = MT_TAR + "+zstd"

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]


def log(message: str) -> None:
    print(f"[fixtures] {message}", file=sys.stderr, flush=True)


def run(*argv: str | Path, env: dict[str, str] | None = None) -> None:
    """The one place external programs run: logs the command, names it and its stderr on failure."""
    args = [str(a) for a in argv]
    log("$ " + " ".join(args))
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"{args[0]} failed with exit code {proc.returncode}:\n{tail}")


def enc(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def walk_key(path: str) -> tuple[bytes, ...]:
    """Go's filepath.Walk order (what Docker writes): lexical by path component."""
    return tuple(enc(part) for part in path.split("/"))


# --------------------------------------------------------------------------------------------
# Tar writing


@dataclass
class TarEntry:
    """One tar member. `path` is relative, without "./", leading or trailing "/"."""

    path: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = EPOCH * NS
    data: bytes = b""
    source: Path | None = None  # stream this file's bytes instead of `data`
    size: int = 0  # of `source`; for `sparse`, the logical size
    linkname: str = ""
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    sparse: tuple[tuple[int, bytes], ...] = ()  # (offset, bytes) data regions
    group: str = ""  # hardlink group: the first member in tar order carries the data

    @property
    def data_size(self) -> int:
        if self.sparse:
            return self.size
        return self.size if self.source is not None else len(self.data)


def resolve_links(entries: Iterable[TarEntry]) -> list[TarEntry]:
    """Sort into walk order; later members of a hardlink group become links to the first."""
    ordered = sorted(entries, key=lambda e: walk_key(e.path))
    first: dict[str, str] = {}
    out: list[TarEntry] = []
    for entry in ordered:
        if entry.group and entry.kind == "file":
            if entry.group in first:
                entry = replace(
                    entry, kind="hardlink", linkname=first[entry.group], data=b"", source=None
                )
            else:
                first[entry.group] = entry.path
        out.append(entry)
    return out


def pax_record(key: str, value: bytes) -> bytes:
    body = b" " + enc(key) + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length = len(body) + len(str(length))
    return str(length).encode() + body


def ascii_only(raw: bytes, limit: int) -> str:
    """Best-effort USTAR field for a value carried in PAX (as Go's toASCII + truncate)."""
    return bytes(b for b in raw if b < 0x80).decode("ascii")[:limit]


def ustar_fits(raw: bytes) -> bool:
    """Whether tarfile's USTAR writer can store this name (<= 100 bytes or a prefix split)."""
    if not raw.isascii():
        return False
    if len(raw) <= 100:
        return True
    parts = raw.split(b"/")
    return any(
        len(b"/".join(parts[:i])) <= 155 and len(b"/".join(parts[i:])) <= 100
        for i in range(1, len(parts))
    )


TYPEFLAGS: dict[str, bytes] = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


class HashingWriter:
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.sha.update(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _sparse_map(regions: tuple[tuple[int, bytes], ...], realsize: int) -> bytes:
    """GNU sparse 1.0 map: decimal count, then offset/size pairs, newline-terminated, padded.
    A zero-length region at `realsize` ends the map when the file ends in a hole (as GNU tar)."""
    pairs = [(offset, len(chunk)) for offset, chunk in regions]
    if not pairs or pairs[-1][0] + pairs[-1][1] < realsize:
        pairs.append((realsize, 0))
    text = f"{len(pairs)}\n" + "".join(f"{o}\n{n}\n" for o, n in pairs)
    raw = text.encode()
    return raw + b"\0" * (-len(raw) % BLOCK)


def _expanded_sparse(entry: TarEntry) -> Iterator[bytes]:
    position = 0
    for offset, chunk in entry.sparse:
        while position < offset:
            step = min(MIB, offset - position)
            yield b"\0" * step
            position += step
        yield chunk
        position += len(chunk)
    while position < entry.size:
        step = min(MIB, entry.size - position)
        yield b"\0" * step
        position += step


class TarWriter:
    """Writes a tar stream as Go's archive/tar does: USTAR headers; a PAX 'x' header named
    DIR/PaxHeaders.0/BASE with sorted records when a field does not fit; two zero blocks at the
    end, no padding to a record size. Returns one record per member for the expected tree."""

    def __init__(
        self, out: BinaryIO, *, expand_sparse: bool = False, type_bits: bool = False
    ) -> None:
        self.out = HashingWriter(out)
        self.expand_sparse = expand_sparse
        self.type_bits = type_bits
        self.records: list[dict[str, object]] = []

    def _header(self, entry: TarEntry, size: int, pax: dict[str, bytes], name: str) -> None:
        raw_name = enc(name) + (b"/" if entry.kind == "dir" else b"")
        if not ustar_fits(raw_name):
            pax.setdefault("path", raw_name)
            ustar_name = ascii_only(raw_name, 99 if entry.kind == "dir" else 100).rstrip("/")
        else:
            ustar_name = raw_name.decode("ascii")
        raw_link = enc(entry.linkname)
        if not raw_link.isascii() or len(raw_link) > 100:
            pax["linkpath"] = raw_link
            link = ascii_only(raw_link, 100)
        else:
            link = raw_link.decode("ascii")
        ids = {"uid": entry.uid, "gid": entry.gid}
        for key, value in ids.items():
            if not 0 <= value < 8**7:
                pax[key] = str(value).encode()
                ids[key] = 0
        seconds, fraction = divmod(entry.mtime_ns, NS)
        if fraction or not 0 <= seconds < 8**11:
            pax["mtime"] = (f"{seconds}.{fraction:09d}" if fraction else str(seconds)).encode()
        if pax:
            records = b"".join(pax_record(k, pax[k]) for k in sorted(pax))
            head, _, base = name.rpartition("/")
            pax_name = (head + "/" if head else "") + "PaxHeaders.0/" + base
            info = tarfile.TarInfo(ascii_only(enc(pax_name), 100).rstrip("/"))
            info.type, info.size, info.mode, info.mtime = tarfile.XHDTYPE, len(records), 0, 0
            info.uname = info.gname = ""
            self.out.write(info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict"))
            self._write_data([records], len(records))
        info = tarfile.TarInfo(ustar_name)
        info.type = TYPEFLAGS[entry.kind]
        info.mode = entry.mode
        info.uid, info.gid = ids["uid"], ids["gid"]
        info.size = size
        info.mtime = seconds if 0 <= seconds < 8**11 else 0
        info.linkname = link
        info.uname = info.gname = ""
        info.devmajor, info.devminor = entry.major, entry.minor
        header = info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
        if self.type_bits:
            header = with_type_bits(header, entry.mode | MODE_TYPE_BITS[entry.kind])
        self.out.write(header)

    def _write_data(self, chunks: Iterable[bytes], size: int) -> None:
        written = 0
        for chunk in chunks:
            self.out.write(chunk)
            written += len(chunk)
        if written != size:
            raise RuntimeError(f"tar member data is {written} bytes, header says {size}")
        self.out.write(b"\0" * (-size % BLOCK))

    def add(self, entry: TarEntry) -> None:
        pax: dict[str, bytes] = {}
        for key in sorted(entry.xattrs):
            pax["SCHILY.xattr." + key] = entry.xattrs[key]
        content = hashlib.sha256()

        def hashed(chunks: Iterable[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                content.update(chunk)
                yield chunk

        name = entry.path
        if entry.kind != "file":
            self._header(entry, 0, pax, name)
        elif entry.sparse and not self.expand_sparse:
            pax.update(
                {
                    "GNU.sparse.major": b"1",
                    "GNU.sparse.minor": b"0",
                    "GNU.sparse.name": enc(entry.path),
                    "GNU.sparse.realsize": str(entry.size).encode(),
                }
            )
            head, _, base = entry.path.rpartition("/")
            sparse_name = (head + "/" if head else "") + "GNUSparseFile.0/" + base
            header_map = _sparse_map(entry.sparse, entry.size)
            stored = len(header_map) + sum(len(chunk) for _, chunk in entry.sparse)
            self._header(entry, stored, pax, sparse_name)
            self._write_data([header_map, *(chunk for _, chunk in entry.sparse)], stored)
            for chunk in _expanded_sparse(entry):
                content.update(chunk)
        else:
            size = entry.data_size
            self._header(entry, size, pax, name)
            if entry.sparse:
                chunks: Iterable[bytes] = _expanded_sparse(entry)
            elif entry.source is not None:
                chunks = _file_chunks(entry.source)
            else:
                chunks = [entry.data]
            self._write_data(hashed(chunks), size)
        record: dict[str, object] = {
            "path": entry.path,
            "kind": entry.kind,
            "mode": entry.mode,
            "uid": entry.uid,
            "gid": entry.gid,
            "mtime_ns": entry.mtime_ns,
        }
        if entry.kind == "file":
            record["size"] = entry.data_size
            record["sha256"] = content.hexdigest()
        if entry.kind in ("symlink", "hardlink"):
            record["linkname"] = entry.linkname
        if entry.kind in ("char", "block"):
            record["rdev"] = [entry.major, entry.minor]
        if entry.xattrs:
            record["xattrs"] = {k: v.hex() for k, v in sorted(entry.xattrs.items())}
        self.records.append(record)

    def close(self) -> None:
        self.out.write(b"\0" * (2 * BLOCK))
        self.out.flush()


# moby's pkg/archive puts the S_IFMT bits back into the mode field (fillGo18FileTypeBits) so
# layer digests stayed stable across Go 1.9 -> 1.10; readers must mask the field with 07777.
MODE_TYPE_BITS: dict[str, int] = {
    "file": stat.S_IFREG,
    "hardlink": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def with_type_bits(header: bytes, mode: int) -> bytes:
    """Rewrite a USTAR header's mode field (tarfile masks it to 07777) and its checksum."""
    block = bytearray(header)
    block[100:108] = b"%07o\0" % mode
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            yield chunk


def write_tar(
    path: Path, entries: Iterable[TarEntry], *, expand_sparse: bool = False, type_bits: bool = False
) -> TarWriter:
    with open(path, "wb") as out:
        writer = TarWriter(out, expand_sparse=expand_sparse, type_bits=type_bits)
        for entry in entries:
            writer.add(entry)
        writer.close()
    return writer


# --------------------------------------------------------------------------------------------
# Flattening the busybox layer model (for the rootfs tar): whiteouts apply to lower layers
# only, so each layer's whiteouts are applied before its entries.


@dataclass
class _Node:
    entry: TarEntry  # shared by every name of a hardlink group (identity = inode)
    children: dict[str, _Node] | None = None


def flatten(layers: list[list[TarEntry]]) -> list[TarEntry]:
    root = _Node(TarEntry("", "dir"), {})

    def lookup(path: str) -> _Node | None:
        node: _Node | None = root
        for part in [p for p in path.split("/") if p]:
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node

    for entries in layers:
        for entry in entries:
            head, _, base = entry.path.rpartition("/")
            parent = lookup(head)
            if parent is None or parent.children is None or not base.startswith(".wh."):
                continue
            if base == ".wh..wh..opq":
                parent.children.clear()
            else:
                parent.children.pop(base[len(".wh.") :], None)
        for entry in entries:
            head, _, base = entry.path.rpartition("/")
            if base.startswith(".wh."):
                continue
            parent = lookup(head)
            if parent is None or parent.children is None:
                raise RuntimeError(f"fixture recipe bug: {entry.path} has no parent directory")
            existing = parent.children.get(base)
            if entry.kind == "hardlink":
                target = lookup(entry.linkname)
                if target is None or target.entry.kind != "file":
                    raise RuntimeError(f"fixture recipe bug: dangling hardlink {entry.path}")
                parent.children[base] = _Node(target.entry)
            elif entry.kind == "dir" and existing is not None and existing.children is not None:
                existing.entry = entry
            else:
                parent.children[base] = _Node(entry, {} if entry.kind == "dir" else None)

    out: list[TarEntry] = []
    first_name: dict[int, str] = {}

    def emit(node: _Node, path: str) -> None:
        assert node.children is not None
        for name in sorted(node.children, key=enc):
            child = node.children[name]
            child_path = f"{path}/{name}" if path else name
            inode = id(child.entry)
            if inode in first_name:
                link = first_name[inode]
                out.append(
                    replace(
                        child.entry,
                        path=child_path,
                        kind="hardlink",
                        linkname=link,
                        data=b"",
                        source=None,
                        size=0,
                        sparse=(),
                        group="",
                    )
                )
            else:
                if child.entry.kind == "file":
                    first_name[inode] = child_path
                out.append(replace(child.entry, path=child_path, group=""))
            if child.children is not None:
                emit(child, child_path)

    emit(root, "")
    return out


# --------------------------------------------------------------------------------------------
# Image assembly: layers -> config, manifest, OCI layout, archives


@dataclass
class Layer:
    tar: Path  # uncompressed tar
    diff_id: str
    blob: Path  # as stored in the OCI layout (compressed per media_type)
    digest: str
    size: int
    media_type: str
    created_by: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _file_chunks(path):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def compress_layer(tar: Path, media_type: str, created_by: str, diff_id: str = "") -> Layer:
    """Compress `tar` next to itself per `media_type`, deterministically (gzip mtime 0)."""
    diff_id = diff_id or sha256_file(tar)
    if media_type == MT_TAR:
        return Layer(tar, diff_id, tar, diff_id, tar.stat().st_size, media_type, created_by)
    blob = tar.with_suffix(".gz" if media_type == MT_GZIP else ".zst")
    with open(blob, "wb") as raw:
        sink = HashingWriter(raw)
        if media_type == MT_GZIP:
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6
            ) as gz:
                for chunk in _file_chunks(tar):
                    gz.write(chunk)
        elif media_type == MT_ZSTD:
            import zstandard

            with open(tar, "rb") as source:
                zstandard.ZstdCompressor(level=3).copy_stream(source, sink)  # type: ignore[arg-type]
        else:
            raise ValueError(media_type)
    return Layer(tar, diff_id, blob, sink.digest, sink.count, media_type, created_by)


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def file_entry(path: str, data: bytes = b"", source: Path | None = None) -> TarEntry:
    size = source.stat().st_size if source is not None else 0
    return TarEntry(path, "file", data=data, source=source, size=size)


def dir_entry(path: str) -> TarEntry:
    return TarEntry(path, "dir", mode=0o755)


def assemble(
    out: Path,
    repo: str,
    layers: list[Layer],
    image_config: dict[str, object],
    extra_history: list[dict[str, object]],
    *,
    oci_archive: bool,
) -> dict[str, object]:
    """Write every archive form of one image into `out` and return its facts."""
    history: list[dict[str, object]] = [
        {"created": CREATED, "created_by": layer.created_by} for layer in layers
    ]
    history += extra_history
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": history,
    }
    config_bytes = canonical_json(config)
    config_desc = descriptor(MT_CONFIG, config_bytes)
    layer_descs = [
        {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
        for layer in layers
    ]
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": config_desc,
            "layers": layer_descs,
        }
    )
    manifest_desc = descriptor(MT_MANIFEST, manifest)

    def index(annotations: dict[str, str]) -> bytes:
        entry = dict(manifest_desc)
        entry["annotations"] = annotations
        return canonical_json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [entry]})

    # (1) OCI image layout directory
    layout = out / "oci"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(index({"org.opencontainers.image.ref.name": TAG}))
    for data in (config_bytes, manifest):
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    for layer in layers:
        os.link(layer.blob, blobs / layer.digest.removeprefix("sha256:"))

    # (2) oci-archive: the layout directory as one tar
    if oci_archive:
        members = [dir_entry("blobs"), dir_entry("blobs/sha256")]
        members += [file_entry(f"blobs/sha256/{p.name}", source=p) for p in sorted(blobs.iterdir())]
        members += [file_entry(n, source=layout / n) for n in ("index.json", "oci-layout")]
        write_tar(out / "oci-archive.tar", sorted(members, key=lambda e: walk_key(e.path)))

    repo_tag = f"{repo}:{TAG}"
    config_hex = hashlib.sha256(config_bytes).hexdigest()

    # (3) legacy `docker save`: <v1 id>/layer.tar (uncompressed), <config hex>.json
    members = []
    parent = ""
    layer_paths = []
    for layer in layers:
        v1: dict[str, object] = {"created": CREATED, "layer_id": layer.diff_id}
        if parent:
            v1["parent"] = parent
        v1_id = hashlib.sha256(canonical_json(v1)).hexdigest()
        v1_json: dict[str, object] = {"id": v1_id, "created": CREATED, "os": "linux"}
        if parent:
            v1_json["parent"] = parent
        if layer is layers[-1]:
            v1_json["config"] = image_config
            v1_json["architecture"] = "amd64"
        members += [
            dir_entry(v1_id),
            file_entry(f"{v1_id}/VERSION", b"1.0"),
            file_entry(f"{v1_id}/json", canonical_json(v1_json)),
            file_entry(f"{v1_id}/layer.tar", source=layer.tar),
        ]
        layer_paths.append(f"{v1_id}/layer.tar")
        parent = v1_id
    docker_manifest = [
        {"Config": f"{config_hex}.json", "RepoTags": [repo_tag], "Layers": layer_paths}
    ]
    members += [
        file_entry(f"{config_hex}.json", config_bytes),
        file_entry("manifest.json", canonical_json(docker_manifest)),
        file_entry("repositories", canonical_json({repo: {TAG: parent}})),
    ]
    write_tar(out / "docker-archive.tar", sorted(members, key=lambda e: walk_key(e.path)))

    # (4) Docker >= 25 `docker save`: an OCI layout whose layers are uncompressed tars,
    # plus manifest.json pointing into blobs/sha256
    plain_descs = [
        {"mediaType": MT_TAR, "digest": layer.diff_id, "size": layer.tar.stat().st_size}
        for layer in layers
    ]
    plain_manifest = canonical_json(
        {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc, "layers": plain_descs}
    )
    plain_desc = descriptor(MT_MANIFEST, plain_manifest)
    plain_entry = dict(plain_desc)
    plain_entry["annotations"] = {
        "io.containerd.image.name": f"docker.io/{repo_tag}",
        "org.opencontainers.image.ref.name": TAG,
    }
    plain_index = canonical_json(
        {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [plain_entry]}
    )
    blob_members = {
        config_hex: file_entry("", config_bytes),
        hashlib.sha256(plain_manifest).hexdigest(): file_entry("", plain_manifest),
    }
    for layer in layers:
        blob_members[layer.diff_id.removeprefix("sha256:")] = file_entry("", source=layer.tar)
    members = [dir_entry("blobs"), dir_entry("blobs/sha256")]
    members += [replace(e, path=f"blobs/sha256/{h}") for h, e in blob_members.items()]
    oci_docker_manifest = [
        {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": [repo_tag],
            "Layers": [f"blobs/sha256/{layer.diff_id.removeprefix('sha256:')}" for layer in layers],
        }
    ]
    top = layers[-1].diff_id.removeprefix("sha256:")
    members += [
        file_entry("index.json", plain_index),
        file_entry("manifest.json", canonical_json(oci_docker_manifest)),
        file_entry("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        file_entry("repositories", canonical_json({repo: {TAG: top}})),
    ]
    write_tar(out / "docker-oci-archive.tar", sorted(members, key=lambda e: walk_key(e.path)))

    return {
        "repo_tag": repo_tag,
        "tag": TAG,
        "config_digest": config_desc["digest"],
        "diff_ids": [layer.diff_id for layer in layers],
        "layer_digests": [layer.digest for layer in layers],
        "layer_media_types": [layer.media_type for layer in layers],
        "manifest_digest": manifest_desc["digest"],
        "docker_oci_manifest_digest": plain_desc["digest"],
        "config": image_config,
        "forms": {
            "oci_layout": "oci",
            "oci_archive": "oci-archive.tar" if oci_archive else None,
            "docker_archive": "docker-archive.tar",
            "docker_oci_archive": "docker-oci-archive.tar",
            "rootfs_tar": "rootfs.tar",
            "expected_tree": "tree.json",
        },
    }


def write_rootfs(out: Path, entries: Iterable[TarEntry]) -> int:
    """(5) the flattened tree as one tar, like `docker export` minus the four files the
    container runtime adds (/.dockerenv, /etc/hosts, /etc/hostname, /etc/resolv.conf)."""
    writer = write_tar(out / "rootfs.tar", entries, expand_sparse=True, type_bits=True)
    (out / "tree.json").write_bytes(canonical_json(writer.records))
    return len(writer.records)


# --------------------------------------------------------------------------------------------
# Image A: busybox, every flattening case, layers written entry by entry

APPLETS = (
    "cat",
    "cp",
    "dmesg",
    "echo",
    "env",
    "false",
    "find",
    "grep",
    "head",
    "hostname",
    "id",
    "ln",
    "ls",
    "mkdir",
    "mount",
    "mv",
    "poweroff",
    "ps",
    "reboot",
    "rm",
    "sed",
    "sleep",
    "stat",
    "sync",
    "tail",
    "touch",
    "true",
    "umount",
    "uname",
    "wc",
    "xargs",
)

# POSIX ACL xattr tags (linux/posix_acl_xattr.h); the VFS form has a version 2 header.
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF


def posix_acl(*entries: tuple[int, int, int]) -> bytes:
    """(tag, perm, id) entries, already in the kernel's sorted order."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def vfs_cap_v2(permitted: int, effective: bool) -> bytes:
    """security.capability: magic_etc (VFS_CAP_REVISION_2 | EFFECTIVE), then 2 x (perm, inh)."""
    magic = 0x02000000 | (1 if effective else 0)
    return struct.pack("<IIIII", magic, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


def pseudo_random(seed: str, size: int) -> bytes:
    return hashlib.shake_256(seed.encode()).digest(size)


def _d(path: str, mode: int = 0o755, **kw: object) -> TarEntry:
    return TarEntry(path, "dir", mode=mode, **kw)  # type: ignore[arg-type]


def _f(path: str, data: bytes | str = b"", mode: int = 0o644, **kw: object) -> TarEntry:
    raw = data.encode() if isinstance(data, str) else data
    return TarEntry(path, "file", mode=mode, data=raw, **kw)  # type: ignore[arg-type]


def _l(path: str, target: str) -> TarEntry:
    return TarEntry(path, "symlink", mode=0o777, linkname=target)


def _wh(path: str) -> TarEntry:
    return TarEntry(path, "file", mode=0o600)


def busybox_layers(busybox: bytes) -> list[tuple[str, str, list[TarEntry]]]:
    """(media type, created_by, entries) for each layer, bottom first."""
    acl_dir_access = posix_acl(
        (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID), (ACL_USER, 7, 1000),
        (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID), (ACL_MASK, 7, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    )  # fmt: skip
    acl_dir_default = posix_acl(
        (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID), (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
        (ACL_GROUP, 7, 1000), (ACL_MASK, 7, ACL_UNDEFINED_ID), (ACL_OTHER, 5, ACL_UNDEFINED_ID),
    )  # fmt: skip
    acl_file_access = posix_acl(
        (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID), (ACL_USER, 4, 1000),
        (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID), (ACL_MASK, 4, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    )  # fmt: skip
    ustar_path = next(c[0] for c in CASES if c[0].startswith("names/ustar/"))
    deep_path = next(c[0] for c in CASES if c[0].startswith("names/deep/"))
    base = [
        _d("app", uid=1000, gid=1000),
        _f("app/hello.txt", "hello from layer 1\n", uid=1000, gid=1000),
        _d("bin"),
        *(_f(f"bin/{n}", busybox, 0o755, group="busybox") for n in ("ash", "busybox", "sh")),
        *(_l(f"bin/{applet}", "busybox") for applet in APPLETS),
        _d("data"),
        _f("data/lower-only", "only in layer 1; layer 2 adds a hardlink to it\n"),
        _f("data/pair-a", "a lower hardlink pair; layer 2 whites out pair-a\n", group="pair"),
        _f("data/pair-b", "a lower hardlink pair; layer 2 whites out pair-a\n", group="pair"),
        _d("dev"),
        TarEntry("dev/null", "char", mode=0o666, major=1, minor=3),
        TarEntry("dev/sda", "block", mode=0o660, gid=6, major=8, minor=0),
        _d("etc"),
        _f("etc/delete-me", "deleted by a whiteout in layer 2\n"),
        _f("etc/group", "root:x:0:\ndisk:x:6:\napp:x:1000:\n"),
        _f("etc/motd", "motd from layer 1\n"),
        _f("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n"),
        _f("etc/recreated", "layer 1 version\n"),
        _f("etc/xattr-comment", "has a user.comment\n", xattrs={"user.comment": b"fixture"}),
        _d("files"),
        _f("files/4096", bytes(range(256)) * 16),
        _f("files/big", pseudo_random("files/big", 5 * MIB + 12345)),
        _f("files/empty"),
        _d("home"),
        _f("home/bigid", "uid and gid need PAX\n", uid=2_000_000_000, gid=2_000_000_000),
        _d("home/userns", uid=100000, gid=100000),
        _f("home/userns/file", "owned by 100000\n", uid=100000, gid=100000),
        _d("links"),
        _l("links/absolute", "/etc/passwd"),
        _l("links/long", "../" + "l" * 76 + "x"),
        _l("links/longest", "/" + "/".join(["y" * 49] * 6)),
        _l("links/pax", "../" + "p" * 146 + "x"),
        _l("links/short", "../etc/motd"),
        _d("names"),
        _f("names/café", "UTF-8 name\n"),
        _f("names/日本語.txt", "CJK name\n"),
        _f("names/" + "x" * 200, "200-byte component\n"),
        *(_d(ustar_path.rsplit("/", k)[0]) for k in (4, 3, 2, 1)),
        _f(ustar_path, "USTAR prefix split\n"),
        *(_d(deep_path.rsplit("/", k)[0]) for k in (6, 5, 4, 3, 2, 1)),
        _f(deep_path, "deep path > 255 bytes\n"),
        _d("opt"),
        _d("opt/dirgone"),
        _f("opt/dirgone/a", "gone with its directory\n"),
        _d("opt/dirgone/b"),
        _f("opt/dirgone/b/c", "gone with its directory\n"),
        _d("opt/opaque"),
        _f("opt/opaque/old1", "hidden by an opaque marker\n"),
        _f("opt/opaque/old2", "hidden by an opaque marker\n"),
        _d("opt/opaque/sub"),
        _f("opt/opaque/sub/old3", "hidden by an opaque marker\n"),
        _d("replace"),
        _d("replace/dir-to-file"),
        _f("replace/dir-to-file/inner", "gone when the dir becomes a file\n"),
        _f("replace/file-to-dir", "becomes a directory in layer 2\n"),
        _d("root", 0o700),
        _d("run"),
        TarEntry("run/fifo", "fifo", mode=0o644),
        _d("srv"),
        _d(
            "srv/acl-dir",
            0o770,
            xattrs={
                "system.posix_acl_access": acl_dir_access,
                "system.posix_acl_default": acl_dir_default,
            },
        ),
        _f("srv/acl-file", "ACL'd\n", 0o640, xattrs={"system.posix_acl_access": acl_file_access}),
        _f("srv/keep", "survives the metadata change of /srv\n"),
        _d("srv/setgid-dir", 0o2775, gid=1000),
        _d("times"),
        _f("times/nanosecond", "ns\n", mtime_ns=EPOCH * NS + 123_456_789),
        _d("times/nanosecond-dir", mtime_ns=EPOCH * NS + 987_654_321),
        _f("times/post-2038", "2100-01-01\n", mtime_ns=4_102_444_800 * NS),
        _f("times/pre-1970", "1960-01-01\n", mtime_ns=-315_619_200 * NS),
        _d("tmp", 0o1777),
        _d("usr"),
        _d("usr/bin"),
        _f(
            "usr/bin/netcap",
            "#!/bin/sh\necho cap\n",
            0o755,
            xattrs={
                "security.capability": vfs_cap_v2(1 << 13, effective=True),  # cap_net_raw+ep
            },
        ),
        _f("usr/bin/suid", "#!/bin/sh\necho suid\n", 0o4755),
    ]
    upper = [
        _d("data"),
        _wh("data/.wh.pair-a"),
        TarEntry("data/upper-link", "hardlink", linkname="data/lower-only"),
        _d("etc"),
        _wh("etc/.wh.delete-me"),
        _d("many"),
        *(_f(f"many/f{i:04d}", f"{i}\n") for i in range(3000)),
        _d("opt"),
        _wh("opt/.wh.dirgone"),
        _d("opt/opaque"),
        _wh("opt/opaque/.wh..wh..opq"),
        _f("opt/opaque/new1", "kept: same layer as the opaque marker\n"),
        _f("opt/opaque/new2", "whited out by layer 3\n"),
        _d("replace"),
        _f("replace/dir-to-file", "was a directory in layer 1\n"),
        _d("replace/file-to-dir"),
        _f("replace/file-to-dir/child", "was a file in layer 1\n"),
        _d("srv", 0o750, uid=1000, gid=1000),
    ]
    # Region lengths are whole 512-byte blocks: GNU tar reads each region from a block
    # boundary while Go and Python read them back to back; aligned, both agree.
    sparse_regions = (
        (1 * MIB, pseudo_random("sparse-1", 4096)),
        (32 * MIB + 512, pseudo_random("sparse-2", 3072)),
        (48 * MIB, pseudo_random("sparse-3", 8192)),
    )
    top = [
        _d("app", uid=1000, gid=1000),
        _f("app/link-a", "pair in the plain layer\n", uid=1000, gid=1000, group="plain",
           xattrs={"user.comment": b"hardlinked"}),
        _f("app/link-b", "pair in the plain layer\n", uid=1000, gid=1000, group="plain",
           xattrs={"user.comment": b"hardlinked"}),
        _d("etc"),
        _wh("etc/.wh.recreated"),
        _f("etc/motd", "motd from layer 3\n"),
        _f("etc/recreated", "layer 3 version\n"),
        _d("names"),
        _f("names/bad-\udcff-byte", "non-UTF-8 name\n"),
        _d("opt"),
        _d("opt/opaque"),
        _wh("opt/opaque/.wh.new2"),
        _d("sparse"),
        TarEntry("sparse/file", "file", size=64 * MIB, sparse=sparse_regions),
    ]  # fmt: skip
    return [
        (MT_GZIP, "fixture layer 1 (gzip): busybox, /etc and every lower half", base),
        (MT_ZSTD, "fixture layer 2 (zstd): whiteouts, opaque, replacements, 3000 files", upper),
        (MT_TAR, "fixture layer 3 (plain tar): same-layer whiteout, sparse, non-UTF-8", top),
        (MT_GZIP, "fixture layer 4 (gzip): an empty tar, as metadata-only steps produce", []),
    ]


BUSYBOX_CONFIG: dict[str, object] = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo hello"],
    "Env": [PATH_ENV, "FOO=bar"],
    "WorkingDir": "/app",
    "User": "1000:1000",
}


def fetch_busybox(cache: Path) -> tuple[str, bytes]:
    """bin/busybox from Debian's busybox-static, the .deb kept in the cache for offline rebuilds."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / ".downloads.lock"):
        debs = sorted(downloads.glob("busybox-static_*.deb"))
        if not debs:
            with tempfile.TemporaryDirectory(dir=downloads) as tmp:
                run("sh", "-c", f"cd '{tmp}' && apt-get download busybox-static")
                fetched = next(Path(tmp).glob("busybox-static_*.deb"))
                os.rename(fetched, downloads / fetched.name)
            debs = sorted(downloads.glob("busybox-static_*.deb"))
    with tempfile.TemporaryDirectory() as tmp:
        run("dpkg-deb", "-x", debs[-1], tmp)
        return debs[-1].name, (Path(tmp) / "bin" / "busybox").read_bytes()


def build_busybox(out: Path, cache: Path) -> dict[str, object]:
    deb, busybox = fetch_busybox(cache)
    (out / "layers").mkdir()
    resolved: list[list[TarEntry]] = []
    layers: list[Layer] = []
    for number, (media_type, created_by, entries) in enumerate(busybox_layers(busybox), 1):
        ordered = resolve_links(entries)
        resolved.append(ordered)
        tar = out / "layers" / f"layer{number}.tar"
        write_tar(tar, ordered, type_bits=number <= 2)  # layer 3 has plain 07777 modes
        layers.append(compress_layer(tar, media_type, created_by))
    extra_history: list[dict[str, object]] = [
        {"created": CREATED, "created_by": f"/bin/sh -c #(nop) {step}", "empty_layer": True}
        for step in ('ENV FOO=bar', 'WORKDIR /app', 'USER 1000:1000',
                     'ENTRYPOINT ["/bin/sh" "-c"]', 'CMD ["echo hello"]')
    ]  # fmt: skip
    facts = assemble(out, "oci2vm-fixtures/busybox", layers, BUSYBOX_CONFIG, extra_history,
                     oci_archive=True)  # fmt: skip
    entry_count = write_rootfs(out, flatten(resolved))
    shutil.rmtree(out / "layers")
    facts.update(
        name="busybox",
        entries=entry_count,
        busybox_deb=deb,
        busybox_sha256=hashlib.sha256(busybox).hexdigest(),
        cases=[list(case) for case in CASES],
    )
    return facts


# --------------------------------------------------------------------------------------------
# Image B: debian, as in the article: debootstrap minbase, then kernel + systemd in a chroot


def scan(root: Path) -> dict[str, os.stat_result]:
    """Every path under `root` (relative, walk order) with its lstat."""
    found: dict[str, os.stat_result] = {}

    def walk(rel: str) -> None:
        with os.scandir(os.path.join(root, rel) if rel else root) as listing:
            names = sorted((item.name for item in listing), key=enc)
        for name in names:
            child = f"{rel}/{name}" if rel else name
            info = os.lstat(os.path.join(root, child))
            found[child] = info
            if stat.S_ISDIR(info.st_mode):
                walk(child)

    walk("")
    return found


def read_xattrs(path: str) -> dict[str, bytes]:
    names = sorted(os.listxattr(path, follow_symlinks=False))
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


def entry_from(root: Path, rel: str, info: os.stat_result) -> TarEntry | None:
    """A faithful tar entry for one real file: lstat metadata, all xattrs, ns mtime."""
    full = os.path.join(root, rel)
    mode = info.st_mode
    common = {
        "mode": stat.S_IMODE(mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
        "mtime_ns": info.st_mtime_ns,
        "xattrs": read_xattrs(full),
    }
    if stat.S_ISDIR(mode):
        return TarEntry(rel, "dir", **common)  # type: ignore[arg-type]
    if stat.S_ISREG(mode):
        group = f"{info.st_dev}:{info.st_ino}" if info.st_nlink > 1 else ""
        return TarEntry(rel, "file", source=Path(full), size=info.st_size, group=group, **common)  # type: ignore[arg-type]
    if stat.S_ISLNK(mode):
        return TarEntry(rel, "symlink", linkname=os.readlink(full), **common)  # type: ignore[arg-type]
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind: Kind = "char" if stat.S_ISCHR(mode) else "block"
        major, minor = os.major(info.st_rdev), os.minor(info.st_rdev)
        return TarEntry(rel, kind, major=major, minor=minor, **common)  # type: ignore[arg-type]
    if stat.S_ISFIFO(mode):
        return TarEntry(rel, "fifo", **common)  # type: ignore[arg-type]
    log(f"skipping {rel}: sockets are not representable in tar")
    return None


def tree_entries(root: Path, found: dict[str, os.stat_result] | None = None) -> list[TarEntry]:
    found = scan(root) if found is None else found
    entries = [entry_from(root, rel, info) for rel, info in found.items()]
    return resolve_links(e for e in entries if e is not None)


def _same_content(left: str, right: str) -> bool:
    with open(left, "rb") as a, open(right, "rb") as b:
        while True:
            chunk = a.read(MIB)
            if chunk != b.read(MIB):
                return False
            if not chunk:
                return True


def diff_trees(lower_root: Path, upper_root: Path) -> list[TarEntry]:
    """The layer that turns `lower_root` into `upper_root`: added/changed entries (lstat,
    xattrs, content), `.wh.` whiteouts for removed paths, an opaque marker for a directory
    whose lower children all went and new ones came. Parent directories of every change are
    included, as an overlay snapshot has them. A changed file's other hardlink names are
    included too (overlay copies the inode up), so the new layer holds the full file."""
    lower, upper = scan(lower_root), scan(upper_root)
    changed: set[str] = set()
    for rel, now in upper.items():
        before = lower.get(rel)
        if before is None or stat.S_IFMT(before.st_mode) != stat.S_IFMT(now.st_mode):
            changed.add(rel)
            continue
        same = (
            before.st_mode == now.st_mode
            and before.st_uid == now.st_uid
            and before.st_gid == now.st_gid
            and before.st_mtime_ns == now.st_mtime_ns
            and before.st_rdev == now.st_rdev
            and (stat.S_ISDIR(now.st_mode) or before.st_size == now.st_size)
            and read_xattrs(os.path.join(lower_root, rel))
            == read_xattrs(os.path.join(upper_root, rel))
        )
        if same and stat.S_ISLNK(now.st_mode):
            same = os.readlink(lower_root / rel) == os.readlink(upper_root / rel)
        if same and stat.S_ISREG(now.st_mode):
            same = _same_content(os.path.join(lower_root, rel), os.path.join(upper_root, rel))
        if not same:
            changed.add(rel)

    def is_dir(tree: dict[str, os.stat_result], rel: str) -> bool:
        return rel == "" or (rel in tree and stat.S_ISDIR(tree[rel].st_mode))

    children: dict[str, list[str]] = {}
    for rel in lower:
        children.setdefault(rel.rpartition("/")[0], []).append(rel)
    markers: list[str] = []
    for parent, names in children.items():
        if not (is_dir(lower, parent) and is_dir(upper, parent)):
            continue  # gone entirely, or hidden by an upper non-directory
        survivors = [rel for rel in names if rel in upper]
        gone = [rel for rel in names if rel not in upper]
        upper_has_children = any(rel.rpartition("/")[0] == parent for rel in changed)
        if gone and not survivors and upper_has_children:
            markers.append(f"{parent}/.wh..wh..opq" if parent else ".wh..wh..opq")
        else:
            for rel in gone:
                head, _, base = rel.rpartition("/")
                markers.append(f"{head}/.wh.{base}" if head else f".wh.{base}")

    inodes: dict[tuple[int, int], list[str]] = {}
    for rel, now in upper.items():
        if stat.S_ISREG(now.st_mode) and now.st_nlink > 1:
            inodes.setdefault((now.st_dev, now.st_ino), []).append(rel)
    for names in inodes.values():
        if any(rel in changed for rel in names):
            changed.update(names)

    needed: set[str] = set()
    for rel in [*changed, *markers]:
        head = rel.rpartition("/")[0]
        while head and head not in needed:
            needed.add(head)
            head = head.rpartition("/")[0]
    entries: list[TarEntry] = []
    for rel in sorted(changed | needed, key=walk_key):
        entry = entry_from(upper_root, rel, upper[rel])
        if entry is not None:
            entries.append(entry)
    for marker in markers:
        head = marker.rpartition("/")[0]
        mtime = upper[head].st_mtime_ns if head else os.lstat(upper_root).st_mtime_ns
        entries.append(TarEntry(marker, "file", mode=0o600, mtime_ns=mtime))
    return resolve_links(entries)


def build_minbase(out: Path, cache: Path) -> dict[str, object]:
    rootfs = out / "rootfs"
    run("debootstrap", "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR)
    write_tar(out / "layer.tar", tree_entries(rootfs), type_bits=True)
    layer = compress_layer(out / "layer.tar", MT_GZIP, "debootstrap --variant=minbase bookworm")
    return {"diff_id": layer.diff_id, "digest": layer.digest, "size": layer.size}


CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C",
    "HOME": "/root",
}
INSTALL = ("linux-image-amd64", "systemd-sysv")


def build_full(out: Path, cache: Path) -> dict[str, object]:
    """minbase + kernel + systemd, apt lists and caches cleaned as a Dockerfile would.
    debootstrap leaves its .debs (~31 MB) and apt lists (~49 MB) in the minbase tree, so the
    layers hold ~80 MB that layer 2 whites out: ~711 MB of layers for a ~618 MB tree."""
    minbase = ensure(cache, "debian-minbase", DEBIAN_STAGE_VERSION, build_minbase)
    rootfs = out / "rootfs"
    run("cp", "-a", minbase / "rootfs", rootfs)
    policy = rootfs / "usr/sbin/policy-rc.d"  # keeps maintainer scripts from starting services
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    mounted: list[Path] = []
    try:
        for argv, point in (
            (["-t", "proc", "proc"], rootfs / "proc"),
            (["-t", "sysfs", "sysfs"], rootfs / "sys"),
            (["--bind", "/dev"], rootfs / "dev"),
        ):
            run("mount", *argv, point)
            mounted.append(point)
        run("chroot", rootfs, "apt-get", "update", env=CHROOT_ENV)
        run("chroot", rootfs, "apt-get", "install", "-y", "--no-install-recommends", *INSTALL,
            env=CHROOT_ENV)  # fmt: skip
        run("chroot", rootfs, "apt-get", "clean", env=CHROOT_ENV)
    finally:
        for point in reversed(mounted):
            run("umount", "--lazy", point)
        policy.unlink()
    lists = rootfs / "var/lib/apt/lists"
    for item in lists.iterdir():  # `rm -rf /var/lib/apt/lists/*`, as a Dockerfile does
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
    return {"installed": list(INSTALL)}


def build_debian(out: Path, cache: Path) -> dict[str, object]:
    minbase = ensure(cache, "debian-minbase", DEBIAN_STAGE_VERSION, build_minbase)
    full = ensure(cache, "debian-full", DEBIAN_STAGE_VERSION, build_full)
    stage = json.loads((minbase / "facts.json").read_text())
    (out / "layers").mkdir()
    os.link(minbase / "layer.tar", out / "layers/layer1.tar")
    os.link(minbase / "layer.gz", out / "layers/layer1.gz")
    layer1 = Layer(out / "layers/layer1.tar", stage["diff_id"], out / "layers/layer1.gz",
                   stage["digest"], stage["size"], MT_GZIP,
                   "debootstrap --variant=minbase bookworm " + DEBIAN_MIRROR)  # fmt: skip
    started = time.monotonic()
    changes = diff_trees(minbase / "rootfs", full / "rootfs")
    write_tar(out / "layers/layer2.tar", changes, type_bits=True)
    log(f"layer 2 (diff) written in {time.monotonic() - started:.1f} s")
    created_by = "apt-get install -y --no-install-recommends " + " ".join(INSTALL)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(compress_layer, out / "layers/layer2.tar", MT_GZIP, created_by)
        entries = write_rootfs(out, tree_entries(full / "rootfs"))
        layer2 = pending.result()
    config: dict[str, object] = {"Env": [PATH_ENV], "Cmd": ["/bin/bash"]}
    facts = assemble(out, "oci2vm-fixtures/debian", [layer1, layer2], config, [],
                     oci_archive=False)  # fmt: skip
    shutil.rmtree(out / "layers")
    facts.update(name="debian", entries=entries)
    return facts


# --------------------------------------------------------------------------------------------
# The cache: one directory per recipe version, built in a temp dir and renamed atomically,
# one flock per fixture so concurrent builders wait for each other.


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: BinaryIO | None = None

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "ab")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.handle is not None
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def default_cache() -> Path:
    if env := os.environ.get("OCI2VM_FIXTURE_CACHE"):
        return Path(env)
    system = Path("/var/cache/oci2vm-fixtures")
    probe = system
    while not probe.exists():
        probe = probe.parent
    if os.access(probe, os.W_OK | os.X_OK):
        return system
    return Path.home() / ".cache" / "oci2vm-fixtures"


def remove_tree(path: Path) -> None:
    """Delete a build directory, first unmounting anything a crashed chroot left inside it."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        run("umount", "--lazy", point)
    run("rm", "-rf", "--one-file-system", path)


Builder = Callable[[Path, Path], dict[str, object]]


def ensure(cache: Path, name: str, version: int, build: Builder) -> Path:
    """The directory of fixture `name` at `version`, building it if it is not cached."""
    final = cache / f"{name}-v{version}"
    if (final / "facts.json").exists():
        return final
    with FileLock(cache / f".{name}.lock"):
        if (final / "facts.json").exists():
            return final  # another process built it while we waited
        for stale in [*cache.glob(f".{name}-v{version}.tmp-*"), final]:
            if stale.exists():
                log(f"removing incomplete build {stale}")
                remove_tree(stale)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-v{version}.tmp-", dir=cache))
        started = time.monotonic()
        log(f"building {name} v{version} in {work}")
        try:
            facts = build(work, cache)
            facts["build_seconds"] = round(time.monotonic() - started, 1)
            (work / "facts.json").write_bytes(canonical_json(facts))
            work.chmod(0o755)
            os.rename(work, final)
        except BaseException:
            remove_tree(work)
            raise
        log(f"built {name} v{version} in {time.monotonic() - started:.1f} s: {final}")
    return final


FIXTURES: dict[str, tuple[int, Builder]] = {
    "busybox": (BUSYBOX_VERSION, build_busybox),
    "debian": (DEBIAN_VERSION, build_debian),
}


def ensure_fixture(name: str, cache: Path | None = None) -> Path:
    version, build = FIXTURES[name]
    return ensure(cache or default_cache(), name, version, build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("which", nargs="?", default="all", choices=["busybox", "debian", "all"])
    parser.add_argument("--cache", type=Path, default=None, help="cache directory")
    args = parser.parse_args(argv)
    names = list(FIXTURES) if args.which == "all" else [args.which]
    for name in names:
        started = time.monotonic()
        path = ensure_fixture(name, args.cache)
        print(f"{name}: {path} ({time.monotonic() - started:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
