"""What reading a kernel package learned, cached by the package's digest
(prepare/kernelcache): every module's metadata, an initramfs's modules and depmod's
indexes. A second read of the same package inflates no module and takes one pass; what
it gives is what the first read gave; a cache entry that is truncated, stale or saved for
another key is read as absent and written anew."""

from __future__ import annotations

import hashlib
import json
import lzma
import tempfile
from pathlib import Path

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, BlobStore
from oci2vm.kernel.modinfo import ModInfo
from oci2vm.prepare import kernelpkg
from oci2vm.prepare.kernelcache import KernelCache
from oci2vm.prepare.kernelpkg import KernelFiles, module_bytes, read_kernel_package
from oci2vm.tree.model import Kind, walk
from support.debarchives import build_deb
from support.elfmodules import build_module
from support.layouts import directory
from support.prepared import with_data

VERSION = "6.1.0-99-amd64"
BASE = f"./lib/modules/{VERSION}"


def module(name: str, needs: tuple[str, ...] = (), exports: tuple[str, ...] = ()) -> bytes:
    info = [f"name={name}", f"vermagic={VERSION} SMP", "depends=" + ",".join(needs),
            f"alias=fs-{name}"]  # fmt: skip
    return build_module(info, exports=exports, undefined=[f"{n}_sym" for n in needs])


def kernel_deb(tmp_path: Path, *, extra: bool = False) -> BlobRef:
    files = {
        f"./boot/vmlinuz-{VERSION}": b"MZ fake kernel",
        f"{BASE}/kernel/fs/jbd2/jbd2.ko.xz": lzma.compress(module("jbd2", exports=("jbd2_sym",))),
        f"{BASE}/kernel/fs/ext4/ext4.ko.xz": lzma.compress(module("ext4", needs=("jbd2",))),
        f"{BASE}/kernel/sound/snd.ko": module("snd"),
        f"{BASE}/modules.builtin": b"kernel/drivers/virtio/virtio.ko\n",
        f"{BASE}/modules.order": b"kernel/fs/jbd2/jbd2.ko.xz\nkernel/fs/ext4/ext4.ko.xz\n",
    }
    if extra:
        files[f"{BASE}/kernel/extra/more.ko"] = module("more")
    data = build_deb(f"linux-image-{VERSION}", "6.1.1-1", files)
    path = tmp_path / ("extra.deb" if extra else "linux-image.deb")
    path.write_bytes(data)
    return BlobRef(path, 0, len(data), f"sha256:{hashlib.sha256(data).hexdigest()}")


def read(deb: BlobRef, cache: KernelCache | None) -> tuple[KernelFiles, dict[str, bytes]]:
    """The package read into a small tree: what it learned, and each file's bytes."""
    tree, edit = with_data(Path(tempfile.mkdtemp(dir=deb.path.parent)), [directory("etc")])
    files = read_kernel_package((deb,), "the package", edit, modules_into_tree=True, cache=cache)
    contents = {
        path: edit.read_file(path, 1 << 30)
        for path, inode in walk(tree.root)
        if inode.kind is Kind.FILE
    }
    return files, contents  # type: ignore[return-value]


@pytest.fixture
def cache(tmp_path: Path) -> KernelCache:
    return KernelCache(tmp_path / "cache" / "kernels" / "sha256" / "0123")


def no_inflating(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> bytes:
        raise AssertionError("a module was inflated although its metadata was cached")

    monkeypatch.setattr(kernelpkg, "decompress_module", refuse)


def test_a_second_read_inflates_no_module_and_learns_the_same(
    tmp_path: Path, cache: KernelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    deb = kernel_deb(tmp_path)
    plain, plain_files = read(deb, None)
    first, first_files = read(deb, cache)
    assert (cache.directory / "modinfo-v1.json").is_file()
    no_inflating(monkeypatch)
    second, second_files = read(deb, cache)
    assert plain.indices() == first.indices(cache) == second.indices(cache)
    assert plain.db.closure(["ext4"]) == second.db.closure(["ext4"]) == [
        "kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/ext4/ext4.ko.xz"
    ]  # fmt: skip
    assert plain_files == first_files == second_files  # the modules still reach the tree
    assert second_files[f"/lib/modules/{VERSION}/kernel/fs/ext4/ext4.ko.xz"] == lzma.compress(
        module("ext4", needs=("jbd2",))
    )


def test_cached_indexes_are_those_depmod_would_write(tmp_path: Path, cache: KernelCache) -> None:
    deb = kernel_deb(tmp_path)
    files, _ = read(deb, cache)
    made = files.indices(cache)
    assert cache.load_indices(VERSION) == made
    assert cache.load_indices("6.1.0-98-amd64") is None  # saved under another version
    assert files.indices(cache) == files.db.indices(VERSION)


def test_a_stale_record_is_read_again_and_rewritten(
    tmp_path: Path, cache: KernelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record naming other modules than the package holds (another package's, or a
    hand-edited one) is not trusted for the modules it does not name, and is replaced."""
    read(kernel_deb(tmp_path), cache)
    bigger = kernel_deb(tmp_path, extra=True)
    reference, _ = read(bigger, None)
    files, _ = read(bigger, cache)
    assert files.indices() == reference.indices()
    saved = json.loads((cache.directory / "modinfo-v1.json").read_bytes())
    assert len(saved["modules"]) == 4
    no_inflating(monkeypatch)
    again, _ = read(bigger, cache)
    assert again.indices() == reference.indices()


def test_module_bytes_come_from_the_cache_without_reading_the_package(
    tmp_path: Path, cache: KernelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    deb = kernel_deb(tmp_path)
    wanted = ["kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/ext4/ext4.ko.xz"]
    first = module_bytes((deb,), "the package", wanted, cache)
    assert first == [("kernel/fs/jbd2/jbd2.ko", module("jbd2", exports=("jbd2_sym",))),
                     ("kernel/fs/ext4/ext4.ko", module("ext4", needs=("jbd2",)))]  # fmt: skip

    def refuse(*_args: object) -> object:
        raise AssertionError("the package was read again")

    monkeypatch.setattr(kernelpkg, "_members", refuse)
    assert module_bytes((deb,), "the package", wanted, cache) == first
    with pytest.raises(AssertionError, match="read again"):  # another set: not cached
        module_bytes((deb,), "the package", wanted[:1], cache)


@pytest.mark.parametrize("damage", ["truncate", "extend", "garbage", "other key", "bad json"])
def test_a_damaged_file_of_modules_is_read_as_absent(cache: KernelCache, damage: str) -> None:
    wanted = ["a.ko", "b.ko.xz"]
    cache.save_modules(wanted, [("a.ko", b"AAAA"), ("b.ko", b"")])
    assert cache.load_modules(wanted) == [("a.ko", b"AAAA"), ("b.ko", b"")]
    path = next(cache.directory.glob("modules-*.bin"))
    data = path.read_bytes()
    damaged = {
        "truncate": data[:-1],
        "extend": data + b"x",
        "garbage": b"\x00" * 10,
        "other key": data.replace(b'"b.ko.xz"', b'"c.ko.xz"'),
        "bad json": data.replace(b'"files"', b'"fi'),
    }[damage]
    path.write_bytes(damaged)
    assert cache.load_modules(wanted) is None


@pytest.mark.parametrize(
    "text", [b"", b"{}", b'{"modules": [["x", {"name": 1}]]}', b'{"modules": 3}', b"\xff"]
)
def test_an_unreadable_modinfo_record_is_read_as_absent(cache: KernelCache, text: bytes) -> None:
    cache.directory.mkdir(parents=True)
    (cache.directory / "modinfo-v1.json").write_bytes(text)
    assert cache.load_modinfo() is None


def test_metadata_round_trips_with_undecodable_bytes(cache: KernelCache) -> None:
    """Module strings keep undecodable bytes as surrogates (modinfo.ModInfo); the record
    gives them back as they were, so the indexes written from it are the same bytes."""
    info = ModInfo(name="odd", depends=("a",), aliases=("pci:v\udcff*",), softdeps=("pre: x",),
                   weakdeps=("w",), firmware=("f.bin",), vermagic="6.1 \udc80",
                   exports=("sym",), needs=("need\udcfe",))  # fmt: skip
    cache.save_modinfo([("lib/modules/v/odd.ko", info)])
    assert cache.load_modinfo() == {"lib/modules/v/odd.ko": info}


def test_an_unwritable_cache_only_costs_the_next_build_the_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cache = KernelCache(blocker / "kernels")
    cache.save_modules(["a.ko"], [("a.ko", b"x")])  # no error
    assert cache.load_modules(["a.ko"]) is None


def test_only_a_package_known_by_its_digest_is_cached(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    deb = kernel_deb(tmp_path)
    cache = KernelCache.of(store, (deb,))
    assert cache is not None and cache.directory.parent.parent == store.root / "kernels"
    assert KernelCache.of(store, (BlobRef(deb.path, 0, deb.size, None),)) is None  # a user's file
    assert KernelCache.of(None, (deb,)) is None


def test_modules_read_in_parallel_count_in_the_packages_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of two files of one module name, the first in the package counts (depmod's rule),
    however the threads that read them finish; many modules pass the pool's window."""
    monkeypatch.setattr(kernelpkg._ModuleReader, "AHEAD", 2)
    files = {f"./boot/vmlinuz-{VERSION}": b"MZ"}
    for n in range(12):
        files[f"{BASE}/kernel/m{n:02}.ko.xz"] = lzma.compress(module(f"m{n}", exports=(f"s{n}",)))
    files[f"{BASE}/kernel/a/dup.ko.xz"] = lzma.compress(module("dup", exports=("first_sym",)))
    files[f"{BASE}/updates/dup.ko"] = module("dup", exports=("first_sym",))
    files[f"{BASE}/kernel/user.ko"] = module("user", needs=("first",))
    data = build_deb(f"linux-image-{VERSION}", "1", files)
    (tmp_path / "p.deb").write_bytes(data)
    deb = BlobRef(tmp_path / "p.deb", 0, len(data), None)
    cache = KernelCache(tmp_path / "facts")
    got = read_kernel_package((deb,), "p", None, modules_into_tree=False, cache=cache)
    assert got.db.closure(["user"]) == ["kernel/a/dup.ko.xz", "kernel/user.ko"]
    in_tar = [n.removeprefix("./") for n in files if ".ko" in n]  # as tar_of writes them
    assert list(cache.load_modinfo() or {}) == in_tar
    assert b"kernel/a/dup.ko.xz" in got.indices()["modules.dep"]
    assert b"updates/dup.ko" not in got.indices()["modules.dep"]


def test_a_corrupt_module_read_in_the_pool_is_a_one_line_error(tmp_path: Path) -> None:
    files = {f"./boot/vmlinuz-{VERSION}": b"MZ", f"{BASE}/kernel/ok.ko": module("ok"),
             f"{BASE}/kernel/bad.ko.xz": lzma.compress(module("bad"))[:-9]}  # fmt: skip
    data = build_deb(f"linux-image-{VERSION}", "1", files)
    (tmp_path / "p.deb").write_bytes(data)
    with pytest.raises(Oci2vmError, match=r"bad\.ko\.xz: corrupt compressed module"):
        read_kernel_package((BlobRef(tmp_path / "p.deb", 0, len(data), None),), "p", None,
                            modules_into_tree=False)  # fmt: skip
