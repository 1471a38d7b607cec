"""The cpio newc writer: exact header bytes, padding, determinism, the reader's round trip,
and the initramfs builder's layout (base tree, modules in order, the spec archive)."""

from __future__ import annotations

import gzip
import io
import stat

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.initramfs import build
from oci2vm.initramfs.cpio import CpioWriter, list_names, members
from oci2vm.initramfs.spec import BootSpec, Mode


def archive(fill: object, mtime: int = 0) -> bytes:
    out = io.BytesIO()
    writer = CpioWriter(out, mtime=mtime)
    fill(writer)  # type: ignore[operator]
    writer.close()
    return out.getvalue()


def test_file_member_bytes_are_the_newc_layout() -> None:
    data = archive(lambda w: w.add_file("a", b"xyz", 0o644), mtime=0x5F5E100)
    fields = b"".join(b"%08X" % v for v in (1, 0o100644, 0, 0, 1, 0x5F5E100, 3, 0, 0, 0, 0, 2, 0))
    member = b"070701" + fields + b"a\0" + b"" + b"xyz\0"  # name ends at 112: no padding
    trailer_fields = b"".join(b"%08X" % v for v in (0, 0, 0, 0, 1, 0x5F5E100, 0, 0, 0, 0, 0, 11, 0))
    trailer = b"070701" + trailer_fields + b"TRAILER!!!\0" + b"\0" * 3  # 121 -> 124
    assert data == member + trailer
    assert len(data) % 4 == 0


def test_names_and_data_are_padded_to_four_bytes() -> None:
    data = archive(lambda w: (w.add_file("ab", b"12345"), w.add_dir("dir")))
    # header 110 + "ab\0" = 113 -> 116; data 5 -> 8
    assert data[116:121] == b"12345" and data[121:124] == b"\0\0\0"
    assert data[124:130] == b"070701"


def test_members_of_every_kind_round_trip_with_sequential_inodes() -> None:
    def fill(w: CpioWriter) -> None:
        w.add_dir("dev")
        w.add_char_device("dev/console", 5, 1)
        w.add_symlink("sh", "busybox")
        w.add_file("bin/x", b"data", 0o755)

    data = archive(fill)
    got = list(members(data))
    assert [(n, stat.S_IFMT(m), d) for n, m, d in got] == [
        ("dev", stat.S_IFDIR, b""),
        ("dev/console", stat.S_IFCHR, b""),
        ("sh", stat.S_IFLNK, b"busybox"),
        ("bin/x", stat.S_IFREG, b"data"),
    ]
    inodes = [int(data[pos + 6 : pos + 14], 16) for pos in _header_offsets(data)]
    assert inodes == [1, 2, 3, 4, 0]
    console = _header_offsets(data)[1]
    assert int(data[console + 6 + 8 * 9 : console + 6 + 8 * 10], 16) == 5  # rdevmajor
    assert int(data[console + 6 + 8 * 10 : console + 6 + 8 * 11], 16) == 1  # rdevminor


def _header_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 0
    while pos < len(data) and data[pos : pos + 6] == b"070701":
        offsets.append(pos)
        size, name_size = int(data[pos + 54 : pos + 62], 16), int(data[pos + 94 : pos + 102], 16)
        pos += 110 + name_size
        pos += -pos % 4 + size
        pos += -pos % 4
    return offsets


def test_concatenated_archives_are_listed_through_padding() -> None:
    first = archive(lambda w: w.add_file("a", b"1"))
    second = archive(lambda w: w.add_file("b", b"2"))
    assert list_names(first + b"\0" * 8 + second) == ["a", "b"]


@pytest.mark.parametrize("name", ["", "/", "TRAILER!!!", "a\0b"])
def test_unusable_names_are_refused(name: str) -> None:
    with pytest.raises(Oci2vmError, match="unusable member name"):
        archive(lambda w: w.add_file(name, b""))


def test_a_name_added_twice_is_refused() -> None:
    with pytest.raises(Oci2vmError, match="added twice"):
        archive(lambda w: (w.add_file("a", b""), w.add_file("/a/", b"")))


def test_truncated_archive_is_reported() -> None:
    data = archive(lambda w: w.add_file("a", b"x" * 100))
    with pytest.raises(Oci2vmError, match="runs past the end"):
        list_names(data[:150])


# -- the builder ---------------------------------------------------------------------------

MODULES = [("kernel/b/two.ko", b"two"), ("kernel/a/one.ko", b"one")]


def unpacked(initramfs: bytes) -> dict[str, tuple[int, bytes]]:
    return {name: (mode, data) for name, mode, data in members(gzip.decompress(initramfs))}


def test_initramfs_holds_busybox_init_modules_in_order_and_spec() -> None:
    spec = BootSpec(mode=Mode.APP, argv=("true",))
    tree = unpacked(build.build_initramfs(b"BB", "6.1.0-9", MODULES, spec, mtime=7))
    assert tree["bin/busybox"] == (0o100755, b"BB")
    assert tree["bin/sh"] == (0o120777, b"busybox")
    assert tree["init"][1].startswith(b"#!/bin/sh") and tree["init"][0] == 0o100755
    assert tree["dev/console"][0] == stat.S_IFCHR | 0o600
    growroot = tree["etc/oci2vm/growroot.sh"]  # sourced by init: it grows the root
    assert growroot[0] == 0o100644 and b"grow_root_partition() {" in growroot[1]
    assert (
        b'. "$GROWROOT"' in tree["init"][1]
        and b"GROWROOT=/etc/oci2vm/growroot.sh" in tree["init"][1]
    )
    assert tree["lib/modules/6.1.0-9/kernel/b/two.ko"][1] == b"two"
    assert tree["etc/oci2vm/modules"][1] == (
        b"/lib/modules/6.1.0-9/kernel/b/two.ko\n/lib/modules/6.1.0-9/kernel/a/one.ko\n"
    )
    assert b"SPEC_MODE='app'" in tree["etc/oci2vm/spec"][1]
    assert "etc/oci2vm/spec" not in unpacked(build.build_initramfs(b"BB", "v", [], None, mtime=0))


def test_initramfs_bytes_are_deterministic_and_four_byte_aligned() -> None:
    one = build.build_initramfs(b"BB", "v", MODULES, None, mtime=1)
    assert one == build.build_initramfs(b"BB", "v", MODULES, None, mtime=1)
    assert one != build.build_initramfs(b"BB", "v", MODULES, None, mtime=2)
    assert len(one) % 4 == 0


@pytest.mark.parametrize("relpath", ["/abs.ko", "a/../b.ko", "a//b.ko", "a\nb.ko"])
def test_malformed_module_paths_are_refused(relpath: str) -> None:
    with pytest.raises(Oci2vmError, match="malformed module path"):
        build.build_initramfs(b"BB", "v", [(relpath, b"")], None, mtime=0)


def test_spec_archive_holds_only_the_spec() -> None:
    spec = BootSpec(mode=Mode.APP, argv=("true",))
    assert list_names(build.spec_archive(spec)) == ["etc", "etc/oci2vm", "etc/oci2vm/spec"]


def test_every_applet_the_scripts_call_is_linked() -> None:
    import re
    from importlib import resources

    package = resources.files("oci2vm.initramfs")
    scripts = ("init.sh", "udhcpc.sh", "growroot.sh")
    text = "".join(package.joinpath(script).read_text() for script in scripts)
    called = {"findfs", "insmod", "switch_root", "udhcpc", "setsid", "ifconfig", "route", "awk"}
    called |= {"dd", "od", "crc32", "blockdev", "chroot", "head", "tail", "grep", "cp"}
    for applet in called:
        assert re.search(rf"\b{applet}\b", text), applet
    assert called <= set(build.APPLETS)
