"""A Debian kernel package (linux-image-*.deb) read into the tree, as dpkg would unpack it
but without running it: its files stream to the filesystem writer, the modules' metadata
is read on the way (oci2vm.kernel.modinfo), and what dpkg's postinst would have made is
written by us: the module indexes depmod makes, and an initramfs (oci2vm's own).

A kernel split into several packages (forky's: debian/kernel.py) is read as one, its
packages in turn; its /usr/lib/modules/V/vmlinuz and config are linked (a hardlink) as
/boot/vmlinuz-V and /boot/config-V, as linux-base's postinst hook (00-legacy-boot) does.

A package is read twice at most: once to stream its files and learn every module's
dependencies, once more for the bytes of the few modules the initramfs needs (which
those dependencies decide). What both reads learn is cached by the package's digest
(prepare/kernelcache): the next build with the same package inflates no module and reads
it once.
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from oci2vm.debian.deb import open_deb
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from oci2vm.kernel.depmod import ModuleDb
from oci2vm.kernel.modinfo import ModInfo, decompress_module, read_modinfo, uncompressed_name
from oci2vm.layers.tarstream import Member, TarReader
from oci2vm.prepare.kernelcache import KernelCache
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import BytesReader
from oci2vm.util.workers import worker_count

MODULE_LIMIT = 256 << 20  # bytes of one module as stored in the package
KERNEL_LIMIT = 256 << 20  # Debian's are ~8 MB
SMALL_LIMIT = 64 << 20  # modules.builtin.modinfo is ~ 1 MB
MODULE_RE = re.compile(r"^(?:usr/)?lib/modules/([^/]+)/(.+\.ko(?:\.xz|\.zst|\.gz)?)$")
KERNEL_RE = re.compile(r"^boot/vmlinu[xz]-(.+)$")
# A split kernel's image and config (-> /boot/vmlinuz-V, /boot/config-V)
SPLIT_RE = re.compile(r"^(?:usr/)?lib/modules/([^/]+)/(vmlinuz|config)$")
SMALL_FILES = ("modules.builtin", "modules.builtin.modinfo", "modules.order")


@dataclass(slots=True)
class KernelFiles:
    """What reading a kernel package learned."""

    version: str = ""
    kernel_path: str = ""  # in the tree
    split: bool = False  # the kernel came as /usr/lib/modules/VERSION/vmlinuz
    db: ModuleDb = field(default_factory=ModuleDb)
    small: dict[str, bytes] = field(default_factory=dict)  # SMALL_FILES by name
    kernel: bytes = b""  # the kernel image, when kept to boot directly

    def indices(self, cache: KernelCache | None = None) -> dict[str, bytes]:
        """The files depmod would write into /lib/modules/VERSION (from `cache` when it
        holds them)."""
        if cache is not None and (cached := cache.load_indices(self.version)) is not None:
            return cached
        indices = self.db.indices(self.version)
        if cache is not None:
            cache.save_indices(self.version, indices)
        return indices


def _name(member: Member) -> str:
    return posixpath.normpath("/" + member.name).lstrip("/")


def _in_tree(name: str) -> str:
    """Where a package's file goes in the tree: /usr/lib/modules/VERSION (forky's, and
    some of trixie's packages) as /lib/modules/VERSION, where depmod's files go and kmod
    looks (the same place in a merged-/usr tree, whose /lib leads to usr/lib)."""
    return "/" + (name.removeprefix("usr/") if name.startswith("usr/lib/modules/") else name)


def _members(debs: Sequence[BlobRef], what: str) -> Iterator[tuple[str, Member, TarReader]]:
    for deb in debs:
        with open_deb(deb, what).data() as tar:
            for member in tar:
                name = _name(member)
                if name:
                    yield name, member, tar


def _read_limited(tar: TarReader, member: Member, what: str, limit: int) -> bytes:
    """A member's bytes, read whole: only for files of known purpose and bounded size."""
    _check_size(member, what, limit)
    return tar.read_data(member.size)


def _check_size(member: Member, what: str, limit: int) -> None:
    if member.size > limit or member.sparse is not None:
        raise Oci2vmError(
            f"{what}: {member.name}: {member.size} bytes, more than oci2vm reads of such a "
            f"file ({limit >> 20} MiB): is it a kernel package?"
        )


def read_kernel_package(
    debs: Sequence[BlobRef],
    what: str,
    edit: TreeEditor | None,
    *,
    modules_into_tree: bool,
    kernel_into_tree: bool = True,
    cache: KernelCache | None = None,
) -> KernelFiles:
    """Read every module's metadata, and stream the files of the package (or of a split
    kernel's packages, in turn) into the tree through `edit` (nothing when it is None):
    the modules only with `modules_into_tree`, the kernel image only with
    `kernel_into_tree` (else its bytes are kept, to boot it directly). With `cache`, the
    metadata cached for the package is used where it names the module read, and saved
    when it did not name them all."""
    found = KernelFiles()
    known = cache.load_modinfo() if cache is not None else None
    modules: list[tuple[str, ModInfo]] = []
    with _ModuleReader(found.db, modules) as reader:
        for name, member, tar in _members(debs, what):
            module = MODULE_RE.match(name)
            kernel = KERNEL_RE.match(name)
            split = SPLIT_RE.match(name)
            is_module_tree = name.startswith(("lib/modules/", "usr/lib/modules/"))
            into_tree = edit is not None and (modules_into_tree or not is_module_tree)
            if split and member.isfile():
                _split_file(found, edit, split, member, tar, what, modules_into_tree,
                            kernel_into_tree)  # fmt: skip
                continue
            if kernel and member.isfile():
                found.version, found.kernel_path = kernel.group(1), "/" + name
                if not kernel_into_tree:
                    found.kernel = _read_limited(tar, member, what, KERNEL_LIMIT)
                    continue
            if module and member.isfile():
                info = known.get(name) if known is not None else None
                if info is None:
                    raw = _read_limited(tar, member, what, MODULE_LIMIT)
                    reader.read(name, module.group(2), raw)
                    if into_tree and edit is not None:
                        mode = member.mode & 0o7777
                        edit.stream(_in_tree(name), BytesReader(raw), len(raw), mode=mode)
                else:
                    reader.known(name, module.group(2), info)
                    if into_tree and edit is not None:
                        _check_size(member, what, MODULE_LIMIT)
                        mode = member.mode & 0o7777
                        edit.stream(_in_tree(name), tar, member.size, mode=mode)
            elif member.isfile() and is_module_tree and posixpath.basename(name) in SMALL_FILES:
                data = _read_limited(tar, member, what, SMALL_LIMIT)
                found.small[posixpath.basename(name)] = data
                if into_tree and edit is not None:
                    mode = member.mode & 0o7777
                    edit.write(_in_tree(name), data, mode=mode, uid=0, gid=0)
            elif into_tree and edit is not None:
                _place(edit, name, member, tar)
    _check_whole(found, modules, what)
    if cache is not None and (known is None or set(known) != {name for name, _ in modules}):
        cache.save_modinfo(modules)
    found.db.set_builtin(
        found.small.get("modules.builtin", b""), found.small.get("modules.builtin.modinfo", b"")
    )
    found.db.set_order(found.small.get("modules.order", b""))
    return found


def _split_file(
    found: KernelFiles,
    edit: TreeEditor | None,
    match: re.Match[str],
    member: Member,
    tar: TarReader,
    what: str,
    modules_into_tree: bool,
    kernel_into_tree: bool,
) -> None:
    """A split kernel's /usr/lib/modules/V/vmlinuz or config: at /boot/vmlinuz-V (or
    config-V), and where the package has it too (a hardlink) when the modules go into the
    tree, as linux-base's postinst hook leaves them (`cp -l`)."""
    version, kind = match.groups()
    boot = f"/boot/{kind}-{version}"
    if kind == "vmlinuz":
        found.version, found.kernel_path, found.split = version, boot, True
        if not kernel_into_tree:
            found.kernel = _read_limited(tar, member, what, KERNEL_LIMIT)
            return
    if edit is None:
        return
    _check_size(member, what, KERNEL_LIMIT)
    inode = edit.stream(boot, tar, member.size, mode=member.mode & 0o7777, uid=0, gid=0)
    if modules_into_tree:
        edit.graft(_in_tree(match.group(0)), inode)


def _check_whole(found: KernelFiles, modules: list[tuple[str, ModInfo]], what: str) -> None:
    """A kernel package holds a kernel; a split kernel's linux-binary-V alone holds no
    module, nor even the list of those built in."""
    if not found.version:
        raise Oci2vmError(f"{what}: holds no /boot/vmlinuz-VERSION: is it a kernel package?")
    if found.split and not modules and not found.small:
        raise Oci2vmError(
            f"{what}: holds the kernel {found.version} but none of its modules (a split "
            f"kernel's linux-binary-{found.version} alone?): use --kernel debian:SUITE, "
            "which reads every package of the kernel"
        )


class _ModuleReader:
    """Modules' metadata read by a pool of threads (inflating a module, most of the work,
    releases the GIL), added to `db` and `modules` in the package's order, as depmod
    reads them (of two files of one name, the first counts). At most AHEAD modules wait
    for their turn, which bounds the memory their bytes hold."""

    AHEAD = 32

    def __init__(self, db: ModuleDb, modules: list[tuple[str, ModInfo]]) -> None:
        self._db = db
        self._modules = modules
        self._pool = ThreadPoolExecutor(worker_count(), "modinfo")
        self._waiting: deque[tuple[str, str, Future[ModInfo] | ModInfo]] = deque()

    def __enter__(self) -> _ModuleReader:
        return self

    def __exit__(self, kind: object, *_rest: object) -> None:
        try:
            if kind is None:
                while self._waiting:
                    self._settle()
        finally:
            self._pool.shutdown(cancel_futures=True)

    def read(self, name: str, relpath: str, raw: bytes) -> None:
        """Read the metadata of module file `name` (its bytes as stored) in the pool."""
        self._waiting.append((name, relpath, self._pool.submit(_modinfo, name, raw)))
        while len(self._waiting) > self.AHEAD:
            self._settle()

    def known(self, name: str, relpath: str, info: ModInfo) -> None:
        """A module whose metadata is known already (cached), in its place in the order."""
        if self._waiting:
            self._waiting.append((name, relpath, info))
        else:
            self._add(name, relpath, info)

    def _settle(self) -> None:
        name, relpath, info = self._waiting.popleft()
        self._add(name, relpath, info.result() if isinstance(info, Future) else info)

    def _add(self, name: str, relpath: str, info: ModInfo) -> None:
        self._modules.append((name, info))
        self._db.add(relpath, info)


def _modinfo(name: str, raw: bytes) -> ModInfo:
    return read_modinfo(decompress_module(name, raw))


def _place(edit: TreeEditor, name: str, member: Member, tar: TarReader) -> None:
    """One non-module entry of the package, as dpkg would unpack it (root-owned)."""
    path = _in_tree(name)
    mode = member.mode & 0o7777
    if member.isdir():
        edit.mkdir(path, mode=mode)
    elif member.isfile():
        edit.stream(path, tar, member.size, mode=mode, uid=0, gid=0)
    elif member.type == b"2":
        edit.symlink(path, member.linkname)
    # Hard links and device nodes: Debian's kernel packages have none.


def module_bytes(
    debs: Sequence[BlobRef], what: str, wanted: Sequence[str], cache: KernelCache | None = None
) -> list[tuple[str, bytes]]:
    """The uncompressed bytes of the modules `wanted` (paths under /lib/modules/VERSION),
    in that order, each under its uncompressed name (ext4.ko.xz -> ext4.ko): the second
    read of the package, unless `cache` holds them from an earlier one."""
    if cache is not None and (cached := cache.load_modules(wanted)) is not None:
        return cached
    order = {rel: i for i, rel in enumerate(wanted)}
    found: dict[str, bytes] = {}
    for name, member, tar in _members(debs, what):
        module = MODULE_RE.match(name)
        if module and member.isfile() and module.group(2) in order:
            raw = _read_limited(tar, member, what, MODULE_LIMIT)
            found[module.group(2)] = decompress_module(name, raw)
            if len(found) == len(order):
                break
    missing = [rel for rel in wanted if rel not in found]
    if missing:
        raise Oci2vmError(f"{what}: the modules {', '.join(missing)} are not in the package")
    modules = [(uncompressed_name(rel), found[rel]) for rel in wanted]
    if cache is not None:
        cache.save_modules(wanted, modules)
    return modules
