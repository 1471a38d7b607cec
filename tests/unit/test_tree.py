"""Flattening: each case of the OCI layer changeset rules, on layers built in the test."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore
from oci2vm.layers import decompress
from oci2vm.layers.flatten import flatten
from oci2vm.sources import Fetch, resolve
from oci2vm.tree.model import Inode, Kind, Tree, link_counts, lookup, walk
from support.deadline import within
from support.flattened import flatten_layers
from support.layouts import (
    Member,
    directory,
    file,
    hardlink,
    layer_tar,
    opaque,
    symlink,
    whiteout,
    write_layout,
)


def build(
    tmp_path: Path, *layers: list[Member], compression: str = "gzip"
) -> tuple[Tree, dict[Inode, bytes]]:
    return flatten_layers(tmp_path, *layers, compression=compression)


def paths(tree: Tree) -> set[str]:
    return {p for p, _ in walk(tree.root)}


def content(tree: Tree, data: dict[Inode, bytes], path: str) -> bytes:
    inode = lookup(tree.root, path)
    assert inode is not None, path
    return data.get(inode, b"")


def test_upper_layer_file_shadows_lower(tmp_path: Path) -> None:
    tree, data = build(
        tmp_path,
        [directory("etc"), file("etc/motd", b"old")],
        [file("etc/motd", b"new", mode=0o600)],
    )
    assert content(tree, data, "/etc/motd") == b"new"
    inode = lookup(tree.root, "/etc/motd")
    assert inode is not None and inode.mode == 0o600
    assert len(data) == 1  # the shadowed file's data was never delivered


def test_whiteout_hides_lower_file_and_directory(tmp_path: Path) -> None:
    tree, _ = build(
        tmp_path,
        [
            directory("a"),
            file("a/f", b"1"),
            directory("a/sub"),
            file("a/sub/g", b"2"),
            file("keep"),
        ],
        [whiteout("a/f"), whiteout("a/sub")],
    )
    assert paths(tree) == {"/", "/a", "/keep"}


def test_opaque_whiteout_hides_lower_dir_but_keeps_own_entries(tmp_path: Path) -> None:
    tree, data = build(
        tmp_path,
        [directory("d"), file("d/old", b"o"), directory("d/deep"), file("d/deep/x", b"x")],
        [directory("d", mode=0o700), opaque("d"), file("d/new", b"n")],
    )
    assert paths(tree) == {"/", "/d", "/d/new"}
    d = lookup(tree.root, "/d")
    assert d is not None and d.mode == 0o700
    assert content(tree, data, "/d/new") == b"n"


def test_whiteout_applies_only_below_its_own_layer(tmp_path: Path) -> None:
    tree, data = build(
        tmp_path,
        [file("x", b"lower")],
        [whiteout("x")],
        [file("x", b"upper")],
    )
    assert content(tree, data, "/x") == b"upper"


def test_file_replaced_by_directory(tmp_path: Path) -> None:
    tree, _ = build(tmp_path, [file("p", b"file")], [directory("p"), file("p/child", b"c")])
    p = lookup(tree.root, "/p")
    assert p is not None and p.kind is Kind.DIR
    assert paths(tree) == {"/", "/p", "/p/child"}


def test_directory_replaced_by_file_drops_lower_children(tmp_path: Path) -> None:
    tree, data = build(
        tmp_path,
        [directory("p"), file("p/child", b"c"), directory("p/sub"), file("p/sub/x")],
        [file("p", b"now a file")],
    )
    assert paths(tree) == {"/", "/p"}
    assert content(tree, data, "/p") == b"now a file"


def test_lower_directories_merge_with_upper(tmp_path: Path) -> None:
    tree, _ = build(
        tmp_path,
        [directory("usr", mode=0o700), file("usr/a")],
        [directory("usr", mode=0o755, uid=5), file("usr/b")],
    )
    usr = lookup(tree.root, "/usr")
    assert usr is not None and (usr.mode, usr.uid) == (0o755, 5)
    assert paths(tree) == {"/", "/usr", "/usr/a", "/usr/b"}


def test_hardlink_within_layer_shares_one_inode(tmp_path: Path) -> None:
    tree, data = build(tmp_path, [file("a", b"data"), hardlink("b", "a"), hardlink("c", "./a")])
    a, b, c = (lookup(tree.root, p) for p in ("/a", "/b", "/c"))
    assert a == b == c
    assert link_counts(tree.root)[a] == 3
    assert data[a] == b"data" and len(data) == 1


def test_hardlink_to_lower_layer_file(tmp_path: Path) -> None:
    tree, data = build(tmp_path, [file("a", b"lower data")], [hardlink("b", "a")])
    a, b = lookup(tree.root, "/a"), lookup(tree.root, "/b")
    assert a == b and a is not None
    assert data[a] == b"lower data"


def test_hardlink_to_lower_file_that_upper_layer_deleted(tmp_path: Path) -> None:
    tree, data = build(
        tmp_path, [file("a", b"kept by link")], [hardlink("b", "a")], [whiteout("a")]
    )
    assert paths(tree) == {"/", "/b"}
    assert content(tree, data, "/b") == b"kept by link"


def test_hardlink_whose_same_layer_target_is_shadowed_reads_layer_again(tmp_path: Path) -> None:
    tree, data = build(
        tmp_path,
        [file("perl", b"interpreter"), hardlink("perl5", "perl")],
        [file("perl", b"replaced")],
    )
    assert content(tree, data, "/perl") == b"replaced"
    assert content(tree, data, "/perl5") == b"interpreter"


def test_upper_hardlink_path_stays_claimed_after_its_lower_target_arrives(
    tmp_path: Path,
) -> None:
    """/b links down to the lower layer's /a; that layer's own /b (after /a) is shadowed
    by the link, though the inode now at /b was made by the lower layer."""
    tree, data = build(
        tmp_path,
        [file("a", b"target"), file("b", b"lower b"), hardlink("c", "b")],
        [hardlink("b", "a")],
    )
    a, b, c = (lookup(tree.root, p) for p in ("/a", "/b", "/c"))
    assert a == b and a is not None and c is not None and c != a
    assert data[a] == b"target"
    assert data[c] == b"lower b"  # the lower /c links to the lower layer's own /b


def test_hardlink_to_a_same_layer_file_hidden_by_an_upper_layer(tmp_path: Path) -> None:
    tree, data = build(
        tmp_path,
        [directory("d"), file("d/x", b"hidden x"), hardlink("y", "d/x")],
        [whiteout("d")],
    )
    assert paths(tree) == {"/", "/y"}
    assert content(tree, data, "/y") == b"hidden x"


def test_hardlink_to_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        Oci2vmError, match=r"hardlink '/b' points to '/missing', which does not exist"
    ):
        build(tmp_path, [file("a")], [hardlink("b", "missing")])


def test_hardlink_to_file_deleted_between_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match=r"hardlink '/b' points to '/a', which layer 2"):
        build(tmp_path, [file("a", b"x")], [whiteout("a")], [hardlink("b", "a")])


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "./../etc/passwd"])
def test_entry_escaping_root_is_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(Oci2vmError, match=r"layer 1 .*escapes the image root"):
        build(tmp_path, [file(name, b"x")])


def test_a_path_longer_than_path_max_is_rejected_at_once(tmp_path: Path) -> None:
    """A few hundred bytes of gzip can name a path 200,000 directories deep: refused by
    its length (as no runtime could unpack it) before any of its directories is made.
    4095 bytes, what Linux allows, still build; "./" and ".." count as what they leave."""
    deepest = "d/" * 2046 + "ff"  # /d/.../ff: 4095 bytes
    tree, _ = build(tmp_path, [file("./" * 3000 + deepest, b"x")])
    assert len(tree.diff_ids) == 1
    with within(5):
        with pytest.raises(Oci2vmError, match=r"^layer 1 .*path of 4096 bytes; Linux's PATH_MAX"):
            build(tmp_path, [file(deepest + "g", b"x")])
        with pytest.raises(Oci2vmError, match=r"path of 400002 bytes"):
            build(tmp_path, [file("d/" * 200_000 + "f", b"x")])


def test_hardlink_target_escaping_root_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(Oci2vmError, match="escapes the image root"):
        build(tmp_path, [file("a"), hardlink("b", "../../a")])


def test_metadata_is_exact(tmp_path: Path) -> None:
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12
    tree, _ = build(
        tmp_path,
        [
            file(
                "f",
                b"x",
                mode=0o4755,
                uid=100000,
                gid=70000,
                pax={
                    "mtime": "1700000000.123456789",
                    "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
                    "SCHILY.xattr.user.comment": "café",
                },
            ),
            file("old", pax={"mtime": "-86400.5"}),
            file("future", pax={"mtime": "4102444800.000000001"}),
            Member(_dev("dev/null", tarfile.CHRTYPE, 1, 3)),
            Member(_dev("dev/sda", tarfile.BLKTYPE, 8, 0)),
            Member(_dev("fifo", tarfile.FIFOTYPE, 0, 0)),
            symlink("link", "x" * 300),
            directory("tmp", mode=0o1777),
        ],
    )
    f = lookup(tree.root, "/f")
    assert f is not None
    assert (f.mode, f.uid, f.gid, f.mtime_ns) == (0o4755, 100000, 70000, 1_700_000_000_123_456_789)
    assert f.xattrs == {"security.capability": cap, "user.comment": "café".encode()}
    old = lookup(tree.root, "/old")
    assert old is not None and old.mtime_ns == -86_400_500_000_000
    future = lookup(tree.root, "/future")
    assert future is not None and future.mtime_ns == 4_102_444_800_000_000_001
    null = lookup(tree.root, "/dev/null")
    assert null is not None and (null.kind, null.rdev_major, null.rdev_minor) == (Kind.CHAR, 1, 3)
    sda = lookup(tree.root, "/dev/sda")
    assert sda is not None and (sda.kind, sda.rdev_major, sda.rdev_minor) == (Kind.BLOCK, 8, 0)
    fifo = lookup(tree.root, "/fifo")
    assert fifo is not None and fifo.kind is Kind.FIFO
    link = lookup(tree.root, "/link")
    assert link is not None and link.target == b"x" * 300 and link.size == 300
    tmp = lookup(tree.root, "/tmp")
    assert tmp is not None and tmp.mode == 0o1777


def _dev(name: str, kind: bytes, major: int, minor: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = 0o666
    ti.devmajor, ti.devminor = major, minor
    return ti


def test_utf8_and_long_names(tmp_path: Path) -> None:
    long = "d/" + "x" * 200 + "/" + "y" * 120
    tree, data = build(tmp_path, [file("café/日本語", b"u"), file(long, b"long")])
    assert content(tree, data, "/café/日本語") == b"u"
    assert content(tree, data, "/" + long) == b"long"


def test_gnu_sparse_1_0_file_keeps_its_holes(tmp_path: Path) -> None:
    regions = [(4096, 5), (1 << 20, 3)]
    stored = b"hello" + b"end"
    tree, data = build(tmp_path, [_sparse_member("sparse", regions, stored, (1 << 20) + 4096)])
    inode = lookup(tree.root, "/sparse")
    assert inode is not None and inode.data is not None
    assert inode.size == (1 << 20) + 4096
    assert inode.data.regions == tuple(regions)
    assert data[inode] == stored


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_each_compression_is_read_and_diff_ids_verified(tmp_path: Path, compression: str) -> None:
    tree, data = build(tmp_path, [file("a", b"A" * 100_000)], compression=compression)
    assert content(tree, data, "/a") == b"A" * 100_000
    assert tree.diff_ids[0].startswith("sha256:")


def test_tampered_blob_is_a_digest_mismatch(tmp_path: Path) -> None:
    built = write_layout(tmp_path / "img", [[file("a", b"A")]])
    blob = tmp_path / "img/blobs/sha256" / built.layer_digests[0].split(":")[1]
    raw = bytearray(blob.read_bytes())
    raw[-9] ^= 0xFF  # inside the gzip trailer's CRC: still the same size
    blob.write_bytes(bytes(raw))
    image = resolve(f"oci:{tmp_path / 'img'}", Fetch())
    with pytest.raises(Oci2vmError, match="digest mismatch"):
        flatten(image)


def test_truncated_gzip_layer_is_reported(tmp_path: Path) -> None:
    raw = layer_tar([file("a", bytes(range(256)) * 4000)])
    truncated = gzip.compress(raw)[:-100]
    assert truncated
    with pytest.raises(Oci2vmError, match=r"truncated gzip stream"):
        _flatten_raw_blob(tmp_path, truncated)


def test_diff_id_mismatch_is_reported(tmp_path: Path) -> None:
    built = write_layout(tmp_path / "img", [[file("a", b"A")]], compression="none")
    # Same layer bytes, but the config claims another diff_id: rewrite the config.
    import json

    cfg_path = tmp_path / "img/blobs/sha256" / built.config_digest.split(":")[1]
    cfg = json.loads(cfg_path.read_bytes())
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    _rewrite_config(tmp_path / "img", built, json.dumps(cfg).encode())
    image = resolve(f"oci:{tmp_path / 'img'}", Fetch())
    with pytest.raises(Oci2vmError, match=r"diff_id.*digest mismatch"):
        flatten(image)


def test_verified_diff_ids_are_remembered_and_not_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = write_layout(tmp_path / "img", [[file("a", b"A" * 5000)], [file("b", b"B")]])
    store = BlobStore(tmp_path / "cache")
    image = resolve(f"oci:{tmp_path / 'img'}", Fetch())
    first = flatten(image, store=store)
    for blob, diff_id in zip(built.layer_digests, first.diff_ids, strict=True):
        assert store.uncompressed_digest(blob) == diff_id
    hashers: list[object] = []
    real = decompress._stream_hasher

    def counting() -> object:
        hashers.append(real())
        return hashers[-1]

    monkeypatch.setattr(decompress, "_stream_hasher", counting)
    again = flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()), store=store)
    assert again.diff_ids == first.diff_ids
    assert hashers == []  # both layers were known
    flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()))  # without the store: hashed
    assert len(hashers) == 2


def test_a_remembered_diff_id_does_not_excuse_a_config_that_names_another(
    tmp_path: Path,
) -> None:
    import json

    built = write_layout(tmp_path / "img", [[file("a", b"A")]], compression="none")
    store = BlobStore(tmp_path / "cache")
    flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()), store=store)
    cfg_path = tmp_path / "img/blobs/sha256" / built.config_digest.split(":")[1]
    cfg = json.loads(cfg_path.read_bytes())
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    _rewrite_config(tmp_path / "img", built, json.dumps(cfg).encode())
    with pytest.raises(Oci2vmError, match=r"diff_id.*digest mismatch"):
        flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()), store=store)


def test_a_tampered_blob_is_refused_even_when_its_diff_id_is_remembered(tmp_path: Path) -> None:
    built = write_layout(tmp_path / "img", [[file("a", b"A")]])
    store = BlobStore(tmp_path / "cache")
    flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()), store=store)
    blob = tmp_path / "img/blobs/sha256" / built.layer_digests[0].split(":")[1]
    raw = bytearray(blob.read_bytes())
    raw[-9] ^= 0xFF
    blob.write_bytes(bytes(raw))
    with pytest.raises(Oci2vmError, match="digest mismatch"):
        flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()), store=store)


def test_an_unwritable_cache_only_costs_the_memo(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", [[file("a", b"A")]])
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    tree = flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()), store=BlobStore(tmp_path / "cache"))
    assert tree.diff_ids[0].startswith("sha256:")


def _rewrite_config(path: Path, built: object, cfg: bytes) -> None:
    import hashlib
    import json

    blobs = path / "blobs/sha256"
    digest = hashlib.sha256(cfg).hexdigest()
    (blobs / digest).write_bytes(cfg)
    index = json.loads((path / "index.json").read_text())
    man_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((blobs / man_digest).read_bytes())
    manifest["config"]["digest"] = "sha256:" + digest
    manifest["config"]["size"] = len(cfg)
    man = json.dumps(manifest).encode()
    new = hashlib.sha256(man).hexdigest()
    (blobs / new).write_bytes(man)
    index["manifests"][0]["digest"] = "sha256:" + new
    index["manifests"][0]["size"] = len(man)
    (path / "index.json").write_text(json.dumps(index))


def _flatten_raw_blob(tmp_path: Path, blob: bytes) -> Tree:
    # A rootfs tarball carries no digest, so only the stream itself can be wrong.
    p = tmp_path / "rootfs.tar.gz"
    p.write_bytes(blob)
    return flatten(resolve(f"tar:{p}", Fetch()))


def test_rootfs_tarball_digest_is_computed(tmp_path: Path) -> None:
    raw = layer_tar([file("a", b"A")])
    tree = _flatten_raw_blob(tmp_path, gzip.compress(raw, mtime=0))
    import hashlib

    assert tree.diff_ids == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    assert paths(tree) == {"/", "/a"}


def test_small_etc_files_are_captured(tmp_path: Path) -> None:
    tree, _ = build(
        tmp_path,
        [
            directory("etc"),
            file("etc/os-release", b"ID=debian\n"),
            file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        ],
        [hardlink("etc/os-release.link", "etc/os-release")],
    )
    assert tree.read("/etc/os-release") == b"ID=debian\n"
    assert tree.read("/etc/os-release.link") == b"ID=debian\n"  # one inode, one copy
    passwd = tree.read("/etc/passwd")
    assert passwd is not None and passwd.startswith(b"root:")
    assert len(tree.captured) == 2


def _sparse_member(name: str, regions: list[tuple[int, int]], stored: bytes, size: int) -> Member:
    """A GNU 1.0 sparse file: its map precedes the data inside the member."""
    sparse_map = f"{len(regions)}\n" + "".join(f"{o}\n{n}\n" for o, n in regions)
    map_block = sparse_map.encode().ljust(512, b"\0")
    ti = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    ti.size = len(map_block) + len(stored)
    ti.mode = 0o644
    ti.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(size),
    }
    return Member(ti, map_block + stored)


def test_a_sparse_etc_file_is_captured_as_a_reader_reads_it(tmp_path: Path) -> None:
    """Its one region lies after a hole: what preparation reads is the zeros, then the
    bytes; a sparse file too long to hold in memory is not captured at all."""
    line = b"root:x:0:0::/root:/bin/sh\n"
    huge = 3 << 30
    tree, _ = build(
        tmp_path,
        [
            directory("etc"),
            _sparse_member("etc/passwd", [(4096, len(line))], line, 4096 + len(line)),
            _sparse_member("etc/group", [(0, 5)], b"root:", huge),
        ],
    )
    assert tree.read("/etc/passwd") == bytes(4096) + line
    group = lookup(tree.root, "/etc/group")
    assert group is not None and group.size == huge and group not in tree.captured


def test_gil_handoffs_are_prompter_while_streaming_and_restored_by_the_last_user() -> None:
    import sys

    before = sys.getswitchinterval()
    with decompress.prompt_handoffs():
        inside = sys.getswitchinterval()
        assert inside <= decompress.SWITCH_INTERVAL
        with decompress.prompt_handoffs():
            pass
        assert sys.getswitchinterval() == inside  # the inner user does not restore it
    assert sys.getswitchinterval() == before


class _Raw:
    """A blob reader over bytes, in small reads (so members and padding straddle them)."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self._data, self._at, self._step = data, 0, step

    def read(self, size: int = -1) -> bytes:
        n = min(size if size >= 0 else len(self._data), self._step)
        piece = self._data[self._at : self._at + n]
        self._at += len(piece)
        return piece

    def close(self) -> None:
        pass


def _inflate(blob: bytes, step: int = 1000) -> list[bytes]:
    stream = decompress.decompressed(_Raw(blob, step), hash_stream=False)
    with stream:
        chunks = []
        while piece := stream.view(1 << 30):
            chunks.append(bytes(piece))
        return chunks


def test_gzip_members_back_to_back_and_zero_padding_inflate_as_one_stream() -> None:
    first, second = bytes(range(256)) * 300, b"second member " * 5000
    blob = gzip.compress(first) + gzip.compress(second) + bytes(3000)
    assert b"".join(_inflate(blob)) == first + second
    assert b"".join(_inflate(blob, step=7)) == first + second


def test_gzip_output_comes_in_bounded_pieces() -> None:
    """20 MB of zeros compress to a few KiB: the inflater must not hand it out at once."""
    chunks = _inflate(gzip.compress(bytes(20 << 20)), step=1 << 20)
    assert sum(map(len, chunks)) == 20 << 20
    assert max(map(len, chunks)) <= decompress.OUT_CHUNK


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (gzip.compress(b"x" * 5000, mtime=0)[:-3], "truncated gzip"),
        (
            gzip.compress(b"x" * 5000, mtime=0) + bytes(10) + b"garbage after padding",
            "bytes after the end of its gzip stream",
        ),
        (
            gzip.compress(b"x" * 5000, mtime=0)[:-8] + b"\0\0\0\0" + gzip.compress(b"x")[-4:],
            "corrupt",
        ),
    ],
    ids=["truncated", "garbage-after-padding", "bad-crc"],  # parallel workers collect alike
)
def test_damaged_gzip_is_a_one_line_error(blob: bytes, message: str) -> None:
    with pytest.raises(Oci2vmError, match=message):
        _inflate(blob)


def test_an_xz_layer_is_refused_and_its_reader_closed(tmp_path: Path) -> None:
    """The blob's reader (and the thread hashing a large blob) goes with the refusal."""
    import os
    import threading
    import time

    write_layout(tmp_path / "img", [[file("noise", os.urandom(2 << 20))]], compression="xz")
    before = {t for t in threading.enumerate() if t.name == "blob-hash"}
    with pytest.raises(Oci2vmError, match=r"unsupported layer compression \(xz") as info:
        flatten(resolve(f"oci:{tmp_path / 'img'}", Fetch()))
    held = info.value.__traceback__  # its frames keep the reader from the collector
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if not {t for t in threading.enumerate() if t.name == "blob-hash"} - before:
            break
        time.sleep(0.02)
    assert not {t for t in threading.enumerate() if t.name == "blob-hash"} - before
    assert held is not None
