"""Mutations of valid inputs for the fuzz tests: hypothesis strategies that draw a seed
and damage it as an attacker or a broken tool would. Byte-level (bit flips, bytes set,
truncation, splices of the seed and of other seeds, insertions) for any format; for tar,
header fields set to hostile values with the checksum kept valid, so the damage reaches
past the checksum, and extension headers claiming huge sizes."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from hypothesis import strategies as st

from support.tarbytes import BLOCK, END, base256, header, member, octal, pax, with_checksum

BYTE_OPS = ["flip", "set", "cut", "splice", "insert"]
TAR_OPS = [*BYTE_OPS, "field", "field", "ext", "ext", "ext"]  # the ones that get past checksums
HUGE_NUMBERS = [0, 1, 511, 512, 2**31, 2**32 + 1, 2**33, 2**63 - 1, 2**64, 10**30]
HOSTILE_TEXT = [
    b"",
    b"-1",
    b"-9223372036854775809",
    b"1" * 40,
    b"9" * 5000,
    b"0x10",
    b"1_0",
    b" 5",
    b"1e9",
    b"\xff\xfe",
    b"1.5.5",
    b".",
    b"-",
    b"A=",
    b"0,1,2",
    b"0,4,-2,2",
    b"99999999999999,1",
]
PAX_KEYS = [
    "path",
    "linkpath",
    "size",
    "uid",
    "gid",
    "mtime",
    "atime",
    "ctime",
    "SCHILY.xattr.user.a",
    "LIBARCHIVE.xattr.user.b",
    "GNU.sparse.major",
    "GNU.sparse.minor",
    "GNU.sparse.name",
    "GNU.sparse.size",
    "GNU.sparse.realsize",
    "GNU.sparse.offset",
    "GNU.sparse.numbytes",
    "GNU.sparse.map",
    "GNU.sparse.numblocks",
]
# (offset, width) of the numeric fields of a ustar header
NUMERIC_FIELDS = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (148, 8), (329, 8), (337, 8)]
NUMERIC_FIELDS += [(386 + 24 * i + d, 12) for i in range(4) for d in (0, 12)] + [(483, 12)]


class Seeds(list[bytes]):
    """Valid inputs to mutate (named by their count in hypothesis' reports)."""

    def __repr__(self) -> str:
        return f"<{len(self)} seeds>"


def _tar(fmt: int, *members: tuple[str, bytes, bytes, dict[str, Any]], **kw: Any) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kw) as tar:
        for name, kind, data, attrs in members:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode, info.mtime = kind, len(data), 0o644, 1_700_000_000
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _sparse_seeds() -> list[bytes]:
    old = bytearray(header(b"S", b"sparse", 6))
    for i, (off, n) in enumerate([(0, 2), (8192, 2), (16384, 2)]):
        old[386 + 24 * i : 410 + 24 * i] = octal(off, 12) + octal(n, 12)
    old[483:495] = octal(16386, 12)
    one = [("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.name", "s")]
    return [
        with_checksum(old) + member(b"0", b"", b"aabbcc")[BLOCK:] + END,
        pax([("GNU.sparse.size", "9000"), ("GNU.sparse.map", "0,2,8998,2")])
        + member(b"0", b"GNUSparse/s", b"aabb")
        + END,
        pax([("GNU.sparse.size", "9000"), ("GNU.sparse.offset", "0"), ("GNU.sparse.numbytes", "4")])
        + member(b"0", b"GNUSparse/s", b"aaaa")
        + END,
        pax([*one, ("GNU.sparse.realsize", "9000")])
        + member(b"0", b"GNUSparse/s", b"1\n0\n4\n".ljust(BLOCK, b"\0") + b"aaaa")
        + END,
    ]


def tar_seeds() -> Seeds:
    """Valid archives in every form the reader knows."""
    deep = "d/" * 80 + "file"
    plain = (
        ("dir/", tarfile.DIRTYPE, b"", {"mode": 0o755}),
        ("dir/file", tarfile.REGTYPE, b"hello" * 200, {"uid": 1000}),
        ("dir/link", tarfile.SYMTYPE, b"", {"linkname": "file"}),
        ("dir/hard", tarfile.LNKTYPE, b"", {"linkname": "dir/file"}),
        ("null", tarfile.CHRTYPE, b"", {"devmajor": 1, "devminor": 3}),
        (deep, tarfile.REGTYPE, b"x", {"pax_headers": {"SCHILY.xattr.user.k": "v"}}),
    )
    return Seeds(
        [
            _tar(tarfile.PAX_FORMAT, *plain),
            _tar(tarfile.GNU_FORMAT, *plain[:5], (deep, tarfile.REGTYPE, b"x", {"mtime": -5})),
            _tar(tarfile.USTAR_FORMAT, *plain[:5]),
            _tar(tarfile.PAX_FORMAT, *plain[:2], pax_headers={"uid": "7", "comment": "c"}),
            pax([("LIBARCHIVE.xattr.user.b", "AAEC"), ("atime", "-1.5")])
            + member(b"0", b"f")
            + END,
            *_sparse_seeds(),
        ]
    )


def header_offsets(data: bytes | bytearray) -> list[int]:
    """Where the blocks with a valid header checksum are (headers, most likely)."""
    found = []
    for at in range(0, len(data) - BLOCK + 1, BLOCK):
        block = data[at : at + BLOCK]
        try:
            stored = int(bytes(block[148:156]).strip(b" \0") or b"-1", 8)
        except ValueError:
            continue
        if stored == sum(block[:148]) + 256 + sum(block[156:]):
            found.append(at)
    return found


@st.composite
def _header_field(draw: st.DrawFn, data: bytearray) -> None:
    """Set a numeric field of a header block to a hostile value, checksum kept valid."""
    headers = header_offsets(data)
    if not headers:
        return
    at = draw(st.sampled_from(headers))
    offset, width = draw(st.sampled_from(NUMERIC_FIELDS))
    value = draw(st.sampled_from(HUGE_NUMBERS))
    form = draw(st.sampled_from(["octal", "base256", "negative", "text"]))
    if form == "octal" and value < 8 ** (width - 1):
        raw = octal(value, width)
    elif form == "text":
        raw = draw(st.sampled_from(HOSTILE_TEXT))[:width].ljust(width, b"\0")
    else:
        value = -value if form == "negative" else value
        raw = base256(max(min(value, 256 ** (width - 1) - 1), -(256 ** (width - 1))), width)
    block = bytearray(data[at : at + BLOCK])
    block[offset : offset + width] = raw
    data[at : at + BLOCK] = with_checksum(block) if offset != 148 else bytes(block)


@st.composite
def _extension(draw: st.DrawFn) -> bytes:
    """An extension header to insert: hostile pax records, or one claiming a huge size."""
    kind = draw(st.sampled_from([b"x", b"g", b"L", b"K", b"V", b"S"]))
    if draw(st.booleans()):
        size = draw(st.sampled_from(HUGE_NUMBERS))
        return header(kind, b"meta", size)
    records = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PAX_KEYS),
                st.sampled_from(HOSTILE_TEXT) | st.binary(max_size=20),
            ),
            max_size=6,
        )
    )
    return pax(records, kind if kind in (b"x", b"g") else b"x")


@st.composite
def mutated(draw: st.DrawFn, seeds: Seeds, tar: bool) -> bytes:
    """A seed damaged by one to five mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 5))):
        size = max(len(data), 1)
        op = draw(st.sampled_from(TAR_OPS if tar else BYTE_OPS))
        at = draw(st.integers(0, size - 1))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 0x20, 0x2C, 0x30, 0x39, 0x0A, 0x80, 0xFF]))
        elif op == "cut":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            length = draw(st.integers(0, 2 * BLOCK))
            data[at : at + draw(st.integers(0, length))] = other[start : start + length]
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=64))
        elif op == "field" and tar:
            draw(_header_field(data))
        elif op == "ext" and tar:
            block = draw(st.sampled_from([*header_offsets(data), len(data)]))
            data[block:block] = draw(_extension())
    return bytes(data)


DIGEST = "sha256:" + "5" * 64
_DESCRIPTOR = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST}
_LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST}


def json_seeds() -> Seeds:
    """Valid manifests, indexes, configs and a docker save manifest.json."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {**_DESCRIPTOR, "mediaType": "application/vnd.oci.image.config.v1+json"},
        "layers": [{**_LAYER, "size": 100}, {**_LAYER, "size": 2**40}],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**_DESCRIPTOR, "size": 500, "platform": {"os": "linux", "architecture": arch}}
            for arch in ("amd64", "arm64", "unknown")
        ]
        + [{**_DESCRIPTOR, "size": 1, "platform": {"os": "linux", "architecture": "arm",
                                                   "variant": "v7"}}],
    }  # fmt: skip
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/bin/sh"],
            "Cmd": ["-c", "true"],
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/",
            "User": "1000:1000",
            "Labels": {"a": "b"},
            "ExposedPorts": {"80/tcp": {}},
            "StopSignal": "SIGTERM",
        },
        "rootfs": {"type": "layers", "diff_ids": [DIGEST, DIGEST]},
        "history": [{"created_by": "x", "empty_layer": True}],
    }
    docker = [{"Config": "blobs/sha256/" + "5" * 64, "RepoTags": ["a:b"], "Layers": ["l.tar"]}]
    docs: list[object] = [manifest, index, config, docker, {**index, "mediaType": None}]
    return Seeds(json.dumps(d, indent=2 if d is config else None).encode() for d in docs)


HOSTILE_JSON = [
    "null",
    "true",
    "-1",
    "0.5",
    "1e400",
    "-0",
    "NaN",
    "Infinity",
    "1" * 5000,
    '"' + "x" * 100_000 + '"',
    '"\\ud800"',
    '"\\u0000"',
    "[" * 100_000,
    "[" * 99 + "]" * 99,
    '{"a":' * 5000,
    "[" + "[]," * 100_000 + "[]]",
    "{" + ",".join(f'"{i}":{{}}' for i in range(20_000)) + "}",
    '"sha256:' + "g" * 64 + '"',
    '"application/vnd.docker.distribution.manifest.v1+json"',
    '{"os": ["linux"], "architecture": {}}',
    "[" + ",".join(['{"size": 1, "digest": "sha256:' + "0" * 64 + '"}'] * 2000) + "]",
]


def _paths(doc: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every place in a JSON document a value can be put."""
    found = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*path, i))
    return found


_MARK = "\x00HOSTILE\x00"


@st.composite
def mutated_json(draw: st.DrawFn, seeds: Seeds) -> bytes:
    """A seed with a value replaced by a hostile one (raw JSON text, so that numbers
    and nesting no encoder would write get in), then perhaps damaged byte-wise."""
    seed = draw(st.sampled_from(seeds))
    doc = json.loads(seed)
    path = draw(st.sampled_from(_paths(doc)))
    raw = draw(st.sampled_from(HOSTILE_JSON))
    if not path:
        text = raw
    else:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]  # type: ignore[index]
        parent[path[-1]] = _MARK  # type: ignore[index]
        text = json.dumps(doc).replace(json.dumps(_MARK), raw)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = draw(mutated(Seeds([data]), tar=False))
    return data
