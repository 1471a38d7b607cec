"""Image A, busybox: the case table (every flattening case the image covers) and the recipe
that writes its four layers entry by entry around Debian's static busybox binary."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path

from .assemble import CREATED, PATH_ENV, assemble, write_rootfs
from .cache import FileLock
from .commands import run
from .compress import MT_GZIP, MT_TAR, MT_ZSTD, Layer, compress_layer
from .flatten import flatten
from .tarentry import EPOCH, MIB, NS, TarEntry, resolve_links
from .tarwriter import write_tar

# Bump a version whenever its recipe changes: the cache is keyed by it, so the fixture rebuilds.
BUSYBOX_VERSION = 1

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


ACL_DIR_ACCESS = posix_acl(
    (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID), (ACL_USER, 7, 1000),
    (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID), (ACL_MASK, 7, ACL_UNDEFINED_ID),
    (ACL_OTHER, 0, ACL_UNDEFINED_ID),
)  # fmt: skip
ACL_DIR_DEFAULT = posix_acl(
    (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID), (ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
    (ACL_GROUP, 7, 1000), (ACL_MASK, 7, ACL_UNDEFINED_ID), (ACL_OTHER, 5, ACL_UNDEFINED_ID),
)  # fmt: skip
ACL_FILE_ACCESS = posix_acl(
    (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID), (ACL_USER, 4, 1000),
    (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID), (ACL_MASK, 4, ACL_UNDEFINED_ID),
    (ACL_OTHER, 0, ACL_UNDEFINED_ID),
)  # fmt: skip
CAP_NET_RAW_EP = vfs_cap_v2(1 << 13, effective=True)

USTAR_PATH = next(c[0] for c in CASES if c[0].startswith("names/ustar/"))
DEEP_PATH = next(c[0] for c in CASES if c[0].startswith("names/deep/"))

# Region lengths are whole 512-byte blocks: GNU tar reads each region from a block
# boundary while Go and Python read them back to back; aligned, both agree.
SPARSE_REGIONS = (
    (1 * MIB, pseudo_random("sparse-1", 4096)),
    (32 * MIB + 512, pseudo_random("sparse-2", 3072)),
    (48 * MIB, pseudo_random("sparse-3", 8192)),
)


def _d(path: str, mode: int = 0o755, **kw: object) -> TarEntry:
    return TarEntry(path, "dir", mode=mode, **kw)  # type: ignore[arg-type]


def _f(path: str, data: bytes | str = b"", mode: int = 0o644, **kw: object) -> TarEntry:
    raw = data.encode() if isinstance(data, str) else data
    return TarEntry(path, "file", mode=mode, data=raw, **kw)  # type: ignore[arg-type]


def _l(path: str, target: str) -> TarEntry:
    return TarEntry(path, "symlink", mode=0o777, linkname=target)


def _wh(path: str) -> TarEntry:
    return TarEntry(path, "file", mode=0o600)


def _layer1_system(busybox: bytes) -> list[TarEntry]:
    """Layer 1, /app to /home: busybox and its links, devices, /etc, file sizes, big ids."""
    return [
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
    ]


def _layer1_names() -> list[TarEntry]:
    """Layer 1, /links and /names: symlink target and path lengths, UTF-8, USTAR prefix."""
    return [
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
        *(_d(USTAR_PATH.rsplit("/", k)[0]) for k in (4, 3, 2, 1)),
        _f(USTAR_PATH, "USTAR prefix split\n"),
        *(_d(DEEP_PATH.rsplit("/", k)[0]) for k in (6, 5, 4, 3, 2, 1)),
        _f(DEEP_PATH, "deep path > 255 bytes\n"),
    ]


def _layer1_lower_halves() -> list[TarEntry]:
    """Layer 1, /opt to /run: what layer 2 whites out, hides or replaces; a FIFO."""
    return [
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
    ]


def _layer1_metadata() -> list[TarEntry]:
    """Layer 1, /srv to /usr: ACLs, setgid, times, sticky /tmp, capabilities, setuid."""
    return [
        _d("srv"),
        _d(
            "srv/acl-dir",
            0o770,
            xattrs={
                "system.posix_acl_access": ACL_DIR_ACCESS,
                "system.posix_acl_default": ACL_DIR_DEFAULT,
            },
        ),
        _f("srv/acl-file", "ACL'd\n", 0o640, xattrs={"system.posix_acl_access": ACL_FILE_ACCESS}),
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
            xattrs={"security.capability": CAP_NET_RAW_EP},
        ),
        _f("usr/bin/suid", "#!/bin/sh\necho suid\n", 0o4755),
    ]


def _layer2() -> list[TarEntry]:
    """Layer 2: whiteouts, an opaque directory, replacements, 3000 files, a cross-layer link."""
    return [
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


def _layer3() -> list[TarEntry]:
    """Layer 3: a hardlink pair, same-layer whiteout + recreate, non-UTF-8 name, sparse file."""
    return [
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
        TarEntry("sparse/file", "file", size=64 * MIB, sparse=SPARSE_REGIONS),
    ]  # fmt: skip


def busybox_layers(busybox: bytes) -> list[tuple[str, str, list[TarEntry]]]:
    """(media type, created_by, entries) for each layer, bottom first."""
    base = [
        *_layer1_system(busybox),
        *_layer1_names(),
        *_layer1_lower_halves(),
        *_layer1_metadata(),
    ]
    return [
        (MT_GZIP, "fixture layer 1 (gzip): busybox, /etc and every lower half", base),
        (MT_ZSTD, "fixture layer 2 (zstd): whiteouts, opaque, replacements, 3000 files", _layer2()),
        (MT_TAR, "fixture layer 3 (plain tar): same-layer whiteout, sparse, non-UTF-8", _layer3()),
        (MT_GZIP, "fixture layer 4 (gzip): an empty tar, as metadata-only steps produce", []),
    ]


BUSYBOX_CONFIG: dict[str, object] = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo hello"],
    "Env": [PATH_ENV, "FOO=bar"],
    "WorkingDir": "/app",
    "User": "1000:1000",
}
# The Dockerfile steps after the last layer: history entries without a layer.
BUSYBOX_EMPTY_STEPS = ('ENV FOO=bar', 'WORKDIR /app', 'USER 1000:1000',
                       'ENTRYPOINT ["/bin/sh" "-c"]', 'CMD ["echo hello"]')  # fmt: skip


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
        for step in BUSYBOX_EMPTY_STEPS
    ]
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


def one_layer_image(
    out: Path,
    name: str,
    entries: list[TarEntry],
    config: dict[str, object],
    history: list[dict[str, object]],
    *,
    oci_archive: bool,
) -> tuple[dict[str, object], int]:
    """An image of one gzip layer holding `entries` (the busybox-app and busybox-init
    fixtures), with its rootfs.tar; its facts and the rootfs entry count."""
    (out / "layers").mkdir()
    write_tar(out / "layers/layer1.tar", entries, type_bits=True)
    layer = compress_layer(out / "layers/layer1.tar", MT_GZIP, f"COPY rootfs/ / # {name}")
    facts = assemble(out, f"oci2vm-fixtures/{name}", [layer], config, history,
                     oci_archive=oci_archive)  # fmt: skip
    entry_count = write_rootfs(out, entries)
    shutil.rmtree(out / "layers")
    return facts, entry_count
