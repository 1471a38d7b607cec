"""The kernel the disk boots, and the initramfs that mounts its root.

- The image's own kernel (and its initrd) when it has one and nothing asks otherwise.
- Else Debian's, fetched and verified through the archive's signed chain (debian/), or a
  kernel package file the user names: its files stream into the tree (modules too, in
  system mode), the module indexes are written as depmod would, and oci2vm's initramfs
  (initramfs/) goes beside it as /boot/initrd.img-VERSION, with /vmlinuz and /initrd.img
  links as Debian's kernel packages keep them.
- With oci2vm's initramfs in a Debian tree that has no initramfs generator, a kernel hook
  (prepare/kernelhook) makes one for kernels installed in the guest later.

Which kernel, which initrd and which init (system or app) are decided here, after the
layers streamed: what the image holds is known only then.
"""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass
from pathlib import Path

from oci2vm.config import Config, InitMode, InitrdChoice, KernelKind
from oci2vm.debian.archive import Archive
from oci2vm.debian.kernel import kernel_packages
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef
from oci2vm.initramfs.build import (
    INITRAMFS_MODULES,
    RUN_MODULES,
    build_initramfs,
    busybox_from_deb,
)
from oci2vm.initramfs.scan import CorruptInitrdError, initrd_names
from oci2vm.initramfs.spec import DEFAULT_INIT, BootSpec, Mode, workload
from oci2vm.kernel.moddep import builtin_names, dep_closure, parse_modules_dep
from oci2vm.kernel.modinfo import decompress_module, uncompressed_name
from oci2vm.prepare import kernelhook
from oci2vm.prepare.kernelcache import KernelCache
from oci2vm.prepare.kernelimage import graft_kernel
from oci2vm.prepare.kernelpkg import KernelFiles, module_bytes, read_kernel_package
from oci2vm.prepare.step import Step, Target
from oci2vm.report import Info
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind
from oci2vm.tree.osinfo import InitSystem, Kernel

# The suites a Debian image's VERSION_CODENAME names that the archive serves; any other
# image takes the kernel of Debian's stable release. forky's and sid's images take
# trixie's: their kernels change daily and their Releases expire within a week (a mirror
# that lags is refused), while trixie's boots them as well; --kernel debian:sid asks.
DEBIAN_SUITES = ("bookworm", "trixie", "forky", "sid")
KERNEL_SUITE = {"forky": "trixie", "sid": "trixie"}
DEFAULT_SUITE = "stable"
# What the initramfs cannot do without: the root filesystem's driver.
REQUIRED_MODULES = ("ext4",)
BUSYBOX_PACKAGE = "busybox-static"  # the initramfs's shell and tools


@dataclass(frozen=True, slots=True)
class KernelSource:
    """A kernel package to inject: verified, in the blob cache or the user's own file."""

    debs: tuple[BlobRef, ...]  # one, or a split kernel's parts in the order dpkg unpacks
    what: str
    archive: Archive | None  # where busybox comes from too; None: a package file


def debian_suite(target: Target) -> str:
    """The suite of the kernel: --kernel debian:SUITE, else the image's own Debian
    release, else stable."""
    chosen = target.config.kernel.suite
    if chosen:
        return chosen
    release = target.os.os_release
    codename = release.get("VERSION_CODENAME", "")
    if release.get("ID") == "debian" and codename in DEBIAN_SUITES:
        return KERNEL_SUITE.get(codename, codename)
    return DEFAULT_SUITE


def archive_for(target: Target, suite: str) -> Archive:
    config = target.config
    if target.store is None:
        raise ValueError("a kernel from the Debian archive needs the blob store")
    return Archive(
        target.store,
        suite,
        target.arch,
        mirror=config.mirror,
        keyrings=config.keyrings,
        allow_expired=config.allow_expired_release,
    )


def kernel_source(target: Target) -> KernelSource:
    choice = target.config.kernel
    if choice.kind is KernelKind.DEB:
        path = Path(choice.location)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise Oci2vmError(f"--kernel {path}: {e.strerror}") from None
        return KernelSource((BlobRef(path, 0, size, None),), str(path), None)
    archive = archive_for(target, debian_suite(target))
    archive.index().expect(BUSYBOX_PACKAGE)  # found by the kernel's pass over the index
    packages = kernel_packages(archive, choice.flavour)
    debs = tuple(archive.download(package) for package in packages)
    return KernelSource(debs, str(packages[-1]), archive)


def mode_of(target: Target) -> InitMode:
    """system or app: --init, else app exactly when the image has no init, or, for `run`,
    when its init is only busybox's (see runs_as_app)."""
    chosen = target.config.init
    has_init = target.os.init_path is not None and not runs_as_app(target)
    if chosen is InitMode.SYSTEM and not has_init:
        raise Oci2vmError(
            f"{target.source}: the image has no init (looked for /sbin/init, /usr/sbin/init, "
            "/bin/init, /lib/systemd/systemd): run its Entrypoint and Cmd with --init app"
        )
    mode = chosen if chosen is not InitMode.AUTO else InitMode.SYSTEM if has_init else InitMode.APP
    if mode is InitMode.SYSTEM:
        refuse_workload_options(target.source, target.config)
    return mode


def runs_as_app(target: Target) -> bool:
    """Whether `run` takes an image with an init for an app, as docker run does: busybox's
    init without OpenRC (alpine's, busybox's, and with them nginx:alpine's, redis:alpine's:
    an /sbin/init link every Alpine-based image has) under an Entrypoint or Cmd that is no
    init. Booting it would only reach a login nobody can use; --init system still does."""
    if not target.config.docker_run or target.config.init is not InitMode.AUTO:
        return False
    if target.os.init is not InitSystem.BUSYBOX or target.os.openrc:
        return False
    config = target.image_config
    argv = [*(config.entrypoint or ()), *(config.cmd or ())] if config is not None else []
    return bool(argv) and argv[0] != target.os.init_path and argv[0].rsplit("/", 1)[-1] != "init"


def refuse_workload_options(source: str, config: Config) -> None:
    """docker run's options set an app image's workload; a system boots its own init and
    would silently drop them (`--user alice:pw` meant as a login user is the likely slip)."""
    given = config.workload_options()
    if not given:
        return
    hint = " (a login user: --add-user NAME[:PASSWORD][:sudo])" if config.user is not None else ""
    raise Oci2vmError(
        f"{source}: {', '.join(given)} set an app image's workload, and this image "
        f"boots its own init (system mode){hint}; pass --init app to run its Entrypoint "
        "and Cmd instead"
    )


def keeps_image_kernel(target: Target) -> bool:
    """Whether the disk boots the image's own kernel (with its initrd, or with oci2vm's
    built from its modules: see image_initrd)."""
    kind = target.config.kernel.kind
    if kind is KernelKind.IMAGE:
        if not target.os.kernels:
            raise Oci2vmError(
                f"{target.source}: the image has no kernel (looked for /boot/vmlinuz-*, "
                "/lib/modules/*/vmlinuz, /vmlinuz): drop --kernel image to inject Debian's"
            )
        if target.mode is InitMode.APP and target.config.initrd is InitrdChoice.IMAGE:
            raise Oci2vmError(
                "--initrd image cannot run an app image's workload: oci2vm's initramfs does"
            )
        return True
    if kind is KernelKind.AUTO:
        return bool(target.os.kernels) and target.mode is InitMode.SYSTEM
    return False


def apply(edit: TreeEditor, target: Target) -> list[str]:
    if target.config.kernel.kind is KernelKind.SOURCE:
        location = target.config.kernel.location
        kernel = graft_kernel(edit, target, location)
        notes = [f"the kernel {kernel.version} comes from {location}"]
        notes += image_initrd(edit, target, kernel)
        return notes + direct_outputs(edit, target, kernel)
    if keeps_image_kernel(target):
        kernel = target.os.kernels[0]
        return image_initrd(edit, target, kernel) + direct_outputs(edit, target, kernel)
    if target.config.initrd is InitrdChoice.IMAGE:
        raise Oci2vmError(
            "--initrd image: the kernel oci2vm injects comes with oci2vm's initramfs only"
        )
    source = kernel_source(target)
    system = target.mode is InitMode.SYSTEM
    direct = target.boot_outputs
    # A workload booted directly needs nothing of the package in its root.
    into = None if direct is not None and not system else edit
    cache = KernelCache.of(target.store, source.debs)
    files = read_kernel_package(
        source.debs,
        source.what,
        into,
        modules_into_tree=system,
        kernel_into_tree=direct is None,
        cache=cache,
    )
    if system:
        for name, content in files.indices(cache).items():
            edit.write(f"/lib/modules/{files.version}/{name}", content, mode=0o644)
    initrd_bytes = initramfs(edit, target, source, files, cache)
    if direct is not None:
        direct.version, direct.kernel, direct.initrd = files.version, files.kernel, initrd_bytes
    else:
        initrd = f"/boot/initrd.img-{files.version}"
        edit.write(initrd, initrd_bytes, mode=0o644, uid=0, gid=0)
        _debian_links(edit, files.kernel_path, initrd)
    notes = [Info(f"injected {source.what} with oci2vm's initramfs ({target.mode.value} mode)")]
    if target.os.kernels:
        notes.append(f"{target.source}: the image's own kernel is kept but not booted")
    return notes


def initramfs(
    edit: TreeEditor,
    target: Target,
    source: KernelSource,
    files: KernelFiles,
    cache: KernelCache | None = None,
) -> bytes:
    """oci2vm's initramfs for the injected kernel: the drivers it has of those the
    initramfs wants (a cloud flavour lacks some hardware's), which must include ext4's;
    for a direct boot (oci2vm run) only QEMU's virtio devices', which load faster."""
    chosen = RUN_MODULES if target.boot_outputs is not None else INITRAMFS_MODULES
    absent = set(files.db.missing(chosen))
    if absent & set(REQUIRED_MODULES):
        raise Oci2vmError(
            f"{source.what}: the kernel has no {', '.join(sorted(absent & set(REQUIRED_MODULES)))} "
            "(neither built in nor a module): it cannot mount the root oci2vm writes"
        )
    wanted = [name for name in chosen if name.replace("-", "_") not in absent]
    closure = files.db.closure(wanted)
    modules = module_bytes(source.debs, source.what, closure, cache)
    busybox = busybox_binary(target, source)
    mtime = edit.mtime_ns // 1_000_000_000
    guest_hook(edit, target, busybox)
    return build_initramfs(busybox, files.version, modules, boot_spec(target), mtime=mtime)


def guest_hook(edit: TreeEditor, target: Target, busybox: bytes) -> None:
    """Kernels installed in the guest later get oci2vm's initramfs too, when nothing of
    the image would make them one (prepare/kernelhook)."""
    if kernelhook.wanted(edit, target):
        kernelhook.install(edit, busybox, INITRAMFS_MODULES)


def busybox_binary(target: Target, source: KernelSource | None) -> bytes:
    """Debian's static busybox, from the kernel's suite (or the image's, for a kernel
    package file or the image's own kernel), verified as the kernel is."""
    archive = source.archive if source and source.archive else None
    archive = archive or archive_for(target, debian_suite(target))
    return busybox_from_deb(archive.download(archive.resolve(BUSYBOX_PACKAGE)))


def boot_spec(target: Target) -> BootSpec:
    """What oci2vm's init does at boot: mount the root, then hand over to the image's
    init (system mode) or run the workload (app mode)."""
    if target.mode is InitMode.APP:
        if target.image_config is None:
            raise ValueError("app mode needs the image's config")
        return workload(target.image_config, target.config, hostname=target.hostname)
    return BootSpec(
        mode=Mode.SYSTEM, init=target.os.init_entry or target.os.init_path or DEFAULT_INIT
    )


def _debian_links(edit: TreeEditor, kernel: str, initrd: str) -> None:
    """/vmlinuz and /initrd.img, as linux-update-symlinks keeps them (relative)."""
    for link, path in (("/vmlinuz", kernel), ("/initrd.img", initrd)):
        existing = edit.get(link)
        if existing is None or existing.kind is Kind.SYMLINK:
            edit.symlink(link, posixpath.relpath(path, "/"))


STEP = Step("kernel", apply, refreshes_os=True)


# -- the image's own kernel: its initrd, or oci2vm's built from its modules ---------------

INITRD_LIMIT = 512 << 20  # bytes of an image's initrd read to list it
KERNEL_FILE_LIMIT = 256 << 20
MODULE_FILE_LIMIT = 256 << 20
EXT4_NAMES = ("/ext4.ko", "/ext4.ko.xz", "/ext4.ko.zst", "/ext4.ko.gz")


def direct_outputs(edit: TreeEditor, target: Target, kernel: Kernel) -> list[str]:
    """For a direct boot (oci2vm run), the kernel and initrd the tree now has for `kernel`."""
    outputs = target.boot_outputs
    if outputs is None:
        return []
    initrd_path = f"/boot/initrd.img-{kernel.version}"
    image = edit.read_file(kernel.path, KERNEL_FILE_LIMIT)
    initrd = edit.read_file(initrd_path, INITRD_LIMIT) if edit.get(initrd_path) else None
    if initrd is None and kernel.initrd:
        initrd = edit.read_file(kernel.initrd, INITRD_LIMIT)
    if image is None or initrd is None:
        return [f"kernel {kernel.version}: cannot be booted directly: booting a disk"]
    outputs.version, outputs.kernel, outputs.initrd = kernel.version, image, initrd
    return []


def image_initrd(edit: TreeEditor, target: Target, kernel: Kernel) -> list[str]:
    """The image's kernel is kept; its initrd:

    - image: the image's own, as it is;
    - own (and app mode, whose workload oci2vm's init runs): oci2vm's, from the kernel's
      installed modules;
    - auto: oci2vm's too, which boots faster (measured on the Debian fixture under TCG,
      benchmarks/bench_disk.py: 23.0 s to login: against 27.0 s with Debian's 36 MB
      initrd, 24.3 s for the article's extlinux disk), when it can be built; else the
      image's, unless it cannot mount the root oci2vm writes (then a note says so).
    """
    choice = target.config.initrd
    if choice is InitrdChoice.IMAGE:  # kept as asked, but said when it cannot serve
        found = cannot_mount_root(edit, kernel)
        return [f"{target.source}: --initrd image: {found}"] if found else []
    reason = "--initrd own"
    if target.mode is InitMode.APP:
        choice, reason = InitrdChoice.OWN, "app mode"
    try:
        data = own_initramfs_for(edit, target, kernel)
    except Oci2vmError as e:
        if choice is InitrdChoice.OWN:
            raise
        found = cannot_mount_root(edit, kernel)
        if found is None:
            return []  # the image's own serves
        return [f"{target.source}: {found}, and oci2vm's cannot replace it: {e}"]
    edit.write(f"/boot/initrd.img-{kernel.version}", data, mode=0o644, uid=0, gid=0)
    if choice is InitrdChoice.AUTO:
        return []  # the default: nothing to say
    return [f"{target.source}: {reason}: booting oci2vm's initramfs with its kernel's modules"]


def _modules_dir(edit: TreeEditor, version: str) -> str | None:
    for base in (f"/lib/modules/{version}", f"/usr/lib/modules/{version}"):
        if edit.get(f"{base}/modules.dep") is not None:
            return base
    return None


def _builtin(edit: TreeEditor, version: str) -> frozenset[str]:
    for base in (f"/lib/modules/{version}", f"/usr/lib/modules/{version}"):
        text = edit.read_file(f"{base}/modules.builtin", 16 << 20)
        if text is not None:
            return builtin_names(text.decode("utf-8", "replace"))
    return frozenset()


def cannot_mount_root(edit: TreeEditor, kernel: Kernel) -> str | None:
    """Why the kernel's own initrd would not mount the root oci2vm writes, or None."""
    ext4_builtin = "ext4" in _builtin(edit, kernel.version)
    if kernel.initrd is None:
        return "its kernel has no initrd to find the root by UUID"
    try:
        data = edit.read_file(kernel.initrd, INITRD_LIMIT)
    except Oci2vmError:
        return None  # too large to look into: trust it
    if data is None:
        return None  # nothing to judge by (a plan has no file data): trust it
    try:
        names = initrd_names(data)
    except CorruptInitrdError as e:
        return f"its initrd {kernel.initrd} is damaged ({str(e).removeprefix('initrd: ')})"
    except Oci2vmError:
        return None  # a form oci2vm cannot read (lz4...), or too large to look into
    if not ext4_builtin and not any(n.endswith(EXT4_NAMES) for n in names):
        return f"its initrd {kernel.initrd} has no ext4 module (built host-only?)"
    return None


def own_initramfs_for(edit: TreeEditor, target: Target, kernel: Kernel) -> bytes:
    """oci2vm's initramfs for a kernel of the image, from the modules it has installed
    (their modules.dep, as depmod left it), read back from the filesystem."""
    base = _modules_dir(edit, kernel.version)
    dep_text = edit.read_file(f"{base}/modules.dep", 64 << 20) if base else None
    if base is None or dep_text is None:
        raise Oci2vmError(f"no modules.dep for kernel {kernel.version} in the image")
    deps = parse_modules_dep(dep_text.decode("utf-8", "replace"))
    builtin = _builtin(edit, kernel.version)
    if "ext4" not in deps and "ext4" not in builtin:
        raise Oci2vmError(f"kernel {kernel.version} has no ext4 module")
    modules = []
    for relpath in dep_closure(deps, builtin, INITRAMFS_MODULES):
        raw = edit.read_file(f"{base}/{relpath}", MODULE_FILE_LIMIT)
        if raw is None:
            raise Oci2vmError(f"{base}/{relpath} is listed in modules.dep but missing")
        modules.append((uncompressed_name(relpath), decompress_module(relpath, raw)))
    busybox = busybox_binary(target, None)
    mtime = edit.mtime_ns // 1_000_000_000
    guest_hook(edit, target, busybox)
    return build_initramfs(busybox, kernel.version, modules, boot_spec(target), mtime=mtime)


def build_plan(target: Target) -> dict[str, str]:
    """What a build of `target` would boot, in words (for inspect; no network)."""
    try:
        mode = mode_of(target)
        target = dataclasses.replace(target, mode=mode)
        keep = keeps_image_kernel(target)
    except Oci2vmError as e:
        return {"error": str(e)}
    plan = {"mode": mode.value}
    if keep:
        newest = target.os.kernels[0]
        plan["kernel"] = f"the image's {newest.version} ({newest.path})"
        initrd = target.config.initrd
        if initrd is InitrdChoice.IMAGE and mode is InitMode.SYSTEM:
            plan["initrd"] = f"the image's {newest.initrd or '(none)'}"
        else:
            plan["initrd"] = "oci2vm's initramfs, with the kernel's own modules"
            if initrd is InitrdChoice.AUTO and mode is InitMode.SYSTEM:
                plan["initrd"] += (
                    "; the image's own if that cannot be built (no modules.dep, no busybox)"
                )
    elif target.config.kernel.kind is KernelKind.SOURCE:
        plan["kernel"] = f"the newest in the image {target.config.kernel.location}"
        plan["initrd"] = "its own, unless it cannot mount the root: then oci2vm's"
    else:
        choice = target.config.kernel
        if choice.kind is KernelKind.DEB:
            plan["kernel"] = f"injected from {choice.location}"
        else:
            flavour = choice.flavour or target.arch.facts.debian_kernel.removeprefix("linux-image-")
            plan["kernel"] = (
                f"injected: Debian's linux-image-{flavour} from {debian_suite(target)}, "
                "verified through the archive's signatures"
            )
        plan["initrd"] = "oci2vm's initramfs"
    if mode is InitMode.APP:
        plan["init"] = "oci2vm's init runs the image's Entrypoint and Cmd"
    else:
        plan["init"] = f"the image's {target.os.init_name} ({target.os.init_path})"
    return plan
