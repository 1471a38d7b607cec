"""The distributions whose conventions oci2vm knows, selected from /etc/os-release's ID
and ID_LIKE, and a note for a system image of any other.

The steps decide from the files an image has, never from its name (a Debian image with
openrc is prepared as openrc); this table says what that comes to for each distribution
as it is usually installed, which tests/unit/test_distro_conventions.py checks on a
synthetic tree per row. Facts from the distributions' packages: Debian's and Ubuntu's
kernel packages (/boot/vmlinuz-V, initrd.img-V made by initramfs-tools), Alpine's
linux-FLAVOR and alpine-baselayout's /etc/inittab, Fedora's kernel-core
(/lib/modules/V/vmlinuz, dracut's /boot/initramfs-V.img), Arch's linux and mkinitcpio.
"""

from __future__ import annotations

from dataclasses import dataclass

from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import OsInfo


@dataclass(frozen=True, slots=True)
class Conventions:
    name: str
    ids: tuple[str, ...]  # os-release ID or ID_LIKE words that select the row
    kernel: str  # where its kernel and initrd are
    init: str  # what /sbin/init usually is
    network: str  # the stack the network step finds
    getty: str  # where the serial console's getty is configured
    shadow: str = "/etc/shadow"


TABLE = (
    Conventions(
        "Debian", ("debian",),
        kernel="/boot/vmlinuz-V, /boot/initrd.img-V",
        init="systemd; sysvinit-core (with sysv-rc, or openrc under it) or runit-init",
        network="ifupdown (/etc/network/interfaces), systemd-networkd without it",
        getty="serial-getty@PORT.service; /etc/inittab for sysvinit; /etc/sv for runit",
    ),
    Conventions(
        "Ubuntu", ("ubuntu",),
        kernel="/boot/vmlinuz-V, /boot/initrd.img-V",
        init="systemd",
        network="netplan (/etc/netplan, rendered for systemd-networkd)",
        getty="serial-getty@PORT.service",
    ),
    Conventions(
        "Alpine", ("alpine",),
        kernel="/boot/vmlinuz-FLAVOR, /boot/initramfs-FLAVOR",
        init="busybox init (running OpenRC when it is installed)",
        network="busybox udhcpc, from an /etc/inittab sysinit line",
        getty="/etc/inittab (busybox syntax)",
    ),
    Conventions(
        "Fedora/RHEL", ("fedora", "rhel", "centos"),
        kernel="/lib/modules/V/vmlinuz, /boot/initramfs-V.img",
        init="systemd",
        network="NetworkManager (a keyfile)",
        getty="serial-getty@PORT.service",
    ),
    Conventions(
        "Arch", ("arch",),
        kernel="/boot/vmlinuz-linux, /boot/initramfs-linux.img",
        init="systemd",
        network="systemd-networkd",
        getty="serial-getty@PORT.service",
    ),
    Conventions(
        "Void", ("void",),
        kernel="/boot/vmlinuz-V, /boot/initramfs-V.img",
        init="runit (runit-init; services in /etc/sv, enabled in /etc/runit/runsvdir/default)",
        network="dhcpcd (its runit service)",
        getty="/etc/sv/agetty-PORT, enabled",
    ),
    Conventions(
        "Gentoo", ("gentoo",),
        kernel="/boot/vmlinuz-V, /boot/initramfs-V.img (dist-kernel)",
        init="openrc (under sysvinit's /etc/inittab, or openrc-init)",
        network="dhcpcd (its OpenRC service)",
        getty="/etc/inittab; with openrc-init, OpenRC's agetty.PORT",
    ),
)  # fmt: skip
# Google's distroless images say PRETTY_NAME="Distroless" (their ID is debian's): no init,
# no shell, no login, so they boot in app mode, where oci2vm's init does DHCP.
DISTROLESS = Conventions(
    "distroless", (),
    kernel="none (Debian's is injected)",
    init="none: app mode, oci2vm's init runs the Entrypoint",
    network="oci2vm's init (DHCP)",
    getty="none",
    shadow="/etc/shadow (no login: accounts are not used)",
)  # fmt: skip
KNOWN = ", ".join([*(row.name for row in TABLE), DISTROLESS.name])


def conventions(os_release: dict[str, str]) -> Conventions | None:
    """The row ID selects, else the first ID_LIKE word that selects one, else None."""
    if os_release.get("PRETTY_NAME", "").lower().startswith("distroless"):
        return DISTROLESS
    words = [os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()]
    for word in words:
        for row in TABLE:
            if word.lower() in row.ids:
                return row
    return None


def unsupported_note(os: OsInfo) -> str | None:
    """A note naming a distribution that os-release names and the table does not (an
    image without os-release names none: nothing to say)."""
    found = os.os_release.get("ID")
    if not found or conventions(os.os_release) is not None:
        return None
    return (
        f"{os.pretty_name} (ID={found}) is not a distribution oci2vm knows the conventions "
        f"of ({KNOWN}): "
        f"it is prepared from the files found (init: {os.init_name}); "
        "if it does not boot, `--init app` runs its Entrypoint under oci2vm's own init"
    )


def apply(_edit: TreeEditor, target: Target) -> list[str]:
    note = unsupported_note(target.os)
    return [note] if note else []


STEP = Step("distro", apply, applies=system_mode)
