"""Command-line parsing only: options become one Config, then a command runs."""

from __future__ import annotations

import argparse
import difflib
import getpass
import ipaddress
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

from oci2vm import __version__, runs
from oci2vm.config import (
    CHECK_EXPECT,
    DNS_WORD,
    USER_NAME,
    Accel,
    BootMode,
    Bus,
    Config,
    Firmware,
    InitMode,
    InitrdChoice,
    KernelChoice,
    NetworkChoice,
    OutputFormat,
    PartitionTable,
    PortMapping,
    PullPolicy,
    UserSpec,
    Volume,
)
from oci2vm.errors import Oci2vmError, Terminated
from oci2vm.image.model import Platform
from oci2vm.report import Reporter
from oci2vm.util.units import MIB, parse_size

EXAMPLES = """\
sources (skopeo syntax):
  docker://REF or REF          a registry (debian:12 = docker.io/library/debian:12)
  oci:PATH[:TAG]               an OCI image layout directory
  oci-archive:PATH[:TAG]       a tar of an OCI image layout
  docker-archive:PATH[:REF|@N] docker save / podman save output
  docker-daemon:REF            an image in a local Docker or Podman
  tar:PATH                     a root filesystem tarball (docker export)

examples:
  oci2vm inspect oci:./debian:bookworm
  oci2vm build oci:./debian:bookworm -o debian.qcow2 --root-password secret
  oci2vm check debian.qcow2
  oci2vm run debian.qcow2
"""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    # (--tls-verify's values: a bare one before the image takes the image)
    raise argparse.ArgumentTypeError(
        f"expected true or false, not {text!r} (a bare --tls-verify takes the next word: "
        "write --tls-verify=true)"
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, not {text!r}")
    return value


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r}: {e}") from None
    return text


def _whole(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse type: a whole number not below minimum, else "expected EXPECTED"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, not {text!r}")
        return value

    return parse


def _platform(text: str) -> Platform:
    try:
        return Platform.parse(text)
    except Oci2vmError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except Oci2vmError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


# A parser or one of its option groups (each kind of option has a heading in --help).
Options = argparse._ActionsContainer


def _choice(
    p: Options, flag: str, kind: type[StrEnum], default: StrEnum | None, text: str, hint: str = ""
) -> None:
    """An option whose values are a StrEnum's; a wrong one is named with the values (the
    one likely meant first) and `hint`."""

    def parse(value: str) -> StrEnum:
        try:
            return kind(value)
        except ValueError:
            values = [str(v) for v in kind]
            meant = _did_you_mean([value.lower()], values)
            raise argparse.ArgumentTypeError(
                f"{value!r} is not one of {', '.join(values)}{meant}{hint}"
            ) from None

    p.add_argument(flag, type=parse, choices=list(kind), default=default, help=text)


def _kernel(text: str) -> KernelChoice:
    try:
        return KernelChoice.parse(text)
    except Oci2vmError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _network(text: str) -> NetworkChoice:
    try:
        return NetworkChoice.parse(text)
    except Oci2vmError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _memory(text: str) -> int:
    """MiB: a plain number is MiB (as QEMU's -m), else a size with its unit (512M, 2G)."""
    value = int(text) if text.isdigit() else _size(text) // MIB
    if value < 16:
        raise argparse.ArgumentTypeError(f"expected at least 16 MiB of memory, not {text!r}")
    return value


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a {what} port of 1-65535, not {text!r}")
    return int(text)


def _ports(text: str, what: str) -> range:
    """PORT or FIRST-LAST, as docker's -p reads either side."""
    first, dash, last = text.partition("-")
    low = _port(first, what)
    high = _port(last, what) if dash else low
    if high < low:
        raise argparse.ArgumentTypeError(f"expected a {what} port range LOW-HIGH, not {text!r}")
    return range(low, high + 1)


def _readable_file(text: str) -> Path:
    """A file given on the command line, there when the line is read (not found missing
    once the image is downloaded, or never, where it goes unused)."""
    path = Path(text)
    if not path.is_file() or not os.access(path, os.R_OK):
        why = "not a file" if path.exists() else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: {why}")
    return path


def _run_name(text: str) -> str:
    try:
        return runs.check_name(text)
    except Oci2vmError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _publish(text: str) -> tuple[PortMapping, ...]:
    """docker run -p: [[HOST_IP:][HOST_PORT]:]GUEST_PORT[/tcp|/udp], either port a range
    FIRST-LAST; a host port left out is a free one picked when the run starts (0 here)."""
    spec, _, protocol = text.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise argparse.ArgumentTypeError(f"-p {text}: the protocol is tcp or udp")
    host, _, guest = spec.rpartition(":")
    host_ip, _, host_ports = host.rpartition(":")
    host_ip = host_ip.strip("[]") or "127.0.0.1"
    try:
        address = ipaddress.ip_address(host_ip)
    except ValueError:
        raise argparse.ArgumentTypeError(f"-p {text}: {host_ip!r} is not an IP address") from None
    if address.version != 4:  # QEMU (7.2) refuses such a hostfwd rule: "Bad host address"
        raise argparse.ArgumentTypeError(
            f"-p {text}: QEMU's user network forwards from IPv4 host addresses only"
        )
    guests = _ports(guest, "guest")
    hosts = _ports(host_ports, "host") if host_ports else range(0)
    if hosts and len(hosts) != len(guests):
        raise argparse.ArgumentTypeError(
            f"-p {text}: the host ports ({len(hosts)}) and guest ports ({len(guests)}) must "
            "be as many"
        )
    return tuple(
        PortMapping(hosts[i] if hosts else 0, port, host_ip, protocol)
        for i, port in enumerate(guests)
    )


CAPABILITY = re.compile(r"(?i)(CAP_)?[A-Z_]+|ALL")


def _capability(text: str) -> str:
    """docker's --cap-add NAME (with or without CAP_, any case, or ALL)."""
    if not CAPABILITY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"--cap-add {text}: not a capability name")
    return text.upper()


def _no_cap_drop(text: str) -> str:
    raise argparse.ArgumentTypeError(
        f"--cap-drop {text}: not supported: the workload runs with every capability its "
        "VM's kernel gives root; run it as a user (-u) instead"
    )


def _nameserver(text: str) -> str:
    """--dns IP, as docker takes it: an address (IPv4 or IPv6)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dns {text}: not an IP address") from None


def _dns_word(text: str) -> str:
    """A search domain or resolver option (ndots:2, use-vc): one word of resolv.conf."""
    if not DNS_WORD.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: not a domain or resolver option")
    return text


def _volume(text: str) -> Volume:
    """HOSTDIR:GUESTDIR[:ro|:rw] or HOSTFILE:GUESTFILE[:ro|:rw], as docker run -v."""
    parts = text.split(":")
    read_only = False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        read_only = parts.pop() == "ro"
    if len(parts) != 2 or not parts[0] or not parts[1].startswith("/"):
        raise argparse.ArgumentTypeError(
            f"-v {text}: expected HOSTDIR:GUESTDIR[:ro] with an absolute GUESTDIR"
        )
    source = parts[0]
    if "/" not in source and not source.startswith(("~", ".")):
        # docker takes a bare name for a named volume, which it keeps apart from the host
        # (a directory of that name here is not what the user meant either)
        raise argparse.ArgumentTypeError(
            f"-v {text}: {source!r} would be a named volume, which oci2vm does not keep: "
            f"share a host directory by its path (./{source})"
        )
    return _bind(source, parts[1], read_only, f"-v {text}", create=True)


def _bind(source: str, target: str, read_only: bool, what: str, *, create: bool = False) -> Volume:
    """`create`: a missing host directory is made when the run starts (-v does that;
    --mount type=bind refuses it, as docker's does)."""
    host = Path(source).expanduser()
    if os.path.isfile(host):
        return Volume(host.resolve(), target, read_only, file=True)
    if create and not os.path.lexists(host):
        return Volume(Path(os.path.abspath(host)), target, read_only, create=True)
    if not os.path.isdir(host):
        why = "is no directory or regular file" if os.path.lexists(host) else "does not exist"
        raise argparse.ArgumentTypeError(f"{what}: {host} {why}")
    return Volume(host.resolve(), target, read_only)


_MOUNT_TRUE = ("", "true", "1")


def _mount(text: str) -> Volume | str:
    """docker run --mount: type=bind (source, target, readonly) as -v takes it, and
    type=tmpfs (target, tmpfs-size, tmpfs-mode) as --tmpfs PATH:OPTIONS takes it."""
    what = f"--mount {text}"
    fields: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep and key not in ("readonly", "ro"):
            raise argparse.ArgumentTypeError(f"{what}: expected KEY=VALUE, not {item!r}")
        fields[{"src": "source", "dst": "target", "destination": "target"}.get(key, key)] = value
    kind = fields.pop("type", "volume")
    target = fields.pop("target", "")
    if not target.startswith("/"):
        raise argparse.ArgumentTypeError(f"{what}: the target must be an absolute path")
    if kind == "bind":
        source = fields.pop("source", "")
        read_only = fields.pop("readonly", fields.pop("ro", "false")) in _MOUNT_TRUE
        fields.pop("bind-propagation", None)  # (a 9p share has none to choose)
        if not source or fields:
            raise argparse.ArgumentTypeError(
                f"{what}: a bind mount takes source, target and readonly here"
            )
        return _bind(source, target, read_only, what)
    if kind == "tmpfs":
        options = []
        if "tmpfs-size" in fields:
            options.append(f"size={fields.pop('tmpfs-size')}")
        if "tmpfs-mode" in fields:
            options.append(f"mode={fields.pop('tmpfs-mode')}")
        if fields:
            raise argparse.ArgumentTypeError(
                f"{what}: a tmpfs mount takes target, tmpfs-size and tmpfs-mode here"
            )
        return ":".join([target, ",".join(options)]) if options else target
    raise argparse.ArgumentTypeError(
        f"{what}: type={kind} is not supported (bind: a host directory; tmpfs)"
    )


def _ssh_key(text: str) -> Path | tuple[str, Path]:
    """FILE, or USER=FILE when what comes before '=' is a user name and the whole is
    not a file."""
    name, eq, path = text.partition("=")
    if eq and USER_NAME.fullmatch(name) and path and not os.path.exists(text):
        return (name, Path(path))
    return Path(text)


def _user(text: str) -> UserSpec:
    try:
        return UserSpec.parse(text)
    except Oci2vmError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _common(parser: argparse.ArgumentParser, verbose_short: bool = True) -> None:
    p = parser.add_argument_group("what is printed")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress, no notes (warnings and the result stay)",
    )
    flags = ("-v", "--verbose") if verbose_short else ("--verbose",)
    p.add_argument(*flags, action="store_true", help="log every external command")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")


def _source_options(parser: argparse.ArgumentParser, pull: PullPolicy) -> None:
    p = parser.add_argument_group("the image and its registry")
    p.add_argument(
        "--platform",
        type=_platform,
        default=Platform(),
        metavar="OS/ARCH[/VARIANT]",
        help=f"platform to pick from a multi-platform image (default: {Platform()})",
    )
    p.add_argument("--creds", metavar="USER:PASS", help="registry credentials")
    p.add_argument(
        "--authfile",
        "--auth-file",
        dest="auth_file",
        type=Path,
        metavar="PATH",
        help="registry auth file (containers auth.json or docker config.json), searched first",
    )
    p.add_argument(
        "--tls-verify",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="verify TLS (default true; --tls-verify=false also allows plain HTTP, both "
        "for the source's registry host only)",
    )
    p.add_argument(
        "--insecure-host",
        dest="insecure_hosts",
        action="append",
        default=[],
        metavar="HOST",
        help="another host (a token server, a blob store) whose TLS is not verified and that "
        "may be spoken to over plain HTTP (repeatable)",
    )
    p.add_argument(
        "--network-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up on a registry response that brings less than 64 KiB in SECONDS (default: 60)",
    )
    p.add_argument("--cache-dir", type=Path, help="blob cache (default: $XDG_CACHE_HOME/oci2vm)")
    _choice(p, "--pull", PullPolicy, pull,
            f"when to ask a registry for the image: always, missing (only when the cache "
            f"lacks it) or never (default: {pull})")  # fmt: skip


def _build_options(parser: argparse.ArgumentParser, hostname_short: bool = False) -> None:
    p = parser.add_argument_group("the disk")
    _choice(p, "--format", OutputFormat, None, "output format (default: from the -o extension)")
    p.add_argument("--size", type=_size,
                   help="filesystem or disk size, e.g. 10G (sparse; default: what the "
                   "content needs, with room to spare)")  # fmt: skip
    p.add_argument("--uuid", dest="fs_uuid", help="root filesystem UUID (default: from the image)")
    _choice(p, "--boot", BootMode, BootMode.HYBRID,
            "firmware the disk boots on (default: hybrid, both BIOS and UEFI)")  # fmt: skip
    _choice(p, "--table", PartitionTable, PartitionTable.GPT,
            "partition table (default: gpt; mbr for old BIOS platforms)")  # fmt: skip
    p.add_argument("--compress", action="store_true", help="compress qcow2 output")
    p = parser.add_argument_group("the guest's identity and accounts")
    flags = ("-h", "--hostname") if hostname_short else ("--hostname",)  # (docker run's -h)
    p.add_argument(*flags, help="hostname (default: from the image name)")
    password = p.add_mutually_exclusive_group()
    password.add_argument("--root-password", help="root password (stored hashed, SHA-512 crypt)")
    password.add_argument(
        "--root-password-file",
        type=Path,
        metavar="FILE",
        help="read the root password from the first line of FILE ('-': standard input), "
        "which keeps it out of the process list",
    )
    p.add_argument(
        "--ssh-key",
        dest="ssh_keys",
        action="append",
        default=[],
        type=_ssh_key,
        metavar="[USER=]FILE",
        help="public key for root's authorized_keys, or USER's (repeatable)",
    )
    p.add_argument(
        "--add-user",
        dest="users",
        type=_user,
        action="append",
        default=[],
        metavar="NAME[:PASSWORD][:sudo]",
        help="add a login user (password stored hashed; sudo: in the sudo or wheel group; "
        "repeatable)",
    )
    p.add_argument(
        "--cloud-init",
        type=_readable_file,
        metavar="USER_DATA_FILE",
        help="user-data for the image's cloud-init, written as a NoCloud seed (an image "
        "with cloud-init gets an empty one without this)",
    )


def _system_options(parser: argparse.ArgumentParser) -> None:
    """Where the kernel, the initrd and PID 1 come from."""
    p = parser.add_argument_group("kernel, init and network")
    p.add_argument(
        "--kernel",
        type=_kernel,
        default=KernelChoice(),
        metavar="auto|image|debian[:SUITE[:FLAVOUR]]|SOURCE|FILE.deb",
        help="the kernel to boot (default: auto, the image's own, else Debian's, verified "
        "through the archive's signatures)",
    )
    _choice(p, "--initrd", InitrdChoice, InitrdChoice.AUTO,
            "the initramfs: the image's own or oci2vm's (default: auto)")  # fmt: skip
    _choice(p, "--init", InitMode, InitMode.AUTO,
            "system: the image's init runs as PID 1; app: the image's Entrypoint and Cmd "
            "run as the VM's job (default: auto, app when the image has no init)",
            "; docker run's --init (tini as PID 1) has no counterpart here, where a signal "
            "the workload does not handle ends it anyway")  # fmt: skip
    p.add_argument(
        "--network",
        type=_network,
        default=NetworkChoice(),
        metavar="none|dhcp|static:ADDR/PREFIX,GW[,DNS]",
        help="the booted system's first NIC: DHCP (default), a static address, or left as "
        "the image has it (none)",
    )
    p.add_argument(
        "--mirror",
        metavar="URL",
        help="Debian mirror (default: $OCI2VM_DEBIAN_MIRROR, else deb.debian.org)",
    )
    p.add_argument(
        "--keyring",
        dest="keyrings",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="OpenPGP keyring to check the Debian archive with (default: Debian's archive keys)",
    )
    p.add_argument(
        "--allow-expired-release",
        action="store_true",
        help="accept a Debian Release past its Valid-Until (snapshot mirrors)",
    )


def _workload_options(parser: argparse.ArgumentParser, *, run: bool) -> None:
    """docker run's options for the workload of an app image: all of them for run; for
    build, those a disk keeps (the workload it runs at every boot)."""
    p = parser.add_argument_group("an app image's workload (as docker run's)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set an environment variable (KEY alone: its value here)")  # fmt: skip
    p.add_argument("--env-file", action="append", default=[], type=Path, metavar="FILE",
                   help="read KEY=VALUE lines from FILE")  # fmt: skip
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory of the workload")
    p.add_argument("-u", "--user", metavar="NAME|UID[:GROUP|GID]", help="user of the workload")
    p.add_argument("--entrypoint", metavar="CMD", help="replace the image's Entrypoint")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]",
                   help="mount a tmpfs at PATH (repeatable)")  # fmt: skip
    p.add_argument("--add-host", dest="add_hosts", action="append", default=[],
                   metavar="NAME:IP", help="add a line to /etc/hosts (IP host-gateway: the "
                   "host, as QEMU's user network reaches it; repeatable)")  # fmt: skip
    p.add_argument("--dns", action="append", default=[], type=_nameserver, metavar="IP",
                   help="a nameserver of the workload's resolv.conf, in place of the "
                   "network's (repeatable)")  # fmt: skip
    p.add_argument("--dns-search", action="append", default=[], type=_dns_word,
                   metavar="DOMAIN", help="a search domain of the workload's resolv.conf, "
                   "in place of the network's ('.': none; repeatable)")  # fmt: skip
    p.add_argument("--dns-option", dest="dns_options", action="append", default=[],
                   type=_dns_word, metavar="OPTION",
                   help="an option of the workload's resolv.conf (repeatable)")  # fmt: skip
    p.add_argument("--read-only", action="store_true",
                   help="mount the root filesystem read-only")  # fmt: skip
    p.add_argument("--ulimit", dest="ulimits", action="append", default=[],
                   metavar="NAME=SOFT[:HARD]", help="a resource limit of the workload, as "
                   "docker's (nofile=1024:524288 unless given; repeatable)")  # fmt: skip
    p.add_argument(
        "--stop-signal",
        metavar="SIGNAL",
        help="signal that stops the workload (default: the image's StopSignal)",
    )
    if run:
        p.add_argument("-p", "--publish", type=_publish, action="extend", default=[],
                       metavar="[[HOST_IP:][HOST_PORT]:]GUEST_PORT",
                       help="forward a host port to the guest (a port may be a range "
                       "FIRST-LAST; no host port: a free one, told on stderr; "
                       "repeatable)")  # fmt: skip
        p.add_argument("--privileged", action="store_true",
                       help="accepted: the workload has its VM's every capability and "
                       "device already")  # fmt: skip
        p.add_argument("--cap-add", action="append", default=[], type=_capability,
                       metavar="CAP", help="accepted: root's workload holds every "
                       "capability already (repeatable)")  # fmt: skip
        p.add_argument("--cap-drop", action="append", default=[], type=_no_cap_drop,
                       metavar="CAP", help=argparse.SUPPRESS)  # fmt: skip
        p.add_argument("-P", "--publish-all", action="store_true",
                       help="forward every port the image exposes (its ExposedPorts) from a "
                       "free host port on 127.0.0.1, each told on stderr")  # fmt: skip
        p.add_argument("-v", "--volume", dest="volumes", type=_volume, action="append",
                       default=[], metavar="HOSTDIR:GUESTDIR[:ro]",
                       help="share a host directory or file with the guest (a missing "
                       "directory is made; repeatable)")  # fmt: skip
        p.add_argument("--mount", dest="mounts", type=_mount, action="append", default=[],
                       metavar="type=bind|tmpfs,...",
                       help="docker's long form of -v (type=bind,source=,target=[,readonly]) "
                       "and --tmpfs (type=tmpfs,target=[,tmpfs-size=][,tmpfs-mode=])")  # fmt: skip
        p.add_argument("--stop-timeout", metavar="SECONDS",
                       type=_whole(-1, "whole seconds, or -1"),
                       help="how long a stop waits for the workload before the VM is killed "
                       "(default: 10; -1: no limit)")  # fmt: skip
        p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
        p.add_argument("-t", "--tty", action="store_true", help="give the workload a terminal")
        p.add_argument("--rm", dest="discard", action="store_true",
                       help="throw away what the guest writes to a DISK (a SOURCE's run "
                       "always does, as with docker run --rm); with -d, the run's record "
                       "too once it ends")  # fmt: skip
        p.add_argument("-d", "--detach", action="store_true",
                       help="run in the background, print the run's name (see oci2vm ps, "
                       "logs, stop, wait, rm)")  # fmt: skip
        p.add_argument("--name", type=_run_name,
                       help="the detached run's name (default: 12 random hex digits)")  # fmt: skip


def _vm_options(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument_group("the virtual machine")
    _choice(p, "--firmware", Firmware, Firmware.BIOS,
            "firmware to boot with (default: bios, SeaBIOS; uefi: OVMF)")  # fmt: skip
    p.add_argument(
        "-m",
        "--memory",
        dest="memory_mib",
        type=_memory,
        default=1024,
        metavar="MIB|SIZE",
        help="guest memory in MiB, or a size such as 2G (default: 1024)",
    )
    p.add_argument("--cpus", type=_whole(1, "a whole number above 0"), default=2,
                   help="guest CPUs (default: 2)")  # fmt: skip
    _choice(p, "--accel", Accel, Accel.AUTO,
            "auto (default) uses KVM where it works, else TCG emulation")  # fmt: skip
    _choice(p, "--bus", Bus, Bus.VIRTIO, "disk bus (default: virtio)")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, telling a usage error as docker does: one line of what is wrong,
    with the command or option likely meant, then where the help is (not the usage of
    every option)."""

    last_error = ""  # what the last usage error said (for --json)

    def error(self, message: str) -> NoReturn:
        _Parser.last_error = message + self._meant(message)
        self.exit(2, f"{self.prog}: error: {_Parser.last_error}\nSee '{self.prog} --help'.\n")

    def _meant(self, message: str) -> str:
        if "invalid choice: " in message:
            word, _, choices = message.partition("invalid choice: ")[2].partition(" (choose from")
            return _did_you_mean([word.strip("'")], re.findall(r"'([^']+)'", choices))
        if message.startswith("unrecognized arguments: "):
            unknown = [w.split("=")[0] for w in message.split()[2:] if w.startswith("--")]
            return _did_you_mean(unknown, list(self._option_string_actions))
        return ""


def _did_you_mean(words: list[str], known: list[str]) -> str:
    """ " (did you mean X?)" naming the known word closest to each of `words`, if any."""
    close = [m for w in words for m in difflib.get_close_matches(w, known, 1)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="oci2vm",
        description="Turn a container image into a bootable disk image, as an ordinary user.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"oci2vm {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="describe an image and what its layers hold")
    p.add_argument("source", help="the image (see the sources in oci2vm --help)")
    _source_options(p, PullPolicy.ALWAYS)
    _system_options(p)
    _common(p)

    p = sub.add_parser("build", help="build a root filesystem or a bootable disk")
    p.add_argument("source", help="the image (see the sources in oci2vm --help)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the file to write; its extension picks the format (.ext4, .img/.raw, .qcow2, "
        ".vmdk, .vdi, .vhdx) unless --format says",
    )
    _source_options(p, PullPolicy.ALWAYS)
    _build_options(p)
    _system_options(p)
    _workload_options(p, run=False)
    _common(p)

    p = sub.add_parser(
        "run",
        help="boot a disk, or run a source like docker run (an app image's Entrypoint and "
        "Cmd as the VM's job, its exit code as oci2vm's)",
        usage="oci2vm run [OPTIONS] DISK|SOURCE [COMMAND [ARG...]]",
        add_help=False,  # -h is docker run's --hostname: a script's `-h NAME` printed help
    )
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument(
        "source",
        metavar="DISK|SOURCE",
        help="a disk to boot, or an image to run (the sources of oci2vm --help); the words "
        "after it (or after --) are the command that replaces the image's Cmd, as in "
        "docker run",
    )
    _workload_options(p, run=True)  # (first in --help, as docker run's users look there)
    _source_options(p, PullPolicy.MISSING)
    _build_options(p, hostname_short=True)
    _system_options(p)
    _vm_options(p)
    _common(p, verbose_short=False)

    p = sub.add_parser("check", help="boot headless and wait for a login prompt or a marker")
    p.add_argument("source", metavar="DISK|SOURCE",
                   help="a disk file, or an image to build a temporary disk from")  # fmt: skip
    p.add_argument(
        "--expect",
        type=_regex,
        default=CHECK_EXPECT,
        metavar="REGEX",
        help="what the console must show (default: a login prompt, or an app disk's "
        "workload started)",
    )
    p.add_argument("--timeout", type=_seconds, default=300.0, metavar="SECONDS",
                   help="how long to wait for it (default: 300)")  # fmt: skip
    _source_options(p, PullPolicy.ALWAYS)
    _build_options(p)
    _system_options(p)
    _vm_options(p)
    _common(p)
    _runs_commands(sub)
    return top


def _runs_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    """The commands of detached runs (oci2vm run -d), as docker's of its containers."""
    name = "a run's name, or its beginning"
    p = sub.add_parser("ps", help="list the detached runs")
    p.add_argument("-a", "--all", action="store_true", help="ended ones too")
    p.add_argument("-q", "--quiet", action="store_true", help="their names alone")
    p = sub.add_parser("logs", help="print what a detached run printed")
    p.add_argument("runs", nargs=1, metavar="NAME", help=name)
    p.add_argument("-f", "--follow", action="store_true", help="and what it prints next")
    p = sub.add_parser("stop", help="stop detached runs as docker stop does")
    p.add_argument("runs", nargs="+", metavar="NAME", help=name)
    p.add_argument("-t", "--time", dest="stop_timeout", type=float, metavar="SECONDS",
                   help="how long the workload has to end before its VM is killed "
                   "(default: the run's --stop-timeout)")  # fmt: skip
    p = sub.add_parser("wait", help="wait for detached runs to end; print their exit status")
    p.add_argument("runs", nargs="+", metavar="NAME", help=name)
    p = sub.add_parser("rm", help="remove the records of ended detached runs")
    p.add_argument("runs", nargs="+", metavar="NAME", help=name)
    p.add_argument("-f", "--force", action="store_true", help="kill a running one first")


WORKLOAD_COMMANDS = ("build", "run")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The options, and the workload's command: what follows '--' (build and run; build's
    options are free before and after SOURCE), or for run, as docker run has it, every
    word after an image (`oci2vm run IMAGE ls -l`, `oci2vm run IMAGE --port 80`). After
    a DISK, which takes no command, options are still oci2vm's."""
    words = list(argv)
    top = parser()
    at = _docker_command_start(top, words)
    command: list[str] = []
    if at is not None:
        words, command = words[:at], words[at:]
    elif "--" in words:
        at = words.index("--")
        words, command = words[:at], words[at + 1 :]
    args, extras = top.parse_known_args(words)
    if extras:  # told by the command's parser, which knows its options
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    if command and args.command not in WORKLOAD_COMMANDS:
        top.error(f"{args.command} takes no command after '--'")
    args.args = command
    return args


def _docker_command_start(top: argparse.ArgumentParser, words: Sequence[str]) -> int | None:
    """Where `oci2vm run`'s command begins in docker run's form: at the first word after
    SOURCE, which is told from the options before it and their values as argparse tells
    them (a long option's unique prefix, short flags run together, values attached or
    next); after a DISK (an existing file), at the first word that is no option of run's.
    None when there is none before a '--'."""
    start = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if start is None or words[start] != "run":
        return None
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    actions = sub.choices["run"]._option_string_actions
    longs = [name for name in actions if name.startswith("--")]
    seen_source = image = False
    i = start + 1
    while i < len(words):
        word = words[i]
        if word == "--":
            return None
        if image:  # every word after an image is the command's, options or not
            return i
        if word.startswith("--"):
            name, eq, _ = word.partition("=")
            matches = [name] if name in actions else [n for n in longs if n.startswith(name)]
            if len(matches) > 1:  # an ambiguous prefix of run's options: argparse says so
                i += 1
                continue
            action = actions[matches[0]] if matches else None
            takes = action is not None and not eq and _takes_value(action, words[i + 1 : i + 2])
        elif word.startswith("-") and word != "-":
            action, takes = None, False
            for at, letter in enumerate(word[1:], 1):  # -it, -eA=1, -e A=1
                action = actions.get("-" + letter)
                if action is None or action.nargs != 0:
                    last = at == len(word) - 1
                    takes = action is not None and last and _takes_value(action, words[i + 1 :])
                    break
        else:  # a positional word: SOURCE, then the command
            if seen_source:
                return i
            seen_source, image = True, not os.path.isfile(word)
            i += 1
            continue
        if action is None and seen_source:  # no option of oci2vm's: the command's own
            return i
        i += 2 if takes else 1
    return None


def _takes_value(action: argparse.Action, following: Sequence[str]) -> bool:
    """Whether an option written alone takes the next word as its value."""
    if action.nargs == 0:
        return False
    if action.nargs == "?":  # as argparse: the next word unless it looks like an option
        return bool(following) and not following[0].startswith("-")
    return True


def config_from(args: argparse.Namespace) -> Config:
    # args.command is the subcommand's name; the workload's arguments are args.args.
    fields = {
        k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and k != "command"
    }
    if "ssh_keys" in fields:
        keys = fields["ssh_keys"]
        fields["ssh_keys"] = tuple(k for k in keys if isinstance(k, Path))
        fields["user_ssh_keys"] = tuple(k for k in keys if isinstance(k, tuple))
    if "users" in fields:
        fields["users"] = tuple(fields["users"])
    for mount in getattr(args, "mounts", []):  # --mount: after -v's and --tmpfs's own
        key = "volumes" if isinstance(mount, Volume) else "tmpfs"
        fields[key] = [*fields[key], mount]  # a new list: `args` stays as parsed
    for name in (
        "insecure_hosts", "keyrings", "publish", "volumes", "tmpfs", "add_hosts", "ulimits",
        "dns", "dns_search", "dns_options", "cap_add", "runs",
    ):  # fmt: skip
        if name in fields:
            fields[name] = tuple(fields[name])
    if getattr(args, "args", None):
        fields["command"] = tuple(args.args)
    if "env" in fields:
        fields["env"] = environment(getattr(args, "env_file", []), fields["env"])
    if fields.get("hostname") == "":  # an unset variable in a script, likely
        raise Oci2vmError("--hostname is empty: leave it out for the default, from the image")
    password_file: Path | None = getattr(args, "root_password_file", None)
    if password_file is not None:
        fields["root_password"] = read_password(password_file)
    config = Config(**fields)
    if config.add_hosts or config.tmpfs or config.ulimits or config.stop_signal:
        from oci2vm.initramfs.spec import check_options

        check_options(config)
    return config


PASSWORD_LIMIT = 4096  # bytes of a password file's first line
ENV_FILE_LIMIT = 1 << 20


def environment(files: Sequence[Path], options: Sequence[str]) -> tuple[str, ...]:
    """KEY=VALUE settings from --env-file FILEs, then -e options, as docker run reads them
    (docker/cli's opts): a KEY alone takes its value from this environment; unset here,
    -e KEY stays a bare KEY, which makes docker's daemon remove KEY from the image's
    environment (moby's ReplaceOrAppendEnvValues), as merge_env does, while an env file's
    bare KEY is left out (parseKeyValueFile keeps it only when set), so the image's stays."""
    import os

    settings = [
        setting
        for path in files
        for setting in _env_file(path)
        if "=" in setting or setting in os.environ
    ]
    for option in options:
        if not option.partition("=")[0]:  # docker checks nothing else of -e's name
            raise Oci2vmError(f"-e {option!r}: no variable name")
        settings.append(option)
    out: list[str] = []
    for setting in settings:
        key, sep, _ = setting.partition("=")
        if sep:
            out.append(setting)
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
        else:
            out.append(key)
    return tuple(out)


def _env_file(path: Path) -> list[str]:
    """An env file's settings as docker reads one: lines split at '\\n' (a '\\r' before it
    dropped), a UTF-8 byte order mark and leading whitespace dropped, blank lines and
    '#' comments skipped, values kept as they are; a name may hold no space or tab."""
    try:
        data = read_small_bytes(path)
    except (OSError, Oci2vmError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise Oci2vmError(f"--env-file {path}: {reason}") from None
    settings = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        try:
            line = raw.removesuffix(b"\r").decode("utf-8").lstrip()
        except UnicodeDecodeError:
            raise Oci2vmError(f"--env-file {path}: line {number} is not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        key = line.partition("=")[0]
        if not key or " " in key or "\t" in key:
            what = "no variable name" if not key else f"variable {key!r} contains whitespace"
            raise Oci2vmError(f"--env-file {path}: line {number}: {what}")
        settings.append(line)
    return settings


def read_small_bytes(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(ENV_FILE_LIMIT + 1)
    if len(data) > ENV_FILE_LIMIT:
        raise Oci2vmError(f"larger than {ENV_FILE_LIMIT} bytes")
    return data


def read_password(path: Path) -> str:
    """The first line of `path` ('-': standard input; asked for without echo on a
    terminal, as passwd asks), without its line ending."""
    try:
        if str(path) == "-" and sys.stdin.isatty():
            line = getpass.getpass("root password for the image: ")
        elif str(path) == "-":
            line = sys.stdin.readline(PASSWORD_LIMIT + 1)
        else:
            with path.open(encoding="utf-8") as f:
                line = f.readline(PASSWORD_LIMIT + 1)
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise Oci2vmError(f"cannot read the root password from {path}: {reason}") from None
    password = line.rstrip("\r\n")
    if len(password) > PASSWORD_LIMIT:
        raise Oci2vmError(
            f"{path}: the first line is longer than {PASSWORD_LIMIT} characters: "
            "is it the password file?"
        )
    if not password:
        raise Oci2vmError(f"{path}: the root password is empty")
    return password


# docker run's status when it fails itself, not the container; `check` exits with it too
# when it could not boot the disk at all (git bisect run's "cannot be tested"), so that 1
# stays its verdict: the guest booted and never showed the pattern.
RUN_FAILED = 125


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    runs.take_environment()  # (a detached run's: see runs.py)
    status = _main(argv)
    runs.ended(status)
    return status


def _main(argv: list[str]) -> int:
    words = [word for word in argv if not word.startswith("-")]
    running = bool(words) and words[0] == "run"
    try:
        args = parse(argv)
    except SystemExit as e:  # a usage error: `run` exits as docker run does for one
        status = RUN_FAILED if running and e.code == 2 else e.code
        if e.code == 2 and "--json" in argv[: argv.index("--") if "--" in argv else None]:
            # (a program reading the report gets a document whichever check failed)
            print(json.dumps({"error": _Parser.last_error, "exit_status": status}), flush=True)
        raise SystemExit(status) from None
    verbose = bool(getattr(args, "verbose", False))  # (the runs' commands have no -v)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="oci2vm: %(message)s",
        stream=sys.stderr,
    )
    # urllib3's retries are ours to tell (or not): an error stays one line, -q stays quiet.
    logging.getLogger("urllib3").setLevel(logging.NOTSET if verbose else logging.ERROR)
    as_json = bool(getattr(args, "json", False))
    # `oci2vm run` exits with the workload's status and `check` with its verdict: their
    # own failures are told apart, as docker run's are.
    failed = RUN_FAILED if args.command in ("run", "check") else 1
    try:
        config = config_from(args)
    except Oci2vmError as e:
        return _failed(f"error: {e}", failed, as_json)
    reporter = Reporter(quiet=config.quiet, json_output=config.json)
    try:
        with signals_unwind():
            from oci2vm.commands import command

            if config.detach and not runs.detached():
                from oci2vm.commands.runs import detach_run

                return detach_run(config, argv, reporter)
            return command(args.command)(config, reporter)
    except Oci2vmError as e:
        return _failed(f"error: {e}", failed, as_json)
    except MemoryError:  # (a limit set by ulimit -v or a cgroup; its temporary files are gone)
        return _failed("error: out of memory", failed, as_json)
    except KeyboardInterrupt:
        return _failed("interrupted", 128 + signal.SIGINT, as_json)
    except Terminated as e:
        return _failed(f"stopped by {signal.Signals(e.signum).name}", 128 + e.signum, as_json)


def _failed(message: str, status: int, as_json: bool) -> int:
    """Say why on stderr; with --json, also as the one JSON object on stdout, so that a
    program reading the report gets a document either way."""
    print(f"oci2vm: {message}", file=sys.stderr)
    if as_json:
        text = message.removeprefix("error: ")
        print(json.dumps({"error": text, "exit_status": status}), flush=True)
    return status


# Every signal whose default action ends the process and which someone sends to stop one
# (Ctrl-C, Ctrl-\, kill, a closed terminal, a timer, a stray USR1): each unwinds the
# command instead, so no temporary output is left behind.
STOP_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
)  # fmt: skip


@contextmanager
def signals_unwind() -> Iterator[None]:
    """Turn the signals a user or a CI runner stops a command with into exceptions, so the
    command unwinds and removes its temporary outputs; while it unwinds, further signals
    are ignored (a second Ctrl-C must not leave a half-removed output behind). A signal
    ignored when the command starts stays ignored, as a shell's background job ignores
    SIGINT and nohup SIGHUP; the others still unwind (a background job's SIGTERM)."""

    def stop(signum: int, _frame: object) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    previous = {
        signum: signal.signal(signum, stop)
        for signum in STOP_SIGNALS
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
