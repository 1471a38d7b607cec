"""Reading the names inside an image's initrd, as the kernel unpacks it, and an installed
kernel's modules.dep: what tells whether the image's initrd can mount oci2vm's root and
what oci2vm's own needs of the kernel's modules."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest
import zstandard

from oci2vm.errors import Oci2vmError
from oci2vm.initramfs.scan import CorruptInitrdError, UnknownFormatError, initrd_names
from oci2vm.kernel.moddep import builtin_names, dep_closure, parse_modules_dep
from support.initrds import cpio_of


def archive(*names: str, size: int = 3) -> bytes:
    return cpio_of(*names, data=b"z" * size)


COMPRESSORS = {
    "gzip": gzip.compress,
    "xz": lambda d: lzma.compress(d, check=lzma.CHECK_CRC32),
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    "bzip2": bz2.compress,
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_an_early_cpio_then_a_compressed_one_as_debian_and_dracut_write_them(kind: str) -> None:
    early = archive("kernel/x86/microcode/GenuineIntel.bin")
    main = archive("init", "usr/lib/modules/6.1/kernel/fs/ext4/ext4.ko", size=3 << 20)
    data = early + COMPRESSORS[kind](main + archive("etc/late"))
    assert initrd_names(data) == [
        "kernel/x86/microcode/GenuineIntel.bin", "init",
        "usr/lib/modules/6.1/kernel/fs/ext4/ext4.ko", "etc/late",
    ]  # fmt: skip


def test_padding_between_archives_and_two_compressed_ones() -> None:
    data = gzip.compress(archive("a")) + b"\0" * 7 + gzip.compress(archive("b"))
    assert initrd_names(data) == ["a", "b"]


def test_unreadable_and_broken_initrds_are_errors_not_crashes() -> None:
    with pytest.raises(UnknownFormatError):
        initrd_names(b"\x02\x21\x4c\x18" + b"lz4 legacy" * 10)
    with pytest.raises(Oci2vmError):
        initrd_names(gzip.compress(archive("a"))[:-12])
    with pytest.raises(Oci2vmError):
        initrd_names(archive("a")[:-20])
    with pytest.raises(Oci2vmError):
        initrd_names(gzip.compress(b"not a cpio archive at all" * 10))


@pytest.mark.parametrize("cut", [-1, -200, 130])  # in the trailer, a module, a header
@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_a_cpio_cut_short_inside_a_sound_compressed_stream_is_damaged(cut: int, kind: str) -> None:
    whole = archive("init", "usr/lib/modules/6.1/kernel/fs/ext4/ext4.ko", size=1000)
    with pytest.raises(CorruptInitrdError, match=r"^initrd: a cpio archive ends inside"):
        initrd_names(COMPRESSORS[kind](whole[:cut]))


def test_modules_dep_closure_loads_what_is_needed_first_and_skips_builtins() -> None:
    deps = parse_modules_dep(
        "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz\n"
        "kernel/fs/jbd2/jbd2.ko.xz:\n"
        "kernel/fs/mbcache.ko.xz:\n"
        "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz\n"
        "kernel/drivers/virtio/virtio_ring.ko.xz:\n"
        "kernel/drivers/net/xen-netfront.ko.xz:\n"
    )
    builtin = builtin_names("kernel/drivers/virtio/virtio_ring.ko\n")
    assert dep_closure(deps, builtin, ["ext4", "virtio_blk", "xen_netfront", "absent"]) == [
        "kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/mbcache.ko.xz", "kernel/fs/ext4/ext4.ko.xz",
        "kernel/drivers/virtio/virtio_ring.ko.xz", "kernel/drivers/block/virtio_blk.ko.xz",
        "kernel/drivers/net/xen-netfront.ko.xz",
    ]  # fmt: skip
    assert dep_closure(deps, builtin_names("kernel/fs/ext4/ext4.ko\n"), ["ext4"]) == []


def test_a_dependency_chain_longer_than_the_recursion_limit_and_a_cycle() -> None:
    """An image's modules.dep is its own: a chain of 5000 modules and a cycle (which
    depmod never writes) are taken as they come, each module after what it needs."""
    chain = "".join(f"m{n}.ko: m{n + 1}.ko\n" for n in range(5000)) + "m5000.ko:\n"
    order = dep_closure(parse_modules_dep(chain), frozenset(), ["m0"])
    assert order == [f"m{n}.ko" for n in range(5000, -1, -1)]
    cycle = parse_modules_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n")
    assert dep_closure(cycle, frozenset(), ["a", "c"]) == ["c.ko", "b.ko", "a.ko"]


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_a_corrupt_compressed_archive_is_an_error_not_a_crash(kind: str) -> None:
    good = COMPRESSORS[kind](archive("a", size=100_000))
    head = 6 if kind != "bzip2" else 4
    corrupt = good[:head] + bytes(b ^ 0x5A for b in good[head : head + 200]) + good[head + 200 :]
    with pytest.raises(Oci2vmError):
        initrd_names(corrupt)
    with pytest.raises(Oci2vmError):
        initrd_names(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
