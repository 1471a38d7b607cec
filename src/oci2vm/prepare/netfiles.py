"""The text of the network configuration files each stack reads, for DHCP or a static
address on the first Ethernet NIC: pure functions of --network, so the network step only
decides where they go."""

from __future__ import annotations

import ipaddress

from oci2vm.config import NetworkChoice, NetworkMode

HEADER = "# Written by oci2vm (--network): the first Ethernet NIC, whatever its name.\n"


def networkd(choice: NetworkChoice) -> bytes:
    """systemd.network(5): Type=ether leaves out lo, Kind=!* every virtual device (bridges,
    veths, tunnels have a kind; a NIC has none)."""
    text = HEADER + "[Match]\nType=ether\nKind=!*\n\n[Network]\n"
    if choice.mode is NetworkMode.STATIC:
        text += f"Address={choice.address}\nGateway={choice.gateway}\n"
        text += "".join(f"DNS={server}\n" for server in choice.dns)
    else:
        text += "DHCP=yes\n"
    return text.encode()


def ifupdown(choice: NetworkChoice, name: str, pattern: str | None) -> bytes:
    """interfaces(5). Debian's ifupdown (0.8 on) takes an interface name pattern in auto
    and allow- lines: `/e*/1=NAME` brings up the first interface whose name starts with e
    (eth0, ens3, enp0s3: whatever udev named it, if anything did) with the `iface NAME`
    stanza. `auto`, not the installer's allow-hotplug: the networking script brings
    allow-hotplug interfaces up by `ifup eth0`, which drops the pattern's =NAME and fails
    ("unknown interface eth0"), and without udev nothing else would; `ifup -a` at boot
    maps auto patterns whole. ifupdown-ng and busybox's ifup know no patterns: they get
    the kernel's own name, eth0. A static address is given with a netmask line, which all
    three read (busybox's ifup takes no ADDRESS/PREFIX: "don't have all variables")."""
    head = f"auto {pattern}={name}\n" if pattern else f"auto {name}\n"
    if choice.mode is NetworkMode.STATIC:
        interface = ipaddress.ip_interface(choice.address)
        stanza = f"iface {name} inet static\n\taddress {interface.ip}\n"
        stanza += f"\tnetmask {interface.netmask}\n\tgateway {choice.gateway}\n"
        if choice.dns:
            stanza += f"\tdns-nameservers {' '.join(choice.dns)}\n"
    else:
        stanza = f"iface {name} inet dhcp\n"
    return (HEADER + head + stanza).encode()


def keyfile(choice: NetworkChoice, uuid: str) -> bytes:
    """NetworkManager's keyfile (nm-settings-keyfile(5)): no interface-name, so the profile
    matches any Ethernet device."""
    text = HEADER + f"[connection]\nid=oci2vm\nuuid={uuid}\ntype=ethernet\nautoconnect=true\n"
    text += "\n[ethernet]\n\n[ipv4]\n"
    if choice.mode is NetworkMode.STATIC:
        text += f"method=manual\naddress1={choice.address},{choice.gateway}\n"
        if choice.dns:
            text += "dns=" + "".join(f"{server};" for server in choice.dns) + "\n"
    else:
        text += "method=auto\n"
    text += "\n[ipv6]\nmethod=auto\n"
    return text.encode()


def netplan(choice: NetworkChoice) -> bytes:
    """netplan's YAML (netplan(5)): an ethernets entry matching names e*, rendered for
    networkd or NetworkManager by netplan's generator at boot."""
    lines = [
        "network:",
        "  version: 2",
        "  ethernets:",
        "    oci2vm:",
        "      match:",
        '        name: "e*"',
    ]
    if choice.mode is NetworkMode.STATIC:
        lines += [
            "      addresses:",
            f'        - "{choice.address}"',
            "      routes:",
            f'        - to: "{default_route(choice)}"',
            f'          via: "{choice.gateway}"',
        ]
        if choice.dns:
            servers = ", ".join(f'"{server}"' for server in choice.dns)
            lines += ["      nameservers:", f"        addresses: [{servers}]"]
    else:
        lines.append("      dhcp4: true")
    return (HEADER + "\n".join(lines) + "\n").encode()


def default_route(choice: NetworkChoice) -> str:
    return "::/0" if ipaddress.ip_interface(choice.address).version == 6 else "0.0.0.0/0"


def resolv_conf(dns: tuple[str, ...]) -> bytes:
    return (HEADER + "".join(f"nameserver {server}\n" for server in dns)).encode()


# busybox udhcpc runs its script with deconfig, bound, renew or leasefail and the lease in
# the environment: $interface, $ip, $mask (the prefix length), $router, $dns (udhcpc(8),
# busybox networking/udhcp/dhcpc.c fill_envp).
UDHCPC_SCRIPT = b"""#!/bin/sh
# Written by oci2vm: apply the lease udhcpc got (busybox applets only).
case "$1" in
deconfig)
\tip link set "$interface" up
\tip addr flush dev "$interface"
\t;;
bound|renew)
\tip addr flush dev "$interface"
\tip addr add "$ip/${mask:-24}" dev "$interface"
\tfor gw in $router; do ip route replace default via "$gw" dev "$interface"; break; done
\tif [ -n "$dns" ]; then
\t\tfor server in $dns; do echo "nameserver $server"; done > /etc/resolv.conf
\tfi
\t;;
esac
exit 0
"""


def busybox_line(choice: NetworkChoice, nic: str, udhcpc: str, script: str) -> str:
    """The inittab line that configures `nic` at boot under busybox init: udhcpc in the
    background once it has tried (-b), or the static address with busybox's ip."""
    if choice.mode is NetworkMode.STATIC:
        steps = (
            f"ip link set {nic} up && ip addr add {choice.address} dev {nic} && "
            f"ip route add default via {choice.gateway}"
        )
        return f"::sysinit:/bin/sh -c '{steps}'\n"
    return f"::sysinit:{udhcpc} -b -i {nic} -s {script}\n"


# systemd-networkd hands the DNS servers a DHCP lease gives to systemd-resolved only: without
# resolved nothing writes them to /etc/resolv.conf. networkd does record them, in its state
# files: /run/systemd/netif/links/IFINDEX and /run/systemd/netif/leases/IFINDEX have a
# `DNS=` line of space-separated servers (sd-network(3) reads the former; a server may carry
# `:port`, `%ifindex` or `#name` suffixes, an IPv6 one with a port in brackets). A path unit
# runs this script whenever networkd rewrites a state file.
NETWORKD_RESOLV_SCRIPT = b"""#!/bin/sh
# Written by oci2vm: this image has systemd-networkd without systemd-resolved. Write the
# DNS servers networkd learned (its state files' DNS= lines) to /etc/resolv.conf.
servers=
for state in /run/systemd/netif/links/* /run/systemd/netif/leases/*; do
\t[ -f "$state" ] || continue
\twhile IFS='=' read -r key value; do
\t\t[ "$key" = DNS ] || continue
\t\tfor server in $value; do
\t\t\tserver=${server%%#*}
\t\t\tcase $server in
\t\t\t\\[*) server=${server#\\[}; server=${server%%]*} ;;
\t\t\t*.*:*) server=${server%%:*} ;;
\t\t\tesac
\t\t\tserver=${server%%%*}
\t\t\tcase " $servers " in *" $server "*) ;; *) servers="$servers $server" ;; esac
\t\tdone
\tdone < "$state"
done
[ -n "$servers" ] || exit 0
new=/etc/.resolv.conf.oci2vm
{
\techo "# Written by oci2vm from systemd-networkd's DNS servers (no systemd-resolved)."
\tfor server in $servers; do echo "nameserver $server"; done
} > "$new" && mv -f "$new" /etc/resolv.conf
"""
NETWORKD_RESOLV_PATH_UNIT = b"""\
# Written by oci2vm: systemd-networkd without systemd-resolved writes no resolv.conf.
# Ordered before networkd, so that no state file it writes goes unseen; no default
# dependencies, which would order it after sysinit.target (and networkd with it).
[Unit]
Description=Watch systemd-networkd's state for DNS servers (no systemd-resolved)
DefaultDependencies=no
Before=systemd-networkd.service

[Path]
PathChanged=/run/systemd/netif/links
PathChanged=/run/systemd/netif/leases

[Install]
WantedBy=systemd-networkd.service
"""


def networkd_resolv_service(script: str) -> bytes:
    return f"""\
# Written by oci2vm: see {script}.
[Unit]
Description=Write systemd-networkd's DNS servers to /etc/resolv.conf

[Service]
Type=oneshot
ExecStart=/bin/sh {script}
""".encode()
