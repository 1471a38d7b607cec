"""The booted system's network: DHCP (or --network's static address) on the first
Ethernet NIC, written for the stack the image has, found from its files alone.

In order of preference: netplan (it renders for networkd or NetworkManager at boot),
NetworkManager, systemd-networkd, ifupdown / ifupdown-ng, dhcpcd as a service of the init
(Void's default; Gentoo's and Alpine's OpenRC service), busybox init's udhcpc. An image
that configures a NIC already is left alone; one with none of these gets a note. App mode's
own init does DHCP itself: this step is for system mode.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from oci2vm.config import NetworkMode
from oci2vm.prepare import inittab, netfiles, units
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import InitSystem, OsInfo

NETWORKD_FILE = "/etc/systemd/network/80-oci2vm.network"
KEYFILE = "/etc/NetworkManager/system-connections/oci2vm-dhcp.nmconnection"
NETPLAN_FILE = "/etc/netplan/50-oci2vm.yaml"
INTERFACES_DROPIN = "/etc/network/interfaces.d/oci2vm"
UDHCPC_SCRIPT = "/etc/oci2vm/udhcpc.script"
STUB_RESOLV = "../run/systemd/resolve/stub-resolv.conf"
DHCP_CLIENTS = ("dhclient", "udhcpc", "dhcpcd", "pump")
NO_STACK_NOTE = (
    "no network configuration written: the image has no systemd-networkd, ifupdown, "
    "NetworkManager, netplan, dhcpcd service or busybox udhcpc (install one for DHCP)"
)
DHCPCD_CONF = "/etc/dhcpcd.conf"
_LIMIT = 1 << 20
# Never enabled, though the units name them in Also=: they hold the boot up until a lease comes.
WAIT_ONLINE = ("systemd-networkd-wait-online.service", "NetworkManager-wait-online.service")
# systemd-networkd takes udev as present whenever /sys is writable (always, in a VM) and
# leaves every link "pending" until udev has a database entry for it (sd-device: a device
# with an entry in /run/udev/data is initialized). An image with systemd but without udev
# (debian + systemd-sysv alone) would never configure its NIC: this unit gives each link
# present at boot the empty entry udev would have written, before networkd starts. Where
# udev does run (/run/udev/control exists) it does nothing.
UDEV_STAND_IN = "oci2vm-net-links.service"
RESOLV_UNIT = "oci2vm-resolv"  # .path and .service: see netfiles.NETWORKD_RESOLV_SCRIPT
RESOLV_SCRIPT = "/usr/lib/oci2vm/networkd-resolv"
UDEV_STAND_IN_UNIT = b"""\
# Written by oci2vm: this image has systemd-networkd but no udev, and networkd waits for
# udev to initialize a link before configuring it. This marks the links present at boot
# initialized, as udev's database would.
[Unit]
Description=Mark network links initialized (no udev)
DefaultDependencies=no
After=systemd-modules-load.service
Before=systemd-networkd.service
ConditionPathExists=!/run/udev/control

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /run/udev/data; for f in /sys/class/net/*/ifindex; do \\
read i < "$$f"; [ -e /run/udev/data/n$$i ] || : > /run/udev/data/n$$i; done'

[Install]
WantedBy=systemd-networkd.service
"""


class Stack(StrEnum):
    NETPLAN = "netplan"
    NETWORKMANAGER = "NetworkManager"
    NETWORKD = "systemd-networkd"
    IFUPDOWN = "ifupdown"
    DHCPCD = "dhcpcd"
    UDHCPC = "busybox udhcpc"
    NONE = "none"


def exists(edit: TreeEditor, *paths: str) -> bool:
    return any(edit.get(path) is not None for path in paths)


def program(edit: TreeEditor, name: str) -> str | None:
    for base in ("/sbin", "/usr/sbin", "/bin", "/usr/bin"):
        if edit.get(f"{base}/{name}") is not None:
            return f"{base}/{name}"
    return None


def detect(edit: TreeEditor, init: InitSystem, openrc: bool = False) -> Stack:
    """The network stack the image's own files say it has. Under busybox init, ifup is
    busybox's applet, run by nothing, unless OpenRC's networking service runs it
    (Alpine with OpenRC: its /etc/network/interfaces is what configures the NIC)."""
    openrc_ifup = openrc and exists(edit, "/etc/init.d/networking")
    if program(edit, "netplan") and exists(edit, "/etc/netplan"):
        return Stack.NETPLAN
    if program(edit, "NetworkManager") and _nm_service(edit, init, openrc) is not None:
        return Stack.NETWORKMANAGER
    networkd = ("/lib/systemd/systemd-networkd", "/usr/lib/systemd/systemd-networkd")
    if init is InitSystem.SYSTEMD and exists(edit, *networkd):
        return Stack.NETWORKD
    busybox_alone = init is InitSystem.BUSYBOX and not openrc_ifup
    if program(edit, "ifup") and exists(edit, "/etc/network") and not busybox_alone:
        return Stack.IFUPDOWN
    if program(edit, "dhcpcd") and _dhcpcd_service(edit, init, openrc) is not None:
        return Stack.DHCPCD
    if init is InitSystem.BUSYBOX and program(edit, "udhcpc"):
        return Stack.UDHCPC
    return Stack.NONE


def _nm_service(edit: TreeEditor, init: InitSystem, openrc: bool) -> str | None:
    """What starts NetworkManager under the image's init: its systemd unit, an OpenRC
    script (Alpine's networkmanager, Gentoo's NetworkManager), a runit service (Void);
    None if nothing would (the next stack is looked for then)."""
    if init is InitSystem.SYSTEMD:
        return "NetworkManager.service"
    if openrc:
        return next((f"/etc/init.d/{name}" for name in ("networkmanager", "NetworkManager")
                     if exists(edit, f"/etc/init.d/{name}")), None)  # fmt: skip
    if init is InitSystem.RUNIT and exists(edit, "/etc/sv/NetworkManager/run"):
        return "/etc/sv/NetworkManager"
    return None


def _dhcpcd_service(edit: TreeEditor, init: InitSystem, openrc: bool) -> str | None:
    """What runs dhcpcd under the image's init: a runit service (Void), an OpenRC script
    (Gentoo, Alpine), a systemd unit; None if nothing would."""
    if init is InitSystem.RUNIT and exists(edit, "/etc/sv/dhcpcd/run"):
        return "/etc/sv/dhcpcd"
    if openrc and exists(edit, "/etc/init.d/dhcpcd"):
        return "/etc/init.d/dhcpcd"
    if init is InitSystem.SYSTEMD and units.unit_path(edit, "dhcpcd.service") is not None:
        return "dhcpcd.service"
    return None


def apply(edit: TreeEditor, target: Target) -> list[str]:
    stack = detect(edit, target.os.init, target.os.openrc)
    if stack is Stack.NETPLAN:
        return netplan(edit, target)
    if stack is Stack.NETWORKMANAGER:
        return network_manager(edit, target)
    if stack is Stack.NETWORKD:
        return networkd(edit, target)
    if stack is Stack.IFUPDOWN:
        return ifupdown(edit, target)
    if stack is Stack.DHCPCD:
        return dhcpcd(edit, target)
    if stack is Stack.UDHCPC:
        return udhcpc(edit, target)
    # Without an init nothing would run a network stack: the console step says so.
    if target.os.init is InitSystem.NONE:
        return []
    others = [name for name in ("wicked", "connmand", "iwd") if program(edit, name)]
    if others:  # a stack oci2vm writes nothing for: the image's own settings stay
        return [f"no network configuration written for {', '.join(others)}: the image's own "
                "settings, if any, configure the NIC"]  # fmt: skip
    return [NO_STACK_NOTE]


def names_in(edit: TreeEditor, directory: str, suffixes: tuple[str, ...]) -> list[str]:
    node = edit.directory(directory)
    children = node.children if node is not None and node.children is not None else {}
    return sorted(name for name in children if name.endswith(suffixes))


def write(edit: TreeEditor, path: str, content: bytes, mode: int = 0o644) -> None:
    parts = path.split("/")
    for i in range(2, len(parts) - 1):
        edit.mkdir("/".join(parts[: i + 1]))
    edit.write(path, content, mode=mode, uid=0, gid=0)


def netplan(edit: TreeEditor, target: Target) -> list[str]:
    ours = NETPLAN_FILE.rsplit("/", 1)[1]
    if [n for n in names_in(edit, "/etc/netplan", (".yaml", ".yml")) if n != ours]:
        return []
    write(edit, NETPLAN_FILE, netfiles.netplan(target.config.network), mode=0o600)
    return []


def network_manager(edit: TreeEditor, target: Target) -> list[str]:
    directory, _, ours = KEYFILE.rpartition("/")
    if [n for n in names_in(edit, directory, ("",)) if n != ours]:
        return []
    profile = str(uuid.uuid5(uuid.NAMESPACE_URL, f"oci2vm:{target.identity}:network"))
    write(edit, KEYFILE, netfiles.keyfile(target.config.network, profile), mode=0o600)
    service = _nm_service(edit, target.os.init, target.os.openrc)
    if service is None:
        return []
    if service.startswith("/etc/init.d/"):  # OpenRC starts dbus, which it needs
        units.enable_openrc(edit, service.rsplit("/", 1)[1])
    elif service.startswith(units.SV):  # runit does not: Void's run script checks it
        if exists(edit, f"{units.SV}/dbus/run"):
            units.enable_runit(edit, "dbus")
        units.enable_runit(edit, "NetworkManager")
    elif not units.enabled(edit, service):
        units.enable_unit(edit, service, skip=WAIT_ONLINE)
    return []


def networkd(edit: TreeEditor, target: Target) -> list[str]:
    directory, _, ours = NETWORKD_FILE.rpartition("/")
    if [n for n in names_in(edit, directory, (".network",)) if n != ours]:
        return []
    choice = target.config.network
    write(edit, NETWORKD_FILE, netfiles.networkd(choice))
    if not units.enabled(edit, "systemd-networkd.service"):
        units.enable_unit(edit, "systemd-networkd.service", skip=WAIT_ONLINE)
    if units.unit_path(edit, "systemd-udevd.service") is None:
        own_unit(edit, UDEV_STAND_IN, UDEV_STAND_IN_UNIT, wanted_by="systemd-networkd.service")
    if units.unit_path(edit, "systemd-resolved.service") is not None:
        if not units.enabled(edit, "systemd-resolved.service"):
            units.enable_unit(edit, "systemd-resolved.service")
        edit.symlink("/etc/resolv.conf", STUB_RESOLV)
    elif choice.dns:
        write(edit, "/etc/resolv.conf", netfiles.resolv_conf(choice.dns))
    elif choice.mode is NetworkMode.DHCP:
        write(edit, RESOLV_SCRIPT, netfiles.NETWORKD_RESOLV_SCRIPT, mode=0o755)
        service = netfiles.networkd_resolv_service(RESOLV_SCRIPT)
        write(edit, f"{units.ETC_UNITS}/{RESOLV_UNIT}.service", service)
        path_unit = netfiles.NETWORKD_RESOLV_PATH_UNIT
        own_unit(edit, f"{RESOLV_UNIT}.path", path_unit, wanted_by="systemd-networkd.service")
    return []


def own_unit(edit: TreeEditor, name: str, text: bytes, wanted_by: str) -> None:
    """A unit oci2vm writes to /etc/systemd/system, enabled by a link in
    `wanted_by`.wants/ (as its [Install] section says)."""
    write(edit, f"{units.ETC_UNITS}/{name}", text)
    edit.mkdir(f"{units.ETC_UNITS}/{wanted_by}.wants")
    edit.symlink(f"{units.ETC_UNITS}/{wanted_by}.wants/{name}", f"{units.ETC_UNITS}/{name}")


def configures_a_nic(text: str) -> bool:
    """Whether an interfaces file has an inet/inet6 stanza for anything but loopback."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] == "iface" and words[3] != "loopback":
            return True
    return False


def ifupdown(edit: TreeEditor, target: Target) -> list[str]:
    choice = target.config.network
    existing = (edit.read_file("/etc/network/interfaces", _LIMIT) or b"").decode("utf-8", "replace")
    dropins = names_in(edit, "/etc/network/interfaces.d", ("",))
    for name in dropins:
        if name != "oci2vm":
            text = edit.read_file(f"/etc/network/interfaces.d/{name}", _LIMIT) or b""
            existing += "\n" + text.decode("utf-8", "replace")
    if configures_a_nic(existing):
        enable_networking(edit, target.os)  # the image's own stanza, still to be run
        return []
    # Debian's ifupdown has patterns (and /sbin/ifquery); ifupdown-ng ships /sbin/ifupdown.
    debian = program(edit, "ifquery") is not None and program(edit, "ifupdown") is None
    stanza = netfiles.ifupdown(choice, "oci2vm" if debian else "eth0", "/e*/1" if debian else None)
    current = edit.read_file("/etc/network/interfaces", _LIMIT)
    if current is not None and b"source /etc/network/interfaces.d/*" in current:
        write(edit, INTERFACES_DROPIN, stanza)
    elif current is not None:
        write(edit, "/etc/network/interfaces", current.rstrip(b"\n") + b"\n\n" + stanza)
    else:
        lo = b"auto lo\niface lo inet loopback\n\n"
        write(edit, "/etc/network/interfaces", lo + stanza)
    enable_networking(edit, target.os)
    notes = []
    if choice.mode is NetworkMode.STATIC and choice.dns:
        write(edit, "/etc/resolv.conf", netfiles.resolv_conf(choice.dns))
    if choice.mode is NetworkMode.DHCP and not any(program(edit, c) for c in DHCP_CLIENTS):
        notes.append(
            "ifupdown has no DHCP client to run (isc-dhcp-client, dhcpcd or udhcpc): "
            "the NIC will get no address"
        )
    return notes


def enable_networking(edit: TreeEditor, os: OsInfo) -> None:
    """The service that runs ifup at boot: networking.service for systemd, a runlevel
    link where OpenRC starts the services (under any init), else the script's rc.d links:
    sysvinit's rc runs them, and so does Debian's runit (stage 1 runs /etc/rcS.d/S*,
    stage 2 /etc/rc2.d/S* through /lib/runit/run_sysv_scripts)."""
    if os.init is InitSystem.SYSTEMD:
        if not units.enabled(edit, "networking.service"):
            units.enable_unit(edit, "networking.service")
    elif edit.get("/etc/init.d/networking") is None:
        return
    elif os.openrc:
        # In boot with OpenRC's own boot scripts, as setup-alpine puts it; Debian's
        # openrc keeps its networking in default.
        level = "boot" if units.openrc_boot_scripts(edit) else "default"
        units.enable_openrc(edit, "networking", runlevel=level)
    elif os.init in (InitSystem.SYSVINIT, InitSystem.RUNIT):
        units.enable_sysv(edit, "networking", 40)


def dhcpcd(edit: TreeEditor, target: Target) -> list[str]:
    """dhcpcd configures every Ethernet NIC by DHCP as it comes, whatever its name: its
    service is enabled. A static address goes in /etc/dhcpcd.conf's global options (before
    any `interface` block, where they apply to every interface), DHCP not asked then."""
    choice = target.config.network
    os = target.os
    service = _dhcpcd_service(edit, os.init, os.openrc)
    if choice.mode is NetworkMode.STATIC:
        current = edit.read_text(DHCPCD_CONF, _LIMIT) or ""
        static = (
            "# Written by oci2vm: --network static.\nnoipv4ll\n"
            f"static ip_address={choice.address}\nstatic routers={choice.gateway}\n"
            + (f"static domain_name_servers={' '.join(choice.dns)}\n" if choice.dns else "")
        )
        write(edit, DHCPCD_CONF, (static + "\n" + current).encode("utf-8", "surrogateescape"))
    if service == "/etc/sv/dhcpcd":
        units.enable_runit(edit, "dhcpcd")
    elif service == "/etc/init.d/dhcpcd":
        units.enable_openrc(edit, "dhcpcd")
    elif service is not None and not units.enabled(edit, service):
        units.enable_unit(edit, service)
    return []


def udhcpc(edit: TreeEditor, target: Target) -> list[str]:
    """Busybox init runs what /etc/inittab says: one sysinit line more, after the image's
    own (and after busybox's defaults, restated when there was no inittab)."""
    choice = target.config.network
    text, existed = inittab.current(edit, InitSystem.BUSYBOX)
    client = program(edit, "udhcpc") or "/sbin/udhcpc"
    line = netfiles.busybox_line(choice, "eth0", client, UDHCPC_SCRIPT)
    if line in text:
        return []
    if choice.mode is NetworkMode.STATIC:
        if choice.dns:
            write(edit, "/etc/resolv.conf", netfiles.resolv_conf(choice.dns))
    else:
        write(edit, UDHCPC_SCRIPT, netfiles.UDHCPC_SCRIPT, mode=0o755)
    inittab.save(edit, text + line, existed)
    return []


def applies(target: Target) -> bool:
    return system_mode(target) and target.config.network.mode is not NetworkMode.NONE


STEP = Step("network", apply, applies=applies)
