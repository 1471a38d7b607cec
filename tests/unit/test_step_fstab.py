"""The fstab step: root mounted read-write by UUID, replacing the image's fstab; grown by
systemd-growfs where systemd has it, its partition by systemd-repart where that is there too;
a note when nothing in the image can grow it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from oci2vm.prepare import fstab
from oci2vm.tree.model import lookup
from support.layouts import Member, directory, file, symlink
from support.prepared import FS_TIME, FSTAB, ROOT_UUID, content, entry, flattened, run_step

ELF = b"\x7fELF"


def test_fstab_mounts_root_by_uuid_and_replaces_the_images(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("etc"),
            file("etc/fstab", b"/dev/sda1 / ext3 ro 0 0\n", mode=0o600),
            directory("sbin"),
            file("sbin/resize2fs", ELF, mode=0o755),
        ],
    )
    assert run_step(tree, fstab.STEP) == []
    assert content(tree, "/etc/fstab") == FSTAB
    written = entry(tree, "/etc/fstab")
    assert (written.mode, written.uid, written.gid) == (0o644, 0, 0)
    assert written.mtime_ns == FS_TIME * 1_000_000_000


def test_fstab_is_written_where_the_image_has_no_etc(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [file("hello")])
    run_step(tree, fstab.STEP)
    assert content(tree, "/etc/fstab") == FSTAB


def test_root_is_grown_by_systemd_growfs_where_the_image_has_it(tmp_path: Path) -> None:
    # merged /usr: /lib is a symlink to usr/lib, as in bookworm
    tree = flattened(
        tmp_path,
        [
            directory("usr"),
            directory("usr/lib"),
            directory("usr/lib/systemd"),
            file("usr/lib/systemd/systemd-growfs", ELF, mode=0o755),
            symlink("lib", "usr/lib"),
        ],
    )
    assert run_step(tree, fstab.STEP) == []
    assert (
        content(tree, "/etc/fstab")
        == (
            "# Written by oci2vm.\n"
            "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>\n"
            f"UUID={ROOT_UUID}  /  ext4  rw,errors=remount-ro,x-systemd.growfs  0  1\n"
        ).encode()
    )


def test_an_image_without_resize2fs_or_systemd_growfs_gets_a_note(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("bin"), file("bin/busybox", ELF, mode=0o755)])
    assert run_step(tree, fstab.STEP) == [
        "the root filesystem will not grow with its disk: the image has neither resize2fs "
        "(e2fsprogs) nor systemd-growfs (the root partition still grows at boot)"
    ]
    assert content(tree, "/etc/fstab") == FSTAB


def test_no_growth_note_for_run_s_direct_boot_or_app_mode(tmp_path: Path) -> None:
    """oci2vm run boots an overlay of a cached root (no partition); app mode grows no
    filesystem: the note would be noise on every run."""
    from oci2vm.config import InitMode
    from oci2vm.prepare.step import BootOutputs
    from oci2vm.tree.editor import TreeEditor
    from support.prepared import options, target

    tree = flattened(tmp_path, [directory("bin"), file("bin/busybox", ELF, mode=0o755)])
    goal = target(tree, options())
    for other in (
        dataclasses.replace(goal, boot_outputs=BootOutputs()),
        dataclasses.replace(goal, mode=InitMode.APP),
    ):
        assert fstab.STEP.apply(TreeEditor(tree, FS_TIME), other) == []
    assert fstab.STEP.apply(TreeEditor(tree, FS_TIME), goal) != []


def repart_members(*, static_link: bool = True) -> list[Member]:
    members = [
        directory("usr"),
        directory("usr/bin"),
        file("usr/bin/systemd-repart", ELF, mode=0o755),
        directory("usr/lib"),
        directory("usr/lib/systemd"),
        file("usr/lib/systemd/systemd-growfs", ELF, mode=0o755),
        directory("usr/lib/systemd/system"),
        file("usr/lib/systemd/system/systemd-repart.service", b"[Unit]\n"),
        symlink("lib", "usr/lib"),
    ]
    if static_link:
        members += [
            directory("usr/lib/systemd/system/sysinit.target.wants"),
            symlink(
                "usr/lib/systemd/system/sysinit.target.wants/systemd-repart.service",
                "../systemd-repart.service",
            ),
        ]
    return members


def test_systemd_repart_gets_the_root_partition_to_grow(tmp_path: Path) -> None:
    tree = flattened(tmp_path, repart_members())
    assert run_step(tree, fstab.STEP) == []
    conf = content(tree, fstab.REPART_FILE)
    assert conf.endswith(b"[Partition]\nType=root\n")
    assert lookup(tree.root, "/etc/systemd/system/sysinit.target.wants") is None  # static


def test_systemd_repart_is_enabled_where_the_image_does_not_link_it(tmp_path: Path) -> None:
    tree = flattened(tmp_path, repart_members(static_link=False))
    run_step(tree, fstab.STEP)
    link = entry(tree, "/etc/systemd/system/sysinit.target.wants/systemd-repart.service")
    assert link.target == b"/lib/systemd/system/systemd-repart.service"  # as enable_unit


def test_no_repart_file_for_mbr_a_bare_filesystem_or_an_image_with_its_own(
    tmp_path: Path,
) -> None:
    from oci2vm.config import Config, OutputFormat, PartitionTable
    from oci2vm.tree.editor import TreeEditor
    from support.prepared import options, target

    own = [directory("etc"), directory("etc/repart.d"), file("etc/repart.d/10-x.conf", b"")]
    for n, (members, config) in enumerate(
        [
            (repart_members(), Config(table=PartitionTable.MBR)),
            (repart_members(), Config(format=OutputFormat.EXT4)),
            ([*repart_members(), *own], Config()),
        ]
    ):
        tree = flattened(tmp_path / str(n), members)
        goal = dataclasses.replace(target(tree, options()), config=config)
        fstab.STEP.apply(TreeEditor(tree, FS_TIME), goal)
        assert lookup(tree.root, fstab.REPART_FILE) is None, config
        assert b"x-systemd.growfs" in content(tree, "/etc/fstab")
