"""The bootcfg step: grub.cfg with every kernel of the image, newest first, its root by
UUID and the console on the architecture's first serial port; first, when the image keeps
Debian's /vmlinuz and /initrd.img links, a default entry that follows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci2vm.arch import Arch
from oci2vm.prepare import bootcfg
from oci2vm.tree.model import Tree
from support.layouts import Member, directory, file, symlink
from support.prepared import ROOT_UUID, content, entry, flattened, run_step, systemd_members


@pytest.mark.parametrize("arch", list(Arch))
def test_grub_cfg_lists_the_kernels_newest_first_on_the_arch_console(
    tmp_path: Path, arch: Arch
) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("boot"),
            file("boot/vmlinuz-6.1.0-9-amd64", b"k"),
            file("boot/initrd.img-6.1.0-9-amd64", b"i"),
            file("boot/vmlinuz-6.1.0-10-amd64", b"k"),
        ],
    )
    assert run_step(tree, bootcfg.STEP, arch=arch) == []
    cfg = content(tree, "/boot/grub/grub.cfg").decode()
    entries = [line for line in cfg.splitlines() if line.startswith("menuentry")]
    assert entries == ["menuentry 'Linux 6.1.0-10-amd64' {", "menuentry 'Linux 6.1.0-9-amd64' {"]
    assert (
        f"root=UUID={ROOT_UUID} rw console=tty0 console={arch.facts.serial_console},115200" in cfg
    )
    assert "initrd16 /boot/initrd.img-6.1.0-9-amd64" in cfg
    grub_dir = entry(tree, "/boot/grub")
    assert (grub_dir.mode, grub_dir.uid) == (0o755, 0)


OLD, NEW = "6.1.0-9-amd64", "6.1.0-10-amd64"


def debian_boot(*links: Member) -> list[Member]:
    """/boot with two kernels and their initrds, and `links` beside them."""
    return [
        directory("boot"),
        file(f"boot/vmlinuz-{OLD}", b"k"),
        file(f"boot/initrd.img-{OLD}", b"i"),
        file(f"boot/vmlinuz-{NEW}", b"k"),
        file(f"boot/initrd.img-{NEW}", b"i"),
        *links,
    ]


def menu(tree: Tree) -> tuple[list[str], list[str]]:
    """grub.cfg's menu entries and the (linux16, initrd16) lines of its first entry."""
    cfg = content(tree, "/boot/grub/grub.cfg").decode()
    titles = [line for line in cfg.splitlines() if line.startswith(("menuentry", "set fallback"))]
    first = cfg.split("menuentry", 2)[1]
    loads = [line.strip().split(" root=")[0] for line in first.splitlines() if "16 " in line]
    return titles, loads


def test_debians_relative_links_at_root_are_the_default_entry_with_the_kernels_as_fallbacks(
    tmp_path: Path,
) -> None:
    links = [
        symlink("vmlinuz", f"boot/vmlinuz-{NEW}"),
        symlink("initrd.img", f"boot/initrd.img-{NEW}"),
    ]
    tree = flattened(tmp_path, debian_boot(*links))
    run_step(tree, bootcfg.STEP)
    assert menu(tree) == (
        [
            "set fallback='1 2'",
            "menuentry 'Linux (newest installed, via /vmlinuz)' {",
            f"menuentry 'Linux {NEW}' {{",
            f"menuentry 'Linux {OLD}' {{",
        ],
        ["linux16 /vmlinuz", "initrd16 /initrd.img"],
    )


def test_absolute_links_in_boot_with_link_in_boot_are_followed(tmp_path: Path) -> None:
    links = [
        directory("etc"),
        file("etc/kernel-img.conf", b"# kernel-img.conf\ndo_symlinks = yes\nlink_in_boot = Yes\n"),
        symlink("boot/vmlinuz", f"/boot/vmlinuz-{OLD}"),
        symlink("boot/initrd.img", f"/boot/initrd.img-{OLD}"),
        # stale links at / that linux-update-symlinks no longer moves
        symlink("vmlinuz", f"boot/vmlinuz-{NEW}"),
        symlink("initrd.img", f"boot/initrd.img-{NEW}"),
    ]
    tree = flattened(tmp_path, debian_boot(*links))
    run_step(tree, bootcfg.STEP)
    titles, loads = menu(tree)
    assert titles[1] == "menuentry 'Linux (newest installed, via /boot/vmlinuz)' {"
    assert loads == ["linux16 /boot/vmlinuz", "initrd16 /boot/initrd.img"]


def test_links_in_boot_are_followed_when_root_has_none(tmp_path: Path) -> None:
    links = [
        symlink("boot/vmlinuz", f"vmlinuz-{NEW}"),
        symlink("boot/initrd.img", f"initrd.img-{NEW}"),
    ]
    tree = flattened(tmp_path, debian_boot(*links))
    run_step(tree, bootcfg.STEP)
    assert menu(tree)[1] == ["linux16 /boot/vmlinuz", "initrd16 /boot/initrd.img"]


@pytest.mark.parametrize(
    "links",
    [
        [],  # no links: not the Debian convention
        [symlink("vmlinuz", f"boot/vmlinuz-{NEW}")],  # no initrd link: it would boot without
        [symlink("vmlinuz", f"boot/vmlinuz-{NEW}"), symlink("initrd.img", "boot/initrd.img-9")],
        [file("vmlinuz", b"k"), file("initrd.img", b"i")],  # copies: nothing moves them
        [
            directory("etc"),
            file("etc/kernel-img.conf", b"do_symlinks = no\n"),
            symlink("vmlinuz", f"boot/vmlinuz-{NEW}"),
            symlink("initrd.img", f"boot/initrd.img-{NEW}"),
        ],
    ],
    ids=["none", "no-initrd-link", "dangling-initrd", "regular-files", "do_symlinks-no"],
)
def test_without_maintained_links_the_kernels_entries_alone_are_written(
    tmp_path: Path, links: list[Member]
) -> None:
    tree = flattened(tmp_path, debian_boot(*links))
    run_step(tree, bootcfg.STEP)
    assert menu(tree) == (
        [f"menuentry 'Linux {NEW}' {{", f"menuentry 'Linux {OLD}' {{"],
        [f"linux16 /boot/vmlinuz-{NEW}", f"initrd16 /boot/initrd.img-{NEW}"],
    )


SELINUX = b"SELINUX=enforcing\nSELINUXTYPE=targeted\n"


def selinux_image(config: bytes, *, policy: bool = True, labelled: bool = False) -> list[Member]:
    """A Fedora-like tree; `labelled`: every file and directory has a label, as the layers
    of an image built with them (bootc's) have."""
    pax = {"SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0"} if labelled else None
    members = [directory("boot", pax=pax),
               file("boot/vmlinuz-6.8.5-301.fc40.x86_64", b"k", pax=pax),
               directory("etc", pax=pax),
               file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", pax=pax),
               directory("etc/selinux", pax=pax),
               file("etc/selinux/config", config, pax=pax)]  # fmt: skip
    if policy:
        members += [directory("etc/selinux/targeted", pax=pax),
                    directory("etc/selinux/targeted/policy", pax=pax)]  # fmt: skip
    return members


def test_an_enforcing_selinux_on_unlabelled_files_boots_permissive(tmp_path: Path) -> None:
    """The kernel would deny logins and services on files without labels (layers carry
    none): the disk boots permissive and says how to enforce."""
    tree = flattened(tmp_path / "a", selinux_image(SELINUX))
    notes = run_step(tree, bootcfg.STEP)
    assert len(notes) == 1 and "boots it permissive" in notes[0]
    cfg = content(tree, "/boot/grub/grub.cfg").decode()
    assert " enforcing=0" in cfg
    for name, members in (
        ("permissive", selinux_image(b"SELINUX=permissive\n")),
        ("no-policy", selinux_image(SELINUX, policy=False)),
        ("labelled", selinux_image(SELINUX, labelled=True)),
    ):
        tree = flattened(tmp_path / name, members)
        assert run_step(tree, bootcfg.STEP) == [], name
        assert "enforcing=0" not in content(tree, "/boot/grub/grub.cfg").decode(), name


def test_a_labelled_image_with_unlabelled_files_boots_permissive_too(tmp_path: Path) -> None:
    """What the preparation steps add carries no label (the kernel's unlabeled_t, which
    sshd or NetworkManager may not read): boot permissive, and say which."""
    members = [*selinux_image(SELINUX, labelled=True), file("etc/hostname", b"h1\n")]
    tree = flattened(tmp_path, members)
    notes = run_step(tree, bootcfg.STEP)
    assert len(notes) == 1 and "files without a label (1, the first /etc/hostname)" in notes[0]
    assert " enforcing=0" in content(tree, "/boot/grub/grub.cfg").decode()


def test_a_systemd_image_boots_without_firstboot_prompts(tmp_path: Path) -> None:
    """The machine-id is "uninitialized": systemd's first boot, on which systemd-firstboot
    asks on the console for a missing time zone or locale and waits for a key. The kernel
    line turns its prompts off for systemd images only."""
    kernel = [directory("boot"), file("boot/vmlinuz-6.1.0-10-amd64", b"k")]
    tree = flattened(tmp_path / "systemd", [*systemd_members(), *kernel])
    run_step(tree, bootcfg.STEP)
    linux = [line for line in content(tree, "/boot/grub/grub.cfg").decode().splitlines()
             if line.strip().startswith("linux")]  # fmt: skip
    assert linux and all(line.endswith(" systemd.firstboot=off") for line in linux)
    tree = flattened(tmp_path / "other", kernel)
    run_step(tree, bootcfg.STEP)
    assert "firstboot" not in content(tree, "/boot/grub/grub.cfg").decode()
