"""Each row of prepare/distro.py's table on a synthetic tree laid out as that distribution
installs itself: the row os-release selects, the kernel and initrd found, the init
detected, the network stack chosen, where the serial getty is written, and /etc/shadow.
An unknown distribution gets a note naming it; a distroless image boots in app mode."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oci2vm.config import InitMode
from oci2vm.prepare import distro, kernel, network
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Tree, lookup
from oci2vm.tree.osinfo import describe
from support.initlayouts import ALPINE_INITTAB, busybox, openrc_init
from support.layouts import Member, directory, file, symlink
from support.prepared import FS_TIME, content, flattened, options, prepare, systemd_members, target

ELF = b"\x7fELF"


def release(text: str) -> Member:
    return file("etc/os-release", text.encode())


def program(path: str) -> Member:
    return file(path, ELF, mode=0o755)


def debian() -> list[Member]:
    return [*systemd_members(merged_usr=True), release("ID=debian\nVERSION_ID=12\n"),
            directory("boot"), file("boot/vmlinuz-6.1.0-9-amd64", b"k"),
            file("boot/initrd.img-6.1.0-9-amd64", b"i"), directory("usr/sbin"),
            program("usr/sbin/ifup"), directory("etc/network")]  # fmt: skip


def ubuntu() -> list[Member]:
    return [*systemd_members(merged_usr=True), release("ID=ubuntu\nID_LIKE=debian\n"),
            directory("boot"), file("boot/vmlinuz-6.8.0-31-generic", b"k"),
            file("boot/initrd.img-6.8.0-31-generic", b"i"), directory("usr/sbin"),
            program("usr/sbin/netplan"), directory("etc/netplan")]  # fmt: skip


def alpine() -> list[Member]:
    return [*busybox(ALPINE_INITTAB), release('ID=alpine\nPRETTY_NAME="Alpine Linux v3.20"\n'),
            symlink("sbin/udhcpc", "/bin/busybox"), file("etc/shadow", b"root:*::0:::::\n"),
            directory("boot"), file("boot/vmlinuz-virt", b"k"),
            file("boot/initramfs-virt", b"i"), directory("lib/modules"),
            directory("lib/modules/6.6.58-0-virt"),
            file("lib/modules/6.6.58-0-virt/modules.dep", b"")]  # fmt: skip


def fedora(os_release: str = "ID=fedora\nVERSION_ID=40\n") -> list[Member]:
    version = "6.8.5-301.fc40.x86_64"
    return [*systemd_members(merged_usr=True), release(os_release), directory("boot"),
            file(f"boot/initramfs-{version}.img", b"i"), directory("usr/lib/modules"),
            directory(f"usr/lib/modules/{version}"),
            file(f"usr/lib/modules/{version}/vmlinuz", b"k"),
            directory("usr/sbin"), program("usr/sbin/NetworkManager")]  # fmt: skip


def arch() -> list[Member]:
    return [*systemd_members(merged_usr=True), release("ID=arch\n"), directory("boot"),
            file("boot/vmlinuz-linux", b"k"), file("boot/initramfs-linux.img", b"i"),
            program("usr/lib/systemd/systemd-networkd"), directory("usr/lib/modules"),
            directory("usr/lib/modules/6.11.5-arch1-1"),
            file("usr/lib/modules/6.11.5-arch1-1/vmlinuz", b"k"),  # the package's copy
            file("usr/lib/modules/6.11.5-arch1-1/pkgbase", b"linux\n")]  # fmt: skip


def void() -> list[Member]:
    return [directory("usr"), directory("usr/bin"), directory("usr/sbin"), directory("sbin"),
            directory("etc"), release('ID="void"\nPRETTY_NAME="Void Linux"\n'),
            file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            file("etc/shadow", b"root::19000::::::\n", mode=0o600),
            program("usr/bin/runit-init"), symlink("sbin/init", "../usr/bin/runit-init"),
            program("usr/bin/agetty"), program("usr/sbin/dhcpcd"), directory("etc/sv"),
            directory("etc/sv/dhcpcd"), file("etc/sv/dhcpcd/run", b"#!/bin/sh\n", mode=0o755),
            directory("boot"), file("boot/vmlinuz-6.6.58_1", b"k"),
            file("boot/initramfs-6.6.58_1.img", b"i")]  # fmt: skip


def gentoo() -> list[Member]:
    return [*openrc_init(), release('ID=gentoo\nPRETTY_NAME="Gentoo Linux"\n'),
            file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n"),
            file("etc/shadow", b"root:*:19000::::::\n", mode=0o640),
            program("usr/sbin/dhcpcd"), file("etc/init.d/dhcpcd", b"#!/sbin/openrc-run\n"),
            directory("boot"), file("boot/vmlinuz-6.6.58-gentoo-dist", b"k"),
            file("boot/initramfs-6.6.58-gentoo-dist.img", b"i")]  # fmt: skip


SERIAL_GETTY = "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
RELEASES = {"alpine": "6.6.58-0-virt", "arch": "6.11.5-arch1-1"}
ROWS = {
    # name: (members, row, init, stack, (kernel path, initrd path), where the getty is)
    "debian": (debian, "Debian", "systemd", network.Stack.IFUPDOWN,
               ("/boot/vmlinuz-6.1.0-9-amd64", "/boot/initrd.img-6.1.0-9-amd64"), SERIAL_GETTY),
    "ubuntu": (ubuntu, "Ubuntu", "systemd", network.Stack.NETPLAN,
               ("/boot/vmlinuz-6.8.0-31-generic", "/boot/initrd.img-6.8.0-31-generic"),
               SERIAL_GETTY),
    "alpine": (alpine, "Alpine", "busybox", network.Stack.UDHCPC,
               ("/boot/vmlinuz-virt", "/boot/initramfs-virt"), "/etc/inittab"),
    "fedora": (fedora, "Fedora/RHEL", "systemd", network.Stack.NETWORKMANAGER,
               ("/lib/modules/6.8.5-301.fc40.x86_64/vmlinuz",  # /lib is a link to usr/lib
                "/boot/initramfs-6.8.5-301.fc40.x86_64.img"), SERIAL_GETTY),
    "arch": (arch, "Arch", "systemd", network.Stack.NETWORKD,
             ("/boot/vmlinuz-linux", "/boot/initramfs-linux.img"), SERIAL_GETTY),
    "void": (void, "Void", "runit", network.Stack.DHCPCD,
             ("/boot/vmlinuz-6.6.58_1", "/boot/initramfs-6.6.58_1.img"),
             "/etc/runit/runsvdir/default/oci2vm-getty-ttyS0"),
    "gentoo": (gentoo, "Gentoo", "openrc", network.Stack.DHCPCD,
               ("/boot/vmlinuz-6.6.58-gentoo-dist", "/boot/initramfs-6.6.58-gentoo-dist.img"),
               "/etc/runlevels/default/agetty.ttyS0"),
}  # fmt: skip


def notes_for(tree: Tree) -> list[str]:
    return prepare(tree, options(password="pw"))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_distribution_is_prepared_as_its_row_says(tmp_path: Path, name: str) -> None:
    members, row_name, init, stack, (kernel_path, initrd_path), getty = ROWS[name]
    tree = flattened(tmp_path, members())
    info = describe(tree)
    row = distro.conventions(info.os_release)
    assert row is not None and row.name == row_name
    assert len(info.kernels) == 1  # Arch's copy in its modules directory is the same kernel
    assert (info.kernels[0].path, info.kernels[0].initrd) == (kernel_path, initrd_path)
    # the release, by which its modules are found: not the flavour in a name (virt, linux)
    assert info.kernels[0].version == RELEASES.get(name, info.kernels[0].version)
    assert info.init == init and init in row.init
    assert network.detect(TreeEditor(tree, FS_TIME), info.init, info.openrc) is stack
    assert not [n for n in notes_for(tree) if "not a distribution" in n]
    assert lookup(tree.root, getty) is not None
    if getty == "/etc/inittab":
        assert b"ttyS0::respawn:" in content(tree, getty)
    assert lookup(tree.root, row.shadow) is not None


def test_id_like_selects_the_row_of_a_derivative() -> None:
    rows = {
        text: distro.conventions({"ID": id_, "ID_LIKE": like})
        for text, id_, like in (
            ("rocky", "rocky", "rhel centos fedora"),
            ("mint", "linuxmint", "ubuntu debian"),
            ("manjaro", "manjaro", "arch"),
            ("funtoo", "funtoo", "gentoo"),
            ("slackware", "slackware", ""),
        )
    }
    assert {k: v.name if v else None for k, v in rows.items()} == {
        "rocky": "Fedora/RHEL", "mint": "Ubuntu", "manjaro": "Arch", "funtoo": "Gentoo",
        "slackware": None,
    }  # fmt: skip


def test_a_rhel_like_tree_is_prepared_as_fedora(tmp_path: Path) -> None:
    tree = flattened(tmp_path, fedora('ID="rocky"\nID_LIKE="rhel centos fedora"\n'))
    assert not [n for n in notes_for(tree) if "not a distribution" in n]
    keyfile = "/etc/NetworkManager/system-connections/oci2vm-dhcp.nmconnection"
    assert lookup(tree.root, keyfile) is not None


def test_an_unknown_distribution_is_named_in_a_note(tmp_path: Path) -> None:
    slackware = [*openrc_init(), release('ID=slackware\nPRETTY_NAME="Slackware 15.0"\n')]
    tree = flattened(tmp_path, slackware)
    assert (
        "Slackware 15.0 (ID=slackware) is not a distribution oci2vm knows the conventions of "
        "(Debian, Ubuntu, Alpine, Fedora/RHEL, Arch, Void, Gentoo, distroless): it is "
        "prepared from the files found (init: openrc); if it does not boot, `--init app` "
        "runs its Entrypoint under oci2vm's own init"
    ) in notes_for(tree)


def test_distroless_boots_in_app_mode(tmp_path: Path) -> None:
    os_release = 'PRETTY_NAME="Distroless"\nNAME="Debian GNU/Linux"\nID="debian"\n'
    members = [directory("etc"), file("etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\n"),
               release(os_release)]  # fmt: skip
    tree = flattened(tmp_path, members)
    goal = target(tree, options())
    assert distro.conventions(goal.os.os_release) is distro.DISTROLESS
    assert kernel.mode_of(goal) is InitMode.APP
    assert not distro.STEP.applies(dataclasses.replace(goal, mode=InitMode.APP))


def test_a_bootc_images_initramfs_beside_its_kernel_is_found(tmp_path: Path) -> None:
    """bootc (Fedora/CentOS image mode) keeps both in /usr/lib/modules/V, none in /boot."""
    version = "6.11.4-301.fc41.x86_64"
    base = f"usr/lib/modules/{version}"
    members = [directory("usr"), directory("usr/lib"), directory("usr/lib/modules"),
               directory(base), file(f"{base}/vmlinuz", b"k"),
               file(f"{base}/initramfs.img", b"i")]  # fmt: skip
    kernels = describe(flattened(tmp_path, members)).kernels
    assert [(k.version, k.path, k.initrd) for k in kernels] == [
        (version, f"/{base}/vmlinuz", f"/{base}/initramfs.img")
    ]


def test_kernels_named_by_flavour_take_the_release_their_name_ends_in(tmp_path: Path) -> None:
    members = [directory("boot"), directory("lib"), directory("lib/modules")]
    for flavour, release, size in (("lts", "6.6.58-0-lts", 3), ("virt", "6.6.58-0-virt", 4)):
        members += [file(f"boot/vmlinuz-{flavour}", b"k" * size),
                    file(f"boot/initramfs-{flavour}", b"i"),
                    directory(f"lib/modules/{release}")]  # fmt: skip
    members.append(file("boot/vmlinuz-custom", b"k"))  # no modules of its own: as it is
    kernels = describe(flattened(tmp_path / "a", members)).kernels
    assert sorted((k.version, k.path, k.initrd) for k in kernels) == [
        ("6.6.58-0-lts", "/boot/vmlinuz-lts", "/boot/initramfs-lts"),
        ("6.6.58-0-virt", "/boot/vmlinuz-virt", "/boot/initramfs-virt"),
        ("custom", "/boot/vmlinuz-custom", None),
    ]
    # a release whose modules are another release's, and another kernel of its own
    # beside a flavour's name: neither is taken for the other
    base = "usr/lib/modules/6.8.5-301.fc40.x86_64"
    others = [directory("boot"), file("boot/vmlinuz-6.1.0-18-amd64", b"k"), directory("lib"),
              directory("lib/modules"), directory("lib/modules/6.1.0-20-amd64"),
              file("boot/vmlinuz-custom", b"kk"), directory("usr"), directory("usr/lib"),
              directory("usr/lib/modules"), directory(base), file(f"{base}/vmlinuz", b"k"),
              file(f"{base}/initramfs.img", b"i")]  # fmt: skip
    kernels = describe(flattened(tmp_path / "b", others)).kernels
    assert sorted((k.version, k.path) for k in kernels) == [
        ("6.1.0-18-amd64", "/boot/vmlinuz-6.1.0-18-amd64"),
        ("6.8.5-301.fc40.x86_64", f"/{base}/vmlinuz"),
        ("custom", "/boot/vmlinuz-custom"),
    ]


def test_alpine_with_openrc_networking_keeps_its_interfaces_and_gets_no_second_client(
    tmp_path: Path,
) -> None:
    """OpenRC's networking service runs ifup on /etc/network/interfaces: a udhcpc line in
    the inittab would be a second DHCP client on the same NIC."""
    interfaces = b"auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"
    members = [*alpine(), file("sbin/openrc", ELF, mode=0o755),
               symlink("sbin/ifup", "/bin/busybox"), directory("etc/network"),
               file("etc/network/interfaces", interfaces),
               file("etc/init.d/networking", b"#!/sbin/openrc-run\n", mode=0o755),
               file("etc/init.d/devfs", b"#!/sbin/openrc-run\n", mode=0o755)]  # fmt: skip
    tree = flattened(tmp_path, members)
    info = describe(tree)
    assert (
        network.detect(TreeEditor(tree, FS_TIME), info.init, info.openrc) is network.Stack.IFUPDOWN
    )
    notes_for(tree)
    assert b"udhcpc" not in content(tree, "/etc/inittab")
    assert content(tree, "/etc/network/interfaces") == interfaces
    assert lookup(tree.root, "/etc/runlevels/boot/networking") is not None  # run, as it is


def test_dhcpcd_as_a_service_is_the_stack_of_void_and_gentoo(tmp_path: Path) -> None:
    """Void's default network is its dhcpcd service; Gentoo's OpenRC has one too."""
    from support.initlayouts import openrc_init

    dhcpcd = program("usr/sbin/dhcpcd")
    void = [directory("usr"), directory("usr/bin"), directory("usr/sbin"), directory("sbin"),
            directory("etc"), file("usr/bin/runit-init", ELF, mode=0o755),
            symlink("sbin/init", "../usr/bin/runit-init"), dhcpcd, directory("etc/sv"),
            directory("etc/sv/dhcpcd"),
            file("etc/sv/dhcpcd/run", b"#!/bin/sh\n", mode=0o755)]  # fmt: skip
    gentoo = [*openrc_init(), dhcpcd, file("etc/init.d/dhcpcd", b"#!/sbin/openrc-run\n")]
    for name, members, link in (
        ("void", void, "/etc/runit/runsvdir/default/dhcpcd"),
        ("gentoo", gentoo, "/etc/runlevels/default/dhcpcd"),
    ):
        tree = flattened(tmp_path / name, members)
        info = describe(tree)
        stack = network.detect(TreeEditor(tree, FS_TIME), info.init, info.openrc)
        assert stack is network.Stack.DHCPCD, name
        notes = prepare(tree, {"root_password": "pw", "ssh_keys": (), "hostname": "vm1"})
        assert lookup(tree.root, link) is not None, name
        assert not [n for n in notes if "network" in n], name
