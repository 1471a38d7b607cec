"""The build, top to bottom. Each phase takes what the ones before it made:

1. resolve   the source becomes an Image (manifest, config, layers located and verified)
             and an Identity (what makes the output deterministic);
2. plan      everything that needs no layer data: options checked, boot images built, the
             disk plan fixed, so the root filesystem can stream to its final offset;
3. stream    the layers, flattened straight into the filesystem writer;
4. prepare   the preparation steps edit the tree (prepare/steps.py);
5. finish    the filesystem's metadata is written;
6. assemble  the partition table, the ESP and the boot code around the root;
7. convert   qemu-img turns the raw disk into the output format.

The output appears only when it is complete (util/atomic.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from oci2vm.arch import Arch
from oci2vm.config import Config, InitMode, OutputFormat, PartitionTable
from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4 import MAX_SIZE, Ext4Result, Ext4Writer, required_size
from oci2vm.identity import Identity, image_identity
from oci2vm.image.blobs import BlobStore, ProgressFn, uncompressed_size_hint
from oci2vm.image.model import Image, Layer, check_linux
from oci2vm.layers.decompress import prompt_handoffs
from oci2vm.layers.flatten import flatten
from oci2vm.report import Info, Reporter
from oci2vm.reports import BuildReport, DiskReport, FilesystemReport, SystemReport
from oci2vm.sources import Fetch, check_output, resolve
from oci2vm.sources.base import fetch_from
from oci2vm.sources.downloads import Downloads
from oci2vm.tree.model import Tree
from oci2vm.util.atomic import atomic_output, scratch_beside
from oci2vm.util.units import TIB

if TYPE_CHECKING:  # the system and disk phases' modules load when a build needs them
    from oci2vm.disk.assemble import BootFiles
    from oci2vm.disk.plan import DiskPlan
    from oci2vm.prepare.step import BootOutputs, Step, Target
    from oci2vm.tree.osinfo import OsInfo


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What every phase after `resolve` reads."""

    config: Config
    reporter: Reporter
    image: Image
    identity: Identity
    store: BlobStore
    downloads: Downloads | None = None  # the layers still downloading while they are read


@dataclass(frozen=True, slots=True)
class SystemOptions:
    """What the disk's system will be, decided and checked before any byte is written."""

    arch: Arch
    hostname: str
    root_password: str | None
    ssh_keys: tuple[bytes, ...]
    steps: tuple[Step, ...]
    extra_data: int  # bytes of file data the steps add (see Step.data_bytes)
    user_ssh_keys: tuple[tuple[str, tuple[bytes, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class RootFs:
    """A root filesystem written into a file, and what preparation made of it."""

    tree: Tree
    ext4: Ext4Result
    system: SystemOptions | None = None  # None: not prepared (a bare filesystem)
    os: OsInfo | None = None
    notes: tuple[str, ...] = ()
    mode: InitMode | None = None  # system or app; None: not prepared


# -- 1. resolve ----------------------------------------------------------------------------


def blob_store(config: Config) -> BlobStore:
    return BlobStore(config.cache_dir or BlobStore.default_root())


def fetch_options(
    config: Config, reporter: Reporter, store: BlobStore, downloads: Downloads | None = None
) -> Fetch:
    on_blob = reporter.task if reporter.interactive else None
    return fetch_from(config, store, quiet=config.quiet, on_blob=on_blob, downloads=downloads)


def resolve_source(
    config: Config, reporter: Reporter, downloads: Downloads | None = None
) -> tuple[Image, BlobStore]:
    """The image and the cache; with `downloads`, a registry's layers may still be on
    their way (they are read as they arrive), until `downloads` is finished or closed."""
    store = blob_store(config)
    image = resolve(config.source, fetch_options(config, reporter, store, downloads))
    check_linux(config.source, image.config.platform)  # for build and run alike
    return image, store


def layer_progress(reporter: Reporter, image: Image) -> Callable[[int, Layer], ProgressFn]:
    """A progress bar per layer, sized in compressed bytes read."""

    def start(index: int, layer: Layer) -> ProgressFn:
        return reporter.task(f"layer {index + 1}/{len(image.layers)}", layer.size)

    return start


# -- the build -----------------------------------------------------------------------------


def build(config: Config, reporter: Reporter) -> BuildReport:
    """Build config.source into config.output; returns the report (not yet printed)."""
    if config.output is None:
        raise Oci2vmError("build needs -o OUTPUT")
    fmt = config.output_format()
    if config.compress and fmt is not OutputFormat.QCOW2:
        raise Oci2vmError("--compress is only for qcow2 output")
    if fmt is OutputFormat.EXT4 and (given := config.system_options()):
        raise Oci2vmError(
            f"{', '.join(given)}: these prepare a bootable disk's system, and --format ext4 "
            "writes the image's root filesystem as its layers have it: build a disk "
            "(-o NAME.qcow2 or .raw) for them"
        )
    check_output(config.source, config.output)
    started = time.monotonic()
    with (
        reporter.progress(),
        no_space_is_an_error(config.output),
        Downloads() as downloads,
    ):
        image, store = resolve_source(config, reporter, downloads)
        identity = image_identity(image, config.fs_uuid)
        ctx = BuildContext(config, reporter, image, identity, store, downloads)
        if fmt is OutputFormat.EXT4:
            rootfs, disk = build_filesystem(ctx, config.output), None
        else:
            rootfs, disk = build_disk(ctx, config.output, fmt)
    tell_notes(reporter, rootfs.notes)
    return build_report(ctx, fmt, rootfs, disk, time.monotonic() - started)


def tell_notes(reporter: Reporter, notes: Iterable[str]) -> None:
    """A build's notes: warnings (shown even with -q), but for what it did as it should."""
    for note in notes:
        (reporter.note if isinstance(note, Info) else reporter.warn)(note)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
TOOL_NO_SPACE = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))  # as tools say them


@contextmanager
def no_space_is_an_error(output: Path) -> Iterator[None]:
    """A full disk or quota is the user's to fix, not a bug: one line naming the fix (also
    when qemu-img, converting, is the one that ran out)."""
    try:
        yield
    except Oci2vmError as e:
        said = str(e)
        reason = next((text for text in TOOL_NO_SPACE if said.endswith(text)), None)
        if reason is None or not said.startswith("qemu-img failed: "):
            raise
        raise Oci2vmError(
            f"{output}: {reason}: free some space there, or choose another -o"
        ) from None
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        where = e.filename or output
        if e.errno == errno.EFBIG:
            raise Oci2vmError(
                f"{where}: {e.strerror}: the filesystem there cannot hold a file this large; "
                "choose another -o or a smaller --size"
            ) from None
        raise Oci2vmError(
            f"{where}: {e.strerror}: free some space there, or choose another -o "
            "(or --cache-dir, if the cache is where it ran out)"
        ) from None


def build_filesystem(ctx: BuildContext, output: Path) -> RootFs:
    """The bare root filesystem: phases 1, 3 and 5."""
    with atomic_output(output) as tmp, open(tmp, "r+b") as out:
        return write_rootfs(ctx, out, offset=0, size=ctx.config.size)


def build_disk(ctx: BuildContext, output: Path, fmt: OutputFormat) -> tuple[RootFs, DiskReport]:
    """A bootable disk: every phase."""
    from oci2vm.disk.assemble import assemble_disk
    from oci2vm.disk.convert import convert, settle_identifiers

    system = system_options(ctx.config, ctx.image)
    plan, boot = plan_phase(ctx, system)
    with atomic_output(output) as final, raw_disk(final, fmt) as raw:
        with open(raw, "r+b") as disk:
            rootfs = write_rootfs(
                ctx, disk, offset=plan.root_offset, size=plan.root_size, system=system
            )
            root_size = plan.root_size or rootfs.ext4.size
            disk_size = assemble_disk(disk, plan, root_size, ctx.identity, boot)
        if fmt is not OutputFormat.RAW:
            advance = None  # (qemu-img's meter only where it is shown)
            if ctx.reporter.interactive:
                advance = ctx.reporter.task(f"{fmt.value} output", raw.stat().st_size)
            convert(raw, final, fmt, compress=ctx.config.compress, advance=advance)
            settle_identifiers(final, fmt, ctx.identity.derive, output.name)
    report = DiskReport(
        size=disk_size,
        table=plan.table.value,
        boot=ctx.config.boot.value,
        root_offset=plan.root_offset,
        arch=plan.arch.value,
    )
    return rootfs, report


def build_direct_root(ctx: BuildContext, output: Path) -> tuple[RootFs, BootOutputs]:
    """A prepared root filesystem (no disk around it) and the kernel and initramfs to
    boot it directly, as oci2vm run boots an image. When the image keeps its own kernel
    (system mode, --kernel auto), the outputs stay empty: boot a disk instead."""
    from oci2vm.prepare.step import BootOutputs

    system = system_options(ctx.config, ctx.image)
    direct = BootOutputs()
    with atomic_output(output) as tmp, open(tmp, "r+b") as out:
        rootfs = write_rootfs(
            ctx, out, offset=0, size=ctx.config.size, system=system, boot_outputs=direct
        )
    return rootfs, direct


# -- 2. plan -------------------------------------------------------------------------------


def system_options(config: Config, image: Image) -> SystemOptions:
    from oci2vm.prepare import steps
    from oci2vm.prepare.hostname import check_hostname, hostname_from
    from oci2vm.prepare.ssh import read_ssh_keys

    arch = Arch.from_name(image.config.platform.architecture)
    hostname = check_hostname(config.hostname) if config.hostname else hostname_from(image.name)
    keys = read_ssh_keys(config.ssh_keys)
    user_keys = [(name, read_ssh_keys((path,))) for name, path in config.user_ssh_keys]
    keys += tuple(k for name, found in user_keys if name == "root" for k in found)
    by_user: dict[str, tuple[bytes, ...]] = {}
    for name, found in user_keys:
        if name != "root":
            by_user[name] = by_user.get(name, ()) + found
    chosen = steps.SYSTEM_STEPS
    extra = steps.data_bytes(chosen, config)
    return SystemOptions(
        arch, hostname, config.root_password, keys, chosen, extra, tuple(by_user.items())
    )


def plan_phase(ctx: BuildContext, system: SystemOptions) -> tuple[DiskPlan, BootFiles]:
    """The boot images, then the disk plan that has room for them and the root."""
    from oci2vm.disk.plan import boot_modes, plan_disk
    from oci2vm.fs import fat

    config = ctx.config
    arch = system.arch
    bios, uefi = boot_modes(config.boot)
    boot = boot_files(arch, config.table, bios, uefi, str(ctx.identity.fs_uuid))
    # The root filesystem's own minimum, so that a small --size names the disk's minimum
    # rather than the root partition's.
    root_need = required_size(data_size_hint(ctx.image, system), 0)
    esp_size = fat.fat_size_for(boot.esp_files) if uefi else 0
    plan = plan_disk(
        arch, config.table, config.boot, esp_size=esp_size, disk_size=config.size,
        root_need=root_need,
    )  # fmt: skip
    if config.size is not None and plan.root_size is not None and plan.root_size > MAX_SIZE:
        # Named here, in the disk's terms: the writer would name the root's size as --size.
        most = config.size - (plan.root_size - MAX_SIZE)  # the root then gets MAX_SIZE
        raise Oci2vmError(
            f"--size {config.size} bytes leaves {plan.root_size} bytes for the root "
            f"filesystem, beyond what oci2vm's ext4 holds ({MAX_SIZE // TIB} TiB): pass a "
            f"--size of at most {most} bytes"
        )
    return plan, boot


def boot_files(
    arch: Arch, table: PartitionTable, bios: bool, uefi: bool, fs_uuid: str
) -> BootFiles:
    from oci2vm.boot import grub
    from oci2vm.disk.assemble import BootFiles

    core = grub.build_bios_core(fs_uuid, table.value, arch=arch) if bios else b""
    esp_files = {}
    if uefi:
        esp_files[arch.efi_boot_path] = grub.build_efi(fs_uuid, arch=arch)
    return BootFiles(core, esp_files)


def data_size_hint(image: Image, system: SystemOptions | None = None) -> int:
    """An estimate of the file data, the layers' and what the steps will add, used to size
    reservations (see uncompressed_size_hint for what it can and cannot know)."""
    hint = sum(uncompressed_size_hint(layer.blob, layer.media_type) for layer in image.layers)
    return hint + (system.extra_data if system else 0)


@contextmanager
def raw_disk(final: Path, fmt: OutputFormat) -> Iterator[Path]:
    """Where the raw disk is written: the output itself, or a scratch file to convert."""
    if fmt is OutputFormat.RAW:
        yield final
        return
    with scratch_beside(final, ".raw") as scratch:
        yield scratch


# -- 3-5. stream, prepare, finish ----------------------------------------------------------


def write_rootfs(
    ctx: BuildContext,
    out: BinaryIO,
    *,
    offset: int,
    size: int | None,
    system: SystemOptions | None = None,
    boot_outputs: BootOutputs | None = None,
) -> RootFs:
    """Flatten the image straight into an ext4 filesystem at `offset` of `out`, prepare
    the tree as a system when `system` is given, then write the metadata."""
    writer = Ext4Writer(
        out,
        offset=offset,
        size=size,
        data_size_hint=data_size_hint(ctx.image, system),
        uuid=ctx.identity.fs_uuid,
        hash_seed=ctx.identity.hash_seed,
        fs_time=ctx.identity.fs_time,
    )
    try:
        with prompt_handoffs():
            tree = flatten(
                ctx.image,
                sink=writer.write_file,
                progress=layer_progress(ctx.reporter, ctx.image),
                store=ctx.store,
                implicit_mtime_ns=ctx.identity.fs_time * 1_000_000_000,
            )
            if ctx.downloads is not None:
                # Each layer was read to its end and verified by the reader; what the
                # downloads check at the end (a gzip trailer fetched apart, which sized the
                # filesystem) must pass too before the output appears.
                ctx.downloads.finish()
            target: Target | None = None
            if system is not None:
                target, notes = prepare_tree(ctx, tree, writer, system, boot_outputs)
            ext4 = writer.finish(tree.root)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()  # the first error is the one to report
        raise
    if target is None:
        return RootFs(tree, ext4, notes=tuple(tree.notes))
    return RootFs(tree, ext4, system, target.os, (*tree.notes, *notes), target.mode)


def prepare_tree(
    ctx: BuildContext,
    tree: Tree,
    writer: Ext4Writer,
    system: SystemOptions,
    boot_outputs: BootOutputs | None = None,
) -> tuple[Target, tuple[str, ...]]:
    """Phase 4: run the steps over the streamed tree."""
    from oci2vm.prepare import kernel, steps
    from oci2vm.prepare.step import Target
    from oci2vm.tree.editor import TreeEditor
    from oci2vm.tree.osinfo import describe

    info = describe(tree)
    target = Target(
        os=info,
        arch=system.arch,
        source=ctx.image.source,
        identity=ctx.identity.digest,
        root_uuid=str(ctx.identity.fs_uuid),
        hostname=system.hostname,
        root_password=system.root_password,
        ssh_keys=system.ssh_keys,
        user_ssh_keys=system.user_ssh_keys,
        config=ctx.config,
        store=ctx.store,
        image_config=ctx.image.config,
        boot_outputs=boot_outputs,
    )
    target = dataclasses.replace(target, mode=kernel.mode_of(target))
    edit = TreeEditor(
        tree, ctx.identity.fs_time, sink=writer.write_file, read_back=writer.read_file
    )
    notes, target = steps.run_steps(system.steps, edit, target)
    return target, tuple(notes)


# -- the report ----------------------------------------------------------------------------


def build_report(
    ctx: BuildContext,
    fmt: OutputFormat,
    rootfs: RootFs,
    disk: DiskReport | None,
    seconds: float,
) -> BuildReport:
    ext4 = rootfs.ext4
    system = None
    if rootfs.system is not None and rootfs.os is not None:
        kernels = tuple(k.version for k in rootfs.os.kernels)
        mode = rootfs.mode.value if rootfs.mode else "system"
        system = SystemReport(rootfs.system.hostname, kernels, rootfs.os.init_name, mode)
    return BuildReport(
        output=str(ctx.config.output),
        format=fmt.value,
        image_id=ctx.image.config_digest,
        manifest_digest=ctx.image.manifest_digest,
        source_digest=ctx.identity.digest,
        filesystem=FilesystemReport(
            type="ext4",
            uuid=str(ext4.uuid),
            size=ext4.size,
            blocks=ext4.blocks_count,
            free_blocks=ext4.free_blocks,
            inodes=ext4.inodes_count,
            free_inodes=ext4.free_inodes,
        ),
        entries=rootfs.tree.entries,
        seconds=seconds,
        disk=disk,
        system=system,
        notes=rootfs.notes,
    )
