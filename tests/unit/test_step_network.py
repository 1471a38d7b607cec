"""The network step: DHCP or a static address on the first NIC, for the stack each image
has, found from its files; images that configure a NIC already are left alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oci2vm.cli import config_from, parse
from oci2vm.config import Config, InitMode, NetworkChoice, NetworkMode
from oci2vm.errors import Oci2vmError
from oci2vm.prepare import netfiles, network
from oci2vm.prepare.network import Stack, detect
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, Tree, lookup
from support.layouts import Member, directory, file, symlink
from support.prepared import (
    FS_TIME,
    NO_NETWORK_NOTE,
    content,
    entry,
    flattened,
    options,
    systemd_members,
    target,
    with_data,
)

STATIC = NetworkChoice.parse("static:10.0.2.15/24,10.0.2.2,10.0.2.3")
NETWORKD_UNIT = (
    b"[Unit]\nDescription=Network Configuration\n\n[Install]\nWantedBy=multi-user.target\n"
    b"Also=systemd-networkd.socket systemd-networkd-wait-online.service\n"
    b"Alias=dbus-org.freedesktop.network1.service\n"
)
SOCKET_UNIT = b"[Install]\nWantedBy=sockets.target\n"
WAIT_ONLINE_UNIT = b"[Install]\nWantedBy=network-online.target\n"
RESOLVED_UNIT = (
    b"[Install]\nWantedBy=multi-user.target\nAlias=dbus-org.freedesktop.resolve1.service\n"
)
NETWORKING_UNIT = b"[Install]\nWantedBy=multi-user.target network-online.target\n"
SYSV_NETWORKING = b"#!/bin/sh\n### BEGIN INIT INFO\n# Default-Start:     S\n### END INIT INFO\n"


def networkd_members(*, resolved: bool, udev: bool = True) -> list[Member]:
    members = [
        *systemd_members(udev=udev),
        file("lib/systemd/systemd-networkd", b"\x7fELF", mode=0o755),
        file("lib/systemd/system/systemd-networkd.service", NETWORKD_UNIT),
        file("lib/systemd/system/systemd-networkd.socket", SOCKET_UNIT),
        file("lib/systemd/system/systemd-networkd-wait-online.service", WAIT_ONLINE_UNIT),
        file("etc/resolv.conf", b"nameserver 192.0.2.53\n"),
    ]
    if resolved:
        members.append(file("lib/systemd/system/systemd-resolved.service", RESOLVED_UNIT))
    return members


def run(tree: Tree, edit: TreeEditor | None = None, choice: str = "dhcp") -> list[str]:
    goal = dataclasses.replace(
        target(tree, options()), config=Config(network=NetworkChoice.parse(choice))
    )
    if not network.STEP.applies(goal):
        return []
    return network.STEP.apply(edit or TreeEditor(tree, FS_TIME), goal)


def link_target(tree: Tree, path: str) -> bytes | None:
    inode = entry(tree, path)
    assert inode.kind is Kind.SYMLINK, path
    return inode.target


def assert_root_file(tree: Tree, path: str, mode: int = 0o644) -> None:
    inode = entry(tree, path)
    assert (inode.kind, inode.mode, inode.uid, inode.gid) == (Kind.FILE, mode, 0, 0), path


def test_networkd_gets_a_network_file_and_is_enabled_with_resolved(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, networkd_members(resolved=True))
    assert run(tree, edit) == []
    assert content(tree, network.NETWORKD_FILE) == (
        b"# Written by oci2vm (--network): the first Ethernet NIC, whatever its name.\n"
        b"[Match]\nType=ether\nKind=!*\n\n[Network]\nDHCP=yes\n"
    )
    assert_root_file(tree, network.NETWORKD_FILE)
    units = "/etc/systemd/system"
    assert link_target(tree, f"{units}/multi-user.target.wants/systemd-networkd.service") == (
        b"/lib/systemd/system/systemd-networkd.service"
    )
    assert link_target(tree, f"{units}/dbus-org.freedesktop.network1.service") == (
        b"/lib/systemd/system/systemd-networkd.service"
    )
    assert link_target(tree, f"{units}/sockets.target.wants/systemd-networkd.socket") == (
        b"/lib/systemd/system/systemd-networkd.socket"
    )
    assert link_target(tree, f"{units}/multi-user.target.wants/systemd-resolved.service") == (
        b"/lib/systemd/system/systemd-resolved.service"
    )
    assert lookup(tree.root, f"{units}/network-online.target.wants") is None  # no wait-online
    assert link_target(tree, "/etc/resolv.conf") == b"../run/systemd/resolve/stub-resolv.conf"


def test_networkd_without_udev_gets_links_marked_initialized_before_it_starts(
    tmp_path: Path,
) -> None:
    """networkd leaves a link pending until udev's database has it: without udev, a
    oneshot gives each link the empty entry udev would have written."""
    tree, edit = with_data(tmp_path, networkd_members(resolved=True, udev=False))
    run(tree, edit)
    unit = f"/etc/systemd/system/{network.UDEV_STAND_IN}"
    text = content(tree, unit)
    assert b"Before=systemd-networkd.service\n" in text
    assert b"ConditionPathExists=!/run/udev/control\n" in text
    # systemd expands $VAR in ExecStart=: the shell's own variables are written $$.
    assert b'read i < "$$f"; [ -e /run/udev/data/n$$i ] || : > /run/udev/data/n$$i' in text
    assert_root_file(tree, unit)
    wants = f"/etc/systemd/system/systemd-networkd.service.wants/{network.UDEV_STAND_IN}"
    assert link_target(tree, wants) == unit.encode()


def test_networkd_with_udev_needs_no_stand_in(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, networkd_members(resolved=True))
    run(tree, edit)
    assert lookup(tree.root, f"/etc/systemd/system/{network.UDEV_STAND_IN}") is None
    assert lookup(tree.root, "/etc/systemd/system/systemd-networkd.service.wants") is None


def test_networkd_without_resolved_gets_a_unit_that_writes_dhcp_dns(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, networkd_members(resolved=False))
    assert run(tree, edit) == []
    units = "/etc/systemd/system"
    assert content(tree, "/etc/resolv.conf") == b"nameserver 192.0.2.53\n"  # until a lease
    assert lookup(tree.root, f"{units}/multi-user.target.wants/systemd-resolved.service") is None
    assert_root_file(tree, network.RESOLV_SCRIPT, mode=0o755)
    assert content(tree, network.RESOLV_SCRIPT) == netfiles.NETWORKD_RESOLV_SCRIPT
    service = content(tree, f"{units}/{network.RESOLV_UNIT}.service")
    assert f"ExecStart=/bin/sh {network.RESOLV_SCRIPT}\n".encode() in service
    path_unit = content(tree, f"{units}/{network.RESOLV_UNIT}.path")
    assert b"PathChanged=/run/systemd/netif/links\n" in path_unit
    assert b"Before=systemd-networkd.service\n" in path_unit
    wants = f"{units}/systemd-networkd.service.wants/{network.RESOLV_UNIT}.path"
    assert link_target(tree, wants) == f"{units}/{network.RESOLV_UNIT}.path".encode()


def test_networkd_resolv_unit_only_where_dhcp_and_no_resolved(tmp_path: Path) -> None:
    for resolved, choice in ((True, "dhcp"), (False, "static:10.0.2.15/24,10.0.2.2")):
        tree, edit = with_data(tmp_path / f"{resolved}", networkd_members(resolved=resolved))
        run(tree, edit, choice)
        assert lookup(tree.root, network.RESOLV_SCRIPT) is None
        assert lookup(tree.root, f"/etc/systemd/system/{network.RESOLV_UNIT}.path") is None


def test_networkd_static_address_gateway_and_dns(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, networkd_members(resolved=False))
    assert run(tree, edit, "static:10.0.2.15/24,10.0.2.2,10.0.2.3") == []
    assert content(tree, network.NETWORKD_FILE).endswith(
        b"[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n"
    )
    assert content(tree, "/etc/resolv.conf").endswith(b"nameserver 10.0.2.3\n")


def test_networkd_image_with_its_own_network_file_is_left_alone(tmp_path: Path) -> None:
    members = [
        *networkd_members(resolved=True),
        directory("etc/systemd"),
        directory("etc/systemd/network"),
        file("etc/systemd/network/10-eth.network", b"[Match]\nName=eth0\n[Network]\nDHCP=yes\n"),
    ]
    tree, edit = with_data(tmp_path, members)
    assert run(tree, edit) == []
    assert lookup(tree.root, network.NETWORKD_FILE) is None
    assert lookup(tree.root, "/etc/systemd/system") is None


def ifupdown_members(interfaces: bytes | None, *, init: str = "systemd") -> list[Member]:
    members = systemd_members() if init == "systemd" else sysvinit_members()
    members += [
        file("sbin/ifup", b"\x7fELF", mode=0o755),
        symlink("sbin/ifquery", "ifup"),
        file("sbin/dhclient", b"\x7fELF", mode=0o755),
        directory("etc/network"),
        directory("etc/network/interfaces.d"),
    ]
    if interfaces is not None:
        members.append(file("etc/network/interfaces", interfaces))
    if init == "systemd":
        members.append(file("lib/systemd/system/networking.service", NETWORKING_UNIT))
    else:
        members.append(file("etc/init.d/networking", SYSV_NETWORKING, mode=0o755))
    return members


def sysvinit_members() -> list[Member]:
    return [
        directory("sbin"),
        file("sbin/init", b"\x7fELF", mode=0o755),
        directory("etc"),
        directory("etc/init.d"),
        directory("usr"),
    ]


DEBIAN_INTERFACES = b"source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n"


def test_ifupdown_gets_a_dropin_for_the_first_nic_and_networking_enabled(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, ifupdown_members(DEBIAN_INTERFACES))
    assert run(tree, edit) == []
    assert content(tree, network.INTERFACES_DROPIN) == (
        b"# Written by oci2vm (--network): the first Ethernet NIC, whatever its name.\n"
        b"auto /e*/1=oci2vm\niface oci2vm inet dhcp\n"
    )
    assert_root_file(tree, network.INTERFACES_DROPIN)
    assert content(tree, "/etc/network/interfaces") == DEBIAN_INTERFACES
    wants = "/etc/systemd/system/{}.wants/networking.service"
    for target_name in ("multi-user.target", "network-online.target"):
        assert link_target(tree, wants.format(target_name)) == (
            b"/lib/systemd/system/networking.service"
        )


def test_ifupdown_static_on_sysvinit_links_the_networking_script(tmp_path: Path) -> None:
    tree = flattened(tmp_path, ifupdown_members(None, init="sysvinit"))
    assert detect(TreeEditor(tree, FS_TIME), target(tree, options()).os.init) is Stack.IFUPDOWN
    assert run(tree, choice="static:10.0.2.15/24,10.0.2.2,10.0.2.3") == []
    assert content(tree, "/etc/network/interfaces") == (
        b"auto lo\niface lo inet loopback\n\n"
        b"# Written by oci2vm (--network): the first Ethernet NIC, whatever its name.\n"
        b"auto /e*/1=oci2vm\niface oci2vm inet static\n\taddress 10.0.2.15\n"
        b"\tnetmask 255.255.255.0\n"
        b"\tgateway 10.0.2.2\n\tdns-nameservers 10.0.2.3\n"
    )
    assert link_target(tree, "/etc/rcS.d/S40networking") == b"../init.d/networking"
    assert content(tree, "/etc/resolv.conf").endswith(b"nameserver 10.0.2.3\n")


def test_ifupdown_with_a_dhcp_stanza_is_left_alone(tmp_path: Path) -> None:
    interfaces = DEBIAN_INTERFACES + b"\nallow-hotplug eth0\niface eth0 inet dhcp\n"
    tree = flattened(tmp_path, ifupdown_members(interfaces))
    assert run(tree) == []
    assert content(tree, "/etc/network/interfaces") == interfaces
    assert lookup(tree.root, network.INTERFACES_DROPIN) is None
    # only what runs the image's own stanza at boot, which ifupdown's postinst enables
    wants = "/etc/systemd/system/multi-user.target.wants/networking.service"
    assert lookup(tree.root, wants) is not None


def test_ifupdown_without_a_dhcp_client_says_so(tmp_path: Path) -> None:
    members = [m for m in ifupdown_members(DEBIAN_INTERFACES) if m.info.name != "sbin/dhclient"]
    tree = flattened(tmp_path, members)
    assert run(tree) == [
        "ifupdown has no DHCP client to run (isc-dhcp-client, dhcpcd or udhcpc): "
        "the NIC will get no address"
    ]


def test_alpine_openrc_gets_eth0_and_networking_in_the_boot_runlevel(tmp_path: Path) -> None:
    tree = flattened(
        tmp_path,
        [
            directory("bin"),
            file("bin/busybox", b"\x7fELF", mode=0o755),
            directory("sbin"),
            symlink("sbin/init", "openrc-init"),
            file("sbin/openrc-init", b"\x7fELF", mode=0o755),
            file("sbin/openrc", b"\x7fELF", mode=0o755),
            file("sbin/ifupdown", b"\x7fELF", mode=0o755),  # ifupdown-ng
            symlink("sbin/ifup", "ifupdown"),
            symlink("sbin/ifquery", "ifupdown"),
            symlink("sbin/udhcpc", "/bin/busybox"),
            directory("etc"),
            directory("etc/network"),
            directory("etc/init.d"),
            file("etc/init.d/networking", b"#!/sbin/openrc-run\n", mode=0o755),
            file("etc/init.d/net.lo", b"#!/sbin/openrc-run\n", mode=0o755),
            file("etc/init.d/devfs", b"#!/sbin/openrc-run\n", mode=0o755),
        ],
    )
    assert run(tree) == []
    assert content(tree, "/etc/network/interfaces") == (
        b"auto lo\niface lo inet loopback\n\n"
        b"# Written by oci2vm (--network): the first Ethernet NIC, whatever its name.\n"
        b"auto eth0\niface eth0 inet dhcp\n"
    )
    # setup-alpine's runlevel for it
    assert link_target(tree, "/etc/runlevels/boot/networking") == b"/etc/init.d/networking"


def nm_members() -> list[Member]:
    return [
        *systemd_members(),
        directory("usr/sbin"),
        file("usr/sbin/NetworkManager", b"\x7fELF", mode=0o755),
        file(
            "lib/systemd/system/NetworkManager.service",
            b"[Install]\nWantedBy=multi-user.target\n"
            b"Also=NetworkManager-dispatcher.service NetworkManager-wait-online.service\n",
        ),
        file("lib/systemd/system/NetworkManager-wait-online.service", WAIT_ONLINE_UNIT),
    ]


def test_network_manager_gets_a_keyfile_matching_any_ethernet_nic(tmp_path: Path) -> None:
    tree, edit = with_data(tmp_path, nm_members())
    assert run(tree, edit) == []
    text = content(tree, network.KEYFILE)
    assert_root_file(tree, network.KEYFILE, 0o600)
    assert b"type=ethernet\n" in text and b"interface-name" not in text
    assert b"[ipv4]\nmethod=auto\n" in text and b"[ipv6]\nmethod=auto\n" in text
    assert link_target(
        tree, "/etc/systemd/system/multi-user.target.wants/NetworkManager.service"
    ) == (b"/lib/systemd/system/NetworkManager.service")
    assert lookup(tree.root, "/etc/systemd/system/network-online.target.wants") is None
    # Deterministic: a second build writes the same profile.
    again = flattened(tmp_path / "again", nm_members())
    run(again)
    assert content(again, network.KEYFILE) == text


def test_network_manager_static_is_manual(tmp_path: Path) -> None:
    tree = flattened(tmp_path, nm_members())
    run(tree, choice="static:10.0.2.15/24,10.0.2.2,10.0.2.3")
    assert b"[ipv4]\nmethod=manual\naddress1=10.0.2.15/24,10.0.2.2\ndns=10.0.2.3;\n" in content(
        tree, network.KEYFILE
    )


def netplan_members(*extra: Member) -> list[Member]:
    return [
        *networkd_members(resolved=True),
        directory("usr/sbin"),
        file("usr/sbin/netplan", b"#!/usr/bin/python3\n", mode=0o755),
        directory("etc/netplan"),
        *extra,
    ]


def test_netplan_gets_a_yaml_matching_e_star(tmp_path: Path) -> None:
    tree = flattened(tmp_path, netplan_members())
    assert run(tree) == []
    assert content(tree, network.NETPLAN_FILE) == (
        b"# Written by oci2vm (--network): the first Ethernet NIC, whatever its name.\n"
        b'network:\n  version: 2\n  ethernets:\n    oci2vm:\n      match:\n        name: "e*"\n'
        b"      dhcp4: true\n"
    )
    assert_root_file(tree, network.NETPLAN_FILE, 0o600)
    assert lookup(tree.root, network.NETWORKD_FILE) is None  # netplan renders for networkd


def test_netplan_static_has_addresses_routes_and_nameservers(tmp_path: Path) -> None:
    tree = flattened(tmp_path, netplan_members())
    run(tree, choice="static:10.0.2.15/24,10.0.2.2,10.0.2.3")
    assert content(tree, network.NETPLAN_FILE).endswith(
        b'      addresses:\n        - "10.0.2.15/24"\n'
        b'      routes:\n        - to: "0.0.0.0/0"\n          via: "10.0.2.2"\n'
        b'      nameservers:\n        addresses: ["10.0.2.3"]\n'
    )


def test_netplan_with_its_own_yaml_is_left_alone(tmp_path: Path) -> None:
    tree = flattened(tmp_path, netplan_members(file("etc/netplan/01-netcfg.yaml", b"network:\n")))
    assert run(tree) == []
    assert lookup(tree.root, network.NETPLAN_FILE) is None


def busybox_members(inittab: bytes | None) -> list[Member]:
    members = [
        directory("bin"),
        file("bin/busybox", b"\x7fELF", mode=0o755),
        directory("sbin"),
        symlink("sbin/init", "../bin/busybox"),
        symlink("sbin/udhcpc", "../bin/busybox"),
        directory("etc"),
    ]
    return members + ([file("etc/inittab", inittab)] if inittab is not None else [])


def test_busybox_init_gets_a_udhcpc_line_and_keeps_the_defaults(tmp_path: Path) -> None:
    tree = flattened(tmp_path, busybox_members(None))
    assert run(tree) == []
    inittab = content(tree, "/etc/inittab")
    assert inittab.startswith(b"::sysinit:/etc/init.d/rcS\n")
    assert inittab.endswith(b"::sysinit:/sbin/udhcpc -b -i eth0 -s /etc/oci2vm/udhcpc.script\n")
    assert_root_file(tree, network.UDHCPC_SCRIPT, 0o755)
    assert b'ip addr add "$ip/${mask:-24}"' in content(tree, network.UDHCPC_SCRIPT)
    edit = TreeEditor(tree, FS_TIME)
    run(tree, edit)  # a second run adds nothing
    assert content(tree, "/etc/inittab") == inittab


def test_busybox_init_static_appends_to_the_images_inittab(tmp_path: Path) -> None:
    tree = flattened(tmp_path, busybox_members(b"::sysinit:/etc/init.d/rcS"))
    run(tree, choice="static:10.0.2.15/24,10.0.2.2")
    assert content(tree, "/etc/inittab") == (
        b"::sysinit:/etc/init.d/rcS\n::sysinit:/bin/sh -c 'ip link set eth0 up && "
        b"ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2'\n"
    )
    assert lookup(tree.root, network.UDHCPC_SCRIPT) is None


def test_an_image_without_a_stack_gets_a_note_and_nothing_written(tmp_path: Path) -> None:
    tree = flattened(tmp_path, systemd_members())
    assert run(tree) == [NO_NETWORK_NOTE]
    assert lookup(tree.root, "/etc/systemd/network") is None


def test_no_init_gets_no_network_note(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc")])
    assert run(tree) == []


def test_none_writes_nothing_and_app_mode_is_not_prepared(tmp_path: Path) -> None:
    tree = flattened(tmp_path, networkd_members(resolved=True))
    assert run(tree, choice="none") == []
    assert lookup(tree.root, network.NETWORKD_FILE) is None
    goal = dataclasses.replace(target(tree, options()), mode=InitMode.APP)
    assert not network.STEP.applies(goal)


def test_cli_parses_network_choices() -> None:
    def network_of(*words: str) -> NetworkChoice:
        return config_from(parse(["build", "x", "-o", "d.img", *words])).network

    assert network_of().mode is NetworkMode.DHCP
    assert network_of("--network", "none").mode is NetworkMode.NONE
    assert network_of("--network", "static:10.0.2.15/24,10.0.2.2,10.0.2.3") == STATIC
    assert NetworkChoice(NetworkMode.STATIC, "10.0.2.15/24", "10.0.2.2", ("10.0.2.3",)) == STATIC
    for command in ("run", "check", "inspect"):
        args = parse([command, "--network", "none", "x"])
        assert args.network.mode is NetworkMode.NONE


@pytest.mark.parametrize(
    "value",
    ["static", "static:10.0.2.15,10.0.2.2", "static:10.0.2.15/24", "static:10.0.2.300/24,10.0.2.2",
     "static:10.0.2.15/24,192.168.1.1", "static:10.0.2.15/24,10.0.2.2,dns", "wifi"],
)  # fmt: skip
def test_bad_network_values_are_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(Oci2vmError):
        NetworkChoice.parse(value)
    with pytest.raises(SystemExit) as exit_:
        parse(["build", "x", "-o", "d.img", "--network", value])
    assert exit_.value.code == 2
    assert "--network" in capsys.readouterr().err


def test_a_static_address_under_dhcpcd_is_a_global_option(tmp_path: Path) -> None:
    """Options before any `interface` block apply to every interface, whatever its name."""
    service = b"[Service]\nExecStart=/usr/sbin/dhcpcd -q\n[Install]\nWantedBy=multi-user.target\n"
    conf = b"hostname\ninterface wlan0\nnohook wpa_supplicant\n"
    members = [*systemd_members(), file("usr/sbin/dhcpcd", b"\x7fELF", mode=0o755),
               file("lib/systemd/system/dhcpcd.service", service),
               file("etc/dhcpcd.conf", conf)]  # fmt: skip
    tree = flattened(tmp_path, members)
    assert run(tree, None, "static:10.0.0.5/24,10.0.0.1,9.9.9.9") == []
    conf = content(tree, "/etc/dhcpcd.conf").decode()
    assert conf.index("static ip_address=10.0.0.5/24") < conf.index("interface wlan0")
    assert "static routers=10.0.0.1\nstatic domain_name_servers=9.9.9.9\n" in conf
    wants = "/etc/systemd/system/multi-user.target.wants/dhcpcd.service"
    assert lookup(tree.root, wants) is not None


def test_networkd_image_whose_network_directory_is_a_symlink_is_left_alone(
    tmp_path: Path,
) -> None:
    members = [
        *networkd_members(resolved=True),
        directory("usr/lib/systemd/mine"),
        file("usr/lib/systemd/mine/10-eth.network", b"[Match]\nName=eth0\n[Network]\nDHCP=yes\n"),
        directory("etc/systemd"),
        symlink("etc/systemd/network", "/usr/lib/systemd/mine"),
    ]
    tree, edit = with_data(tmp_path, members)
    assert run(tree, edit) == []
    assert lookup(tree.root, "/usr/lib/systemd/mine/80-oci2vm.network") is None


def test_enabling_a_unit_follows_also_and_skips_names_that_are_no_unit_names(
    tmp_path: Path,
) -> None:
    """systemctl enable: links for WantedBy= and Alias=, the units of Also= in turn (a
    chain longer than Python's recursion limit too); a word that is no unit name (a
    path, '..') is left out, as systemctl refuses it."""
    from oci2vm.prepare import units

    unit = b"[Install]\nWantedBy=multi-user.target ../../evil.target\nAlias=../x.service\n"
    chain = [
        file(
            f"lib/systemd/system/c{n}.service",
            f"[Install]\nWantedBy=a.target\nAlso=c{n + 1}.service\n".encode(),
        )
        for n in range(1500)
    ]
    last = file("lib/systemd/system/c1500.service", b"[Install]\nWantedBy=a.target\n")
    odd = file("lib/systemd/system/odd.service", unit)
    members = [*networkd_members(resolved=True), odd, *chain, last]
    tree, edit = with_data(tmp_path, members)
    assert units.enable_unit(edit, "odd.service")
    wants = entry(tree, "/etc/systemd/system")
    assert sorted(wants.children or {}) == ["multi-user.target.wants"]
    assert units.enable_unit(edit, "c0.service")
    assert len(entry(tree, "/etc/systemd/system/a.target.wants").children or {}) == 1501
    assert units.enabled(edit, "c1500.service")


def test_network_manager_is_started_the_way_openrc_and_runit_start_services(
    tmp_path: Path,
) -> None:
    """Alpine's networkmanager OpenRC script in the default runlevel (OpenRC starts the
    dbus it needs); Void's NetworkManager runit service linked, with dbus, which its run
    script checks for. With no service to start it, the next stack (dhcpcd) is chosen."""
    nm = [directory("usr"), directory("usr/sbin"), file("usr/sbin/NetworkManager", b"\x7fELF")]
    alpine = [
        directory("sbin"), symlink("sbin/init", "openrc-init"),
        file("sbin/openrc-init", b"\x7fELF"), file("sbin/openrc", b"\x7fELF"),
        directory("etc"), directory("etc/init.d"),
        file("etc/init.d/devfs", b"#!/sbin/openrc-run\n", mode=0o755),
        file("etc/init.d/networkmanager", b"#!/sbin/openrc-run\n", mode=0o755), *nm,
    ]  # fmt: skip
    tree = flattened(tmp_path / "alpine", alpine)
    assert run(tree) == []
    assert link_target(tree, "/etc/runlevels/default/networkmanager") == (
        b"/etc/init.d/networkmanager"
    )
    assert lookup(tree.root, network.KEYFILE) is not None
    void = [
        directory("sbin"), symlink("sbin/init", "runit-init"), file("sbin/runit-init", b"\x7fELF"),
        directory("etc"), directory("etc/sv"), directory("etc/sv/dbus"),
        file("etc/sv/dbus/run", b"#!/bin/sh\n", mode=0o755), directory("etc/sv/NetworkManager"),
        file("etc/sv/NetworkManager/run", b"#!/bin/sh\nsv check dbus || exit 1\n", mode=0o755),
        directory("etc/sv/dhcpcd"), file("etc/sv/dhcpcd/run", b"#!/bin/sh\n", mode=0o755),
        file("usr/sbin/dhcpcd", b"\x7fELF"), *nm,
    ]  # fmt: skip
    tree = flattened(tmp_path / "void", void)
    assert run(tree) == []
    runsvdir = "/etc/runit/runsvdir/default"
    assert link_target(tree, f"{runsvdir}/NetworkManager") == b"/etc/sv/NetworkManager"
    assert link_target(tree, f"{runsvdir}/dbus") == b"/etc/sv/dbus"
    assert lookup(tree.root, f"{runsvdir}/dhcpcd") is None
    no_service = [m for m in void if not m.info.name.startswith("etc/sv/NetworkManager")]
    tree = flattened(tmp_path / "void-without", no_service)
    assert run(tree) == []
    assert link_target(tree, f"{runsvdir}/dhcpcd") == b"/etc/sv/dhcpcd"
    assert lookup(tree.root, network.KEYFILE) is None
