"""The kernel step: which kernel a disk boots (the image's own, or one injected from a
kernel package), which init takes over (system or app mode), and what an injection puts
in the tree: the package's files, the module indexes depmod would write, oci2vm's
initramfs with the modules it needs, and Debian's /vmlinuz links."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import lzma
from pathlib import Path
from typing import Any

import pytest

from oci2vm.arch import Arch
from oci2vm.config import InitMode, InitrdChoice, KernelChoice, KernelKind, Volume
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobRef, BlobStore
from oci2vm.image.model import ImageConfig, Platform
from oci2vm.prepare import kernel, kernelpkg
from oci2vm.prepare.step import BootOutputs, Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, StreamedData, lookup, walk
from support.debarchives import build_deb
from support.elfmodules import build_module
from support.initrds import cpio_of
from support.layouts import Member, directory, file, symlink
from support.prepared import (
    FS_TIME,
    content,
    entry,
    flattened,
    options,
    target,
    with_data,
)

VERSION = "6.1.0-99-amd64"
BUSYBOX = b"\x7fELF fake busybox"


def module(name: str, needs: tuple[str, ...] = (), exports: tuple[str, ...] = ()) -> bytes:
    info = [f"name={name}", f"vermagic={VERSION} SMP", "depends=" + ",".join(needs)]
    return build_module(info, exports=exports, undefined=[f"{n}_sym" for n in needs])


def build_files(*, with_ext4: bool = True, xz: bool = False) -> dict[str, bytes]:
    """A small linux-image package's files: vmlinuz, ext4 needing jbd2, an unrelated
    module; with `xz`, its modules compressed as trixie's are (ext4.ko.xz)."""
    base = f"./lib/modules/{VERSION}"
    files = {
        f"./boot/vmlinuz-{VERSION}": b"MZ fake kernel",
        f"./boot/config-{VERSION}": b"CONFIG_EXT4_FS=m\n",
        f"{base}/kernel/fs/jbd2/jbd2.ko": module("jbd2", exports=("jbd2_sym",)),
        f"{base}/kernel/sound/snd.ko": module("snd"),
        f"{base}/modules.builtin": b"kernel/drivers/virtio/virtio.ko\n",
        f"{base}/modules.builtin.modinfo": b"",
        f"{base}/modules.order": b"kernel/fs/jbd2/jbd2.ko\nkernel/fs/ext4/ext4.ko\n",
    }
    if with_ext4:
        files[f"{base}/kernel/fs/ext4/ext4.ko"] = module("ext4", needs=("jbd2",))
    if xz:
        files = {
            (f"{name}.xz" if name.endswith(".ko") else name): (
                lzma.compress(data, check=lzma.CHECK_CRC32) if name.endswith(".ko") else data
            )
            for name, data in files.items()
        }
        files[f"{base}/modules.order"] = files[f"{base}/modules.order"].replace(b".ko", b".ko.xz")
    return files


def kernel_deb(tmp_path: Path, *, with_ext4: bool = True, xz: bool = False) -> Path:
    """A small linux-image package of build_files()."""
    path = tmp_path / "linux-image.deb"
    files = build_files(with_ext4=with_ext4, xz=xz)
    path.write_bytes(build_deb(f"linux-image-{VERSION}", "6.1.1-1", files))
    return path


def goal(tree_target: Target, **changes: object) -> Target:
    config = dataclasses.replace(tree_target.config, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(tree_target, config=config, image_config=IMAGE_CONFIG)


IMAGE_CONFIG = ImageConfig(
    platform=Platform(), entrypoint=None, cmd=("cat", "/etc/os-release"), env=("A=b",),
    working_dir="/srv", user="", labels={}, exposed_ports=(), stop_signal="",
    diff_ids=(), created="",
)  # fmt: skip


@pytest.fixture(autouse=True)
def no_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "busybox_binary", lambda _target, _source: BUSYBOX)


def inject(
    tmp_path: Path, members: list[object], xz: bool = False, **changes: object
) -> tuple[object, Target]:
    tree = flattened(tmp_path, members)  # type: ignore[arg-type]
    deb = kernel_deb(tmp_path, xz=xz)
    base = goal(target(tree, options()), kernel=KernelChoice.parse(str(deb)), **changes)
    base = dataclasses.replace(base, mode=kernel.mode_of(base))
    streamed: dict[object, bytes] = {}

    def sink(inode: object, data: object) -> None:
        chunks = []
        while piece := data.view(1 << 20):  # type: ignore[attr-defined]
            chunks.append(bytes(piece))
        streamed[inode] = b"".join(chunks)

    edit = TreeEditor(tree, FS_TIME, sink=sink)  # type: ignore[arg-type]
    notes = kernel.STEP.apply(edit, base)
    return (tree, notes, streamed), base


def initrd_with(*names: str) -> bytes:
    return gzip.compress(cpio_of(*names, data=b"x"))


IMAGE_KERNEL = "6.1.0-9-amd64"
IMAGE_MODULES = f"lib/modules/{IMAGE_KERNEL}"
MODULES_DEP = b"kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz\nkernel/fs/jbd2/jbd2.ko.xz:\n"


def image_kernel(initrd: bytes | None, *, modules: bool = True) -> list[Member]:
    members = [directory("boot"), file(f"boot/vmlinuz-{IMAGE_KERNEL}", b"k"),
               file("sbin/init")]  # fmt: skip
    if initrd is not None:
        members.append(file(f"boot/initrd.img-{IMAGE_KERNEL}", initrd))
    if modules:
        ext4 = lzma.compress(module("ext4", needs=("jbd2",)), check=lzma.CHECK_CRC32)
        members += [
            file(f"{IMAGE_MODULES}/kernel/fs/ext4/ext4.ko.xz", ext4),
            file(f"{IMAGE_MODULES}/kernel/fs/jbd2/jbd2.ko.xz", lzma.compress(module("jbd2"))),
            file(f"{IMAGE_MODULES}/modules.dep", MODULES_DEP),
            file(f"{IMAGE_MODULES}/modules.builtin", b"kernel/drivers/virtio/virtio.ko\n"),
        ]
    return members


def test_auto_boots_oci2vms_initramfs_built_from_the_kernels_own_modules(
    tmp_path: Path,
) -> None:
    tree, edit = with_data(tmp_path, image_kernel(initrd_with("init", "lib/modules/x/dm.ko")))
    assert kernel.STEP.apply(edit, target(tree, options())) == []  # the default: no note
    ours = gzip.decompress(content(tree, f"/boot/initrd.img-{IMAGE_KERNEL}"))
    assert module("ext4", needs=("jbd2",)) in ours  # decompressed from the image's .ko.xz
    assert ours.index(b"kernel/fs/jbd2/jbd2.ko\n") < ours.index(b"kernel/fs/ext4/ext4.ko\n")
    assert BUSYBOX in ours
    own = goal(target(tree, options()), initrd=InitrdChoice.OWN)
    assert kernel.STEP.apply(edit, own) == [
        "test: --initrd own: booting oci2vm's initramfs with its kernel's modules"
    ]


def test_auto_keeps_an_image_initrd_that_mounts_ext4_when_oci2vms_cannot_be_built(
    tmp_path: Path,
) -> None:
    initrd = initrd_with(f"usr/{IMAGE_MODULES}/kernel/fs/ext4/ext4.ko", "init")
    tree, edit = with_data(tmp_path, image_kernel(initrd, modules=False))
    assert kernel.STEP.apply(edit, target(tree, options())) == []
    assert edit.read_file(f"/boot/initrd.img-{IMAGE_KERNEL}", 1 << 20) == initrd


def test_auto_names_an_image_initrd_without_ext4_it_cannot_replace(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, image_kernel(initrd_with("init"), modules=False))
    assert kernel.STEP.apply(edit, target(tree, options())) == [
        f"test: its initrd /boot/initrd.img-{IMAGE_KERNEL} has no ext4 module (built "
        f"host-only?), and oci2vm's cannot replace it: no modules.dep for kernel "
        f"{IMAGE_KERNEL} in the image"
    ]


def test_initrd_image_keeps_even_an_initrd_without_ext4_and_says_so(tmp_path: Path) -> None:
    initrd = initrd_with("init")
    tree, edit = with_data(tmp_path, image_kernel(initrd))
    chosen = goal(target(tree, options()), initrd=InitrdChoice.IMAGE)
    assert kernel.STEP.apply(edit, chosen) == [
        f"test: --initrd image: its initrd /boot/initrd.img-{IMAGE_KERNEL} has no ext4 "
        "module (built host-only?)"
    ]
    assert edit.read_file(f"/boot/initrd.img-{IMAGE_KERNEL}", 1 << 20) == initrd


@pytest.mark.parametrize("cut", [30, -10])
def test_a_damaged_image_initrd_is_named_not_trusted(tmp_path: Path, cut: int) -> None:
    # A corrupt or truncated initrd panics the kernel ("VFS: Unable to mount root fs");
    # only a form oci2vm cannot read (lz4) is trusted as it is.
    initrd = initrd_with(f"usr/{IMAGE_MODULES}/kernel/fs/ext4/ext4.ko", "init")
    damaged = initrd[:cut] + (b"\xff" * 40 if cut > 0 else b"")
    tree, edit = with_data(tmp_path, image_kernel(damaged, modules=False))
    (note,) = kernel.STEP.apply(edit, target(tree, options()))
    assert note.startswith(f"test: its initrd /boot/initrd.img-{IMAGE_KERNEL} is damaged (a ")
    assert note.endswith(
        f"and oci2vm's cannot replace it: no modules.dep for kernel {IMAGE_KERNEL} in the image"
    )
    lz4 = b"\x02\x21\x4c\x18" + initrd[4:]
    tree, edit = with_data(tmp_path / "lz4", image_kernel(lz4, modules=False))
    assert kernel.STEP.apply(edit, target(tree, options())) == []


def test_an_image_kernel_without_initrd_or_modules_dep_says_so(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, image_kernel(None, modules=False))
    assert kernel.STEP.apply(edit, target(tree, options())) == [
        "test: its kernel has no initrd to find the root by UUID, and oci2vm's cannot "
        f"replace it: no modules.dep for kernel {IMAGE_KERNEL} in the image"
    ]
    with pytest.raises(Oci2vmError, match=r"no modules\.dep"):
        kernel.STEP.apply(edit, goal(target(tree, options()), initrd=InitrdChoice.OWN))


@pytest.mark.parametrize("arch", list(Arch))
def test_kernel_image_without_one_names_the_fix(tmp_path: Path, arch: Arch) -> None:
    tree = flattened(tmp_path, [directory("boot"), file("boot/config-6.1", b"")])
    chosen = goal(target(tree, options(), arch), kernel=KernelChoice(KernelKind.IMAGE))
    with pytest.raises(Oci2vmError) as raised:
        kernel.STEP.apply(TreeEditor(tree, FS_TIME), chosen)
    message = str(raised.value)
    assert "the image has no kernel" in message and "drop --kernel image" in message
    assert "\n" not in message


def test_the_mode_is_app_exactly_when_the_image_has_no_init(tmp_path: Path) -> None:
    bare = target(flattened(tmp_path / "a", [file("bin/sh")]), options())
    assert kernel.mode_of(bare) is InitMode.APP
    system = target(flattened(tmp_path / "b", [file("sbin/init")]), options())
    assert kernel.mode_of(system) is InitMode.SYSTEM
    assert kernel.mode_of(goal(system, init=InitMode.APP)) is InitMode.APP
    with pytest.raises(Oci2vmError, match=r"has no init.*--init app"):
        kernel.mode_of(goal(bare, init=InitMode.SYSTEM))


def test_run_takes_an_image_whose_init_is_only_busybox_for_an_app_as_docker_run(
    tmp_path: Path,
) -> None:
    """Every Alpine-based image links /sbin/init to busybox: `run nginx:alpine` booted it
    to a login nobody could use, where docker runs its Cmd. `build`, --init system, an
    image whose Cmd is its init, OpenRC or another init keep the system."""
    busybox = [
        file("bin/busybox", b"\x7fELF"),
        directory("sbin"),
        symlink("sbin/init", "/bin/busybox"),
    ]
    alpine = target(flattened(tmp_path / "a", busybox), options())
    assert kernel.mode_of(goal(alpine)) is InitMode.SYSTEM  # build, check
    assert kernel.mode_of(goal(alpine, docker_run=True)) is InitMode.APP  # run
    booting = dataclasses.replace(
        goal(alpine, docker_run=True),
        image_config=dataclasses.replace(IMAGE_CONFIG, cmd=("/sbin/init",)),
    )
    assert kernel.mode_of(booting) is InitMode.SYSTEM
    assert kernel.mode_of(goal(alpine, docker_run=True, init=InitMode.SYSTEM)) is InitMode.SYSTEM
    systemd = target(flattened(tmp_path / "b", [file("sbin/init")]), options())
    assert kernel.mode_of(goal(systemd, docker_run=True)) is InitMode.SYSTEM


def test_a_system_image_gets_the_package_indexes_initramfs_and_links(tmp_path: Path) -> None:
    (tree, notes, streamed), base = inject(
        tmp_path, [file("sbin/init"), directory("lib"), file("etc/os-release", b"ID=debian\n")]
    )
    assert base.mode is InitMode.SYSTEM
    assert notes == [f"injected {tmp_path / 'linux-image.deb'} with oci2vm's initramfs "
                     "(system mode)"]  # fmt: skip
    ext4 = entry(tree, f"/lib/modules/{VERSION}/kernel/fs/ext4/ext4.ko")  # type: ignore[arg-type]
    assert isinstance(ext4.data, StreamedData)
    assert streamed[ext4] == module("ext4", needs=("jbd2",))
    assert isinstance(entry(tree, f"/boot/vmlinuz-{VERSION}").data, StreamedData)  # type: ignore[arg-type]
    dep = content(tree, f"/lib/modules/{VERSION}/modules.dep")  # type: ignore[arg-type]
    assert b"kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n" in dep
    assert content(tree, f"/lib/modules/{VERSION}/modules.dep.bin")[:4] == b"\xb0\x07\xf4\x57"  # type: ignore[arg-type]
    initrd = gzip.decompress(content(tree, f"/boot/initrd.img-{VERSION}"))  # type: ignore[arg-type]
    assert b"kernel/fs/jbd2/jbd2.ko" in initrd and b"kernel/fs/ext4/ext4.ko" in initrd
    assert b"kernel/sound/snd.ko" not in initrd  # only what the initramfs needs
    assert BUSYBOX in initrd
    for link, path in (("/vmlinuz", f"boot/vmlinuz-{VERSION}"),
                       ("/initrd.img", f"boot/initrd.img-{VERSION}")):  # fmt: skip
        node = entry(tree, link)  # type: ignore[arg-type]
        assert (node.kind, node.target) == (Kind.SYMLINK, path.encode())


def test_compressed_modules_reach_the_initramfs_decompressed_under_their_ko_names(
    tmp_path: Path,
) -> None:
    """insmod and the kernel tell a compressed module by its name: ELF bytes named .ko.xz
    made every load say 'not an xz compressed module' first."""
    (tree, _notes, _streamed), _base = inject(tmp_path, [file("sbin/init")], xz=True)
    assert entry(tree, f"/lib/modules/{VERSION}/kernel/fs/ext4/ext4.ko.xz")  # type: ignore[arg-type]
    initrd = gzip.decompress(content(tree, f"/boot/initrd.img-{VERSION}"))  # type: ignore[arg-type]
    assert b"kernel/fs/ext4/ext4.ko\n" in initrd  # the list of modules to load
    assert b".ko.xz" not in initrd
    assert module("ext4", needs=("jbd2",)) in initrd


def test_an_app_image_gets_the_kernel_but_not_the_modules(tmp_path: Path) -> None:
    (tree, _notes, _streamed), base = inject(tmp_path, [file("bin/sh")])
    assert base.mode is InitMode.APP
    assert lookup(tree.root, f"/lib/modules/{VERSION}") is None  # type: ignore[attr-defined]
    initrd = gzip.decompress(content(tree, f"/boot/initrd.img-{VERSION}"))  # type: ignore[arg-type]
    assert b"SPEC_MODE='app'" in initrd and b"/etc/os-release" in initrd  # the workload
    assert b"kernel/fs/ext4/ext4.ko" in initrd


def test_a_direct_boot_keeps_kernel_and_initramfs_out_of_the_tree(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [file("bin/sh")])
    deb = kernel_deb(tmp_path)
    outputs = BootOutputs()
    base = goal(target(tree, options()), kernel=KernelChoice.parse(str(deb)))
    base = dataclasses.replace(base, mode=InitMode.APP, boot_outputs=outputs)
    kernel.STEP.apply(TreeEditor(tree, FS_TIME, sink=lambda _i, _d: None), base)
    assert (outputs.version, outputs.kernel) == (VERSION, b"MZ fake kernel")
    assert gzip.decompress(outputs.initrd).count(b"ext4.ko") >= 1
    assert lookup(tree.root, "/boot") is None and lookup(tree.root, "/vmlinuz") is None


def test_a_kernel_without_ext4_is_refused(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [file("bin/sh")])
    deb = tmp_path / "k.deb"
    deb.write_bytes(kernel_deb(tmp_path, with_ext4=False).read_bytes())
    base = goal(target(tree, options()), kernel=KernelChoice.parse(str(deb)))
    base = dataclasses.replace(base, mode=InitMode.APP)
    with pytest.raises(Oci2vmError, match=r"has no ext4.*cannot mount the root"):
        kernel.STEP.apply(TreeEditor(tree, FS_TIME, sink=lambda _i, _d: None), base)


def test_initrd_image_with_an_injected_kernel_is_refused(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [file("sbin/init")])
    base = goal(target(tree, options()), initrd=InitrdChoice.IMAGE)
    with pytest.raises(Oci2vmError, match="--initrd image"):
        kernel.STEP.apply(TreeEditor(tree, FS_TIME), base)


def test_the_suite_follows_the_image_release_else_stable(tmp_path: Path) -> None:
    trixie = flattened(tmp_path / "a", [file("etc/os-release",
                                             b"ID=debian\nVERSION_CODENAME=trixie\n")])  # fmt: skip
    assert kernel.debian_suite(target(trixie, options())) == "trixie"
    alpine = flattened(tmp_path / "b", [file("etc/os-release", b"ID=alpine\n")])
    assert kernel.debian_suite(target(alpine, options())) == "stable"
    chosen = goal(target(alpine, options()), kernel=KernelChoice.parse("debian:sid:cloud-amd64"))
    assert kernel.debian_suite(chosen) == "sid"
    # forky's and sid's kernels come split into packages oci2vm does not read yet
    sid = flattened(tmp_path / "c", [file("etc/os-release", b"ID=debian\nVERSION_CODENAME=sid\n")])
    assert kernel.debian_suite(target(sid, options())) == "trixie"


def test_the_build_plan_says_what_a_build_would_boot(tmp_path: Path) -> None:
    with_kernel = flattened(tmp_path / "a", [file("sbin/init"), file("boot/vmlinuz-6.1")])
    assert kernel.build_plan(target(with_kernel, options())) == {
        "mode": "system", "kernel": "the image's 6.1 (/boot/vmlinuz-6.1)",
        "initrd": "oci2vm's initramfs, with the kernel's own modules; the image's own if "
        "that cannot be built (no modules.dep, no busybox)",
        "init": "the image's sysvinit (/sbin/init)",
    }  # fmt: skip
    bare = flattened(tmp_path / "b", [file("bin/sh")])
    plan = kernel.build_plan(target(bare, options()))
    assert plan["mode"] == "app" and plan["initrd"] == "oci2vm's initramfs"
    assert plan["kernel"].startswith("injected: Debian's linux-image-amd64 from stable")
    refused = kernel.build_plan(goal(target(bare, options()), init=InitMode.SYSTEM))
    assert "has no init" in refused["error"]


def test_kernel_choice_parses_every_form(tmp_path: Path) -> None:
    deb = tmp_path / "k.deb"
    deb.write_bytes(b"")
    assert KernelChoice.parse("debian") == KernelChoice(KernelKind.DEBIAN)
    assert KernelChoice.parse("debian:trixie:cloud-amd64") == KernelChoice(
        KernelKind.DEBIAN, "trixie", "cloud-amd64"
    )
    assert KernelChoice.parse(str(deb)).kind is KernelKind.DEB
    assert KernelChoice.parse("oci:./kernels:6.1") == KernelChoice(
        KernelKind.SOURCE, location="oci:./kernels:6.1"
    )
    with pytest.raises(Oci2vmError):
        KernelChoice.parse("debian:a:b:c")
    with pytest.raises(Oci2vmError):
        KernelChoice.parse("")


def test_workload_options_on_a_system_image_are_refused_not_dropped(tmp_path: Path) -> None:
    system = target(flattened(tmp_path, [file("sbin/init")]), options())
    for change, named in (
        ({"user": "alice:pw:sudo"}, r"--user set .* \(a login user: --add-user NAME"),
        ({"env": ("A=1",), "workdir": "/srv"}, r"--env, --workdir set an app image's workload"),
        ({"command": ("sh",)}, r"a command to run set"),
        ({"volumes": (Volume(tmp_path, "/data"),)}, r"--volume set"),
    ):
        chosen = dataclasses.replace(system, config=dataclasses.replace(system.config, **change))
        with pytest.raises(Oci2vmError, match=named) as raised:
            kernel.mode_of(chosen)
        assert "--init app" in str(raised.value) and "\n" not in str(raised.value)
        app = dataclasses.replace(
            chosen, config=dataclasses.replace(chosen.config, init=InitMode.APP)
        )
        assert kernel.mode_of(app) is InitMode.APP


def test_a_package_known_by_its_digest_is_read_once_for_every_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an injection derives from an archive's package (module metadata, depmod's
    indexes, the initramfs's modules) is cached by its digest: the next build inflates no
    module and reads the package once, and writes the same tree."""
    store = BlobStore(tmp_path / "cache")
    deb = kernel_deb(tmp_path, xz=True)
    digest = f"sha256:{hashlib.sha256(deb.read_bytes()).hexdigest()}"
    ref = BlobRef(deb, 0, deb.stat().st_size, digest)
    monkeypatch.setattr(
        kernel, "kernel_source", lambda _t: kernel.KernelSource((ref,), "linux-image-test", None)
    )
    built = []
    for run in range(2):
        tree = flattened(tmp_path / f"img{run}", [file("sbin/init"), directory("lib")])
        goal = dataclasses.replace(target(tree, options()), image_config=IMAGE_CONFIG, store=store)
        goal = dataclasses.replace(goal, mode=kernel.mode_of(goal))
        edit = TreeEditor(tree, FS_TIME, sink=lambda _inode, _data: None)
        kernel.STEP.apply(edit, goal)
        built.append({
            path: tree.content(inode) for path, inode in walk(tree.root) if inode.kind is Kind.FILE
        })  # fmt: skip

        def refuse(*_args: object) -> bytes:
            raise AssertionError("a module was inflated again")

        monkeypatch.setattr(kernelpkg, "decompress_module", refuse)
        monkeypatch.setattr(kernelpkg, "_members", _once(kernelpkg._members))
    assert built[0] == built[1]
    assert f"/boot/initrd.img-{VERSION}" in built[1]
    assert f"/lib/modules/{VERSION}/modules.dep.bin" in built[1]
    assert sorted(p.name.split("-")[0] for p in (store.root / "kernels").glob("*/*/*")) == [
        "indices", "modinfo", "modules"
    ]  # fmt: skip


def _once(members: Any) -> Any:
    """_members that may be called once: the package's single read of a cached build."""
    calls: list[int] = []

    def wrapped(*args: object) -> Any:
        calls.append(1)
        assert len(calls) == 1, "the package was read twice"
        return members(*args)

    return wrapped


def split_kernel(tmp_path: Path, parts: tuple[str, ...] = ("base", "binary", "modules", "image")
                 ) -> tuple[BlobRef, ...]:  # fmt: skip
    """kernel_deb's files as forky splits them, each package known by its digest:
    linux-base-V (config, modules.*), linux-binary-V (vmlinuz), linux-modules-V, and
    linux-image-V (documentation only), all under /usr/lib/modules/V."""
    base = f"./usr/lib/modules/{VERSION}"
    whole = {name.replace(f"./lib/modules/{VERSION}", base): data for name, data in
             build_files(xz=True).items()}  # fmt: skip
    files = {
        "base": {f"{base}/config": whole.pop(f"./boot/config-{VERSION}"),
                 **{n: d for n, d in whole.items() if "/modules." in n}},
        "binary": {f"{base}/vmlinuz": whole.pop(f"./boot/vmlinuz-{VERSION}")},
        "modules": {n: d for n, d in whole.items() if ".ko" in n},
        "image": {f"./usr/share/doc/linux-image-{VERSION}/copyright": b"GPL-2"},
    }  # fmt: skip
    refs = []
    for part in parts:
        data = build_deb(f"linux-{part}-{VERSION}", "6.1.1-1", files[part])
        path = tmp_path / f"linux-{part}.deb"
        path.write_bytes(data)
        refs.append(BlobRef(path, 0, len(data), f"sha256:{hashlib.sha256(data).hexdigest()}"))
    return tuple(refs)


@pytest.mark.parametrize("init", ["sbin/init", "bin/sh"])
def test_a_split_kernels_packages_are_read_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, init: str
) -> None:
    """forky's kernel comes in four packages; vmlinuz and config are in the modules'
    directory, linked into /boot by linux-base's postinst hook (cp -l), which oci2vm does
    in the hook's stead: the kernel is at /boot/vmlinuz-V (and, with the modules, the same
    inode at /lib/modules/V/vmlinuz), the modules and depmod's indexes where kmod looks."""
    debs = split_kernel(tmp_path)
    source = kernel.KernelSource(debs, "linux-image-split", None)
    monkeypatch.setattr(kernel, "kernel_source", lambda _t: source)
    tree = flattened(
        tmp_path / "img", [file(init), symlink("lib", "usr/lib"), directory("usr/lib")]
    )
    goal = dataclasses.replace(target(tree, options()), image_config=IMAGE_CONFIG,
                               store=BlobStore(tmp_path / "cache"))  # fmt: skip
    goal = dataclasses.replace(goal, mode=kernel.mode_of(goal))
    notes = kernel.STEP.apply(TreeEditor(tree, FS_TIME, sink=lambda _i, _d: None), goal)
    assert notes == [f"injected linux-image-split with oci2vm's initramfs ({goal.mode.value} mode)"]
    vmlinuz = entry(tree, f"/boot/vmlinuz-{VERSION}")
    assert vmlinuz.kind is Kind.FILE and vmlinuz.size == len(b"MZ fake kernel")
    assert entry(tree, f"/boot/config-{VERSION}").size == len(b"CONFIG_EXT4_FS=m\n")
    assert entry(tree, "/vmlinuz").target == f"boot/vmlinuz-{VERSION}".encode()
    initrd = gzip.decompress(content(tree, f"/boot/initrd.img-{VERSION}"))
    assert module("ext4", needs=("jbd2",)) in initrd
    modules = f"/usr/lib/modules/{VERSION}"
    if goal.mode is InitMode.SYSTEM:
        assert entry(tree, f"{modules}/vmlinuz") == vmlinuz  # one inode: a hardlink
        assert entry(tree, f"{modules}/kernel/fs/ext4/ext4.ko.xz").kind is Kind.FILE
        dep = content(tree, f"{modules}/modules.dep")
        assert b"kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz\n" in dep
        assert entry(tree, f"/usr/share/doc/linux-image-{VERSION}/copyright")
    else:
        assert lookup(tree.root, modules) is None


def test_a_split_kernels_binary_package_alone_is_named_with_the_way_around(
    tmp_path: Path,
) -> None:
    """forky's linux-binary-V holds the kernel only: given alone (--kernel FILE.deb), it
    is named as a part, with the form that reads every part."""
    debs = split_kernel(tmp_path, ("binary",))
    with pytest.raises(Oci2vmError, match=r"none of its modules.*--kernel debian:SUITE"):
        kernelpkg.read_kernel_package(debs, "linux-binary-test", None, modules_into_tree=False)


def test_a_split_kernel_boots_directly_from_its_packages(tmp_path: Path) -> None:
    """oci2vm run boots the kernel's bytes: none of it goes into the tree."""
    tree = flattened(tmp_path, [file("bin/sh")])
    edit = TreeEditor(tree, FS_TIME, sink=lambda _i, _d: None)
    files = kernelpkg.read_kernel_package(
        split_kernel(tmp_path), "k", edit, modules_into_tree=False, kernel_into_tree=False
    )
    assert (files.version, files.kernel, files.split) == (VERSION, b"MZ fake kernel", True)
    assert lookup(tree.root, f"/boot/vmlinuz-{VERSION}") is None
