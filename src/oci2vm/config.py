"""Every option of every command, in one frozen dataclass; defaults live here, once."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from oci2vm.errors import Oci2vmError
from oci2vm.image.model import Platform

# `oci2vm check`'s default: a system's login prompt, or the line oci2vm's init writes on
# an app disk's console when its workload starts (init.sh; an app shows no login).
CHECK_EXPECT = r"login:|oci2vm-init: the workload started"
# A kernel command line word for systemd images, in grub.cfg and in run's direct boot
# (kernel-command-line(7)): no systemd-firstboot prompts on the first boot that the
# "uninitialized" machine-id makes (prepare/bootcfg.py); other inits ignore it.
FIRSTBOOT_OFF = "systemd.firstboot=off"


class OutputFormat(StrEnum):
    EXT4 = "ext4"
    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VDI = "vdi"
    VHDX = "vhdx"


# File name extensions that name a format.
EXTENSIONS: dict[str, OutputFormat] = {
    ".ext4": OutputFormat.EXT4,
    ".img": OutputFormat.RAW,
    ".raw": OutputFormat.RAW,
    ".qcow2": OutputFormat.QCOW2,
    ".vmdk": OutputFormat.VMDK,
    ".vdi": OutputFormat.VDI,
    ".vhdx": OutputFormat.VHDX,
}


class BootMode(StrEnum):
    HYBRID = "hybrid"  # BIOS and UEFI from one disk
    BIOS = "bios"
    UEFI = "uefi"


class PartitionTable(StrEnum):
    GPT = "gpt"
    MBR = "mbr"


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class Bus(StrEnum):
    VIRTIO = "virtio"
    SATA = "sata"
    IDE = "ide"
    NVME = "nvme"


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class PullPolicy(StrEnum):
    """When a registry is asked for an image's manifest (docker run --pull's words)."""

    ALWAYS = "always"  # every time (a build's default: a tag says what it points to now)
    MISSING = "missing"  # only when the cache lacks the image (docker run's default)
    NEVER = "never"  # never: the cache must hold it


class InitMode(StrEnum):
    AUTO = "auto"  # system when the image has an init, else app
    SYSTEM = "system"  # the image's init takes over as PID 1
    APP = "app"  # oci2vm's init stays PID 1 and runs Entrypoint + Cmd


class InitrdChoice(StrEnum):
    AUTO = "auto"  # see prepare/initrd.py for how it decides
    IMAGE = "image"  # the image's own initrd (none: boot without one)
    OWN = "own"  # oci2vm's initramfs


class KernelKind(StrEnum):
    AUTO = "auto"  # the image's kernel, else Debian's
    IMAGE = "image"
    DEBIAN = "debian"
    DEB = "deb"  # a kernel package file
    SOURCE = "source"  # an image source whose tree holds a kernel


@dataclass(frozen=True, slots=True)
class KernelChoice:
    """--kernel: where the disk's kernel comes from."""

    kind: KernelKind = KernelKind.AUTO
    suite: str | None = None  # debian: None = the image's own release, else stable
    flavour: str | None = None  # debian: None = the architecture's default flavour
    location: str = ""  # deb: the file; source: the image source

    @classmethod
    def parse(cls, text: str) -> KernelChoice:
        head, _, rest = text.partition(":")
        if text in ("auto", "image"):
            return cls(KernelKind(text))
        if head == "debian":
            suite, _, flavour = rest.partition(":")
            if ":" in flavour:
                raise Oci2vmError(f"--kernel {text!r}: expected debian[:SUITE[:FLAVOUR]]")
            return cls(KernelKind.DEBIAN, suite=suite or None, flavour=flavour or None)
        if text.endswith(".deb") and os.path.isfile(text):
            return cls(KernelKind.DEB, location=text)
        if not text:
            raise Oci2vmError("--kernel needs a value: auto, image, debian[:SUITE[:FLAVOUR]], "
                              "an image source or a kernel .deb")  # fmt: skip
        if "/" not in text and "." not in text:  # a bare word: meant as one of ours?
            import difflib

            meant = difflib.get_close_matches(head, ("auto", "image", "debian"), 1, 0.7)
            if meant:
                raise Oci2vmError(
                    f"--kernel {text!r}: did you mean {meant[0]}? (for an image of that "
                    f"name in a registry, write docker://{text})"
                )
        return cls(KernelKind.SOURCE, location=text)


class NetworkMode(StrEnum):
    NONE = "none"  # nothing written: the image's own configuration, if any
    DHCP = "dhcp"
    STATIC = "static"


@dataclass(frozen=True, slots=True)
class NetworkChoice:
    """--network: how the booted system configures its first NIC."""

    mode: NetworkMode = NetworkMode.DHCP
    address: str = ""  # static: ADDR/PREFIX
    gateway: str = ""
    dns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> NetworkChoice:
        if text in ("none", "dhcp"):
            return cls(NetworkMode(text))
        head, _, rest = text.partition(":")
        parts = rest.split(",")
        if head != "static" or len(parts) < 2:
            raise Oci2vmError(
                f"--network {text!r}: expected none, dhcp or static:ADDR/PREFIX,GW[,DNS...]"
            )
        try:
            address = ipaddress.ip_interface(parts[0])
            gateway = ipaddress.ip_address(parts[1])
            dns = tuple(str(ipaddress.ip_address(d)) for d in parts[2:])
        except ValueError as e:
            raise Oci2vmError(f"--network {text!r}: {e}") from e
        if "/" not in parts[0]:
            raise Oci2vmError(f"--network {text!r}: the address needs its /PREFIX")
        if gateway not in address.network or gateway == address.ip:
            raise Oci2vmError(f"--network {text!r}: the gateway is not on {address.network}")
        return cls(NetworkMode.STATIC, str(address), str(gateway), dns)


USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # Debian adduser's NAME_REGEX, bounded


@dataclass(frozen=True, slots=True)
class UserSpec:
    """--add-user NAME[:PASSWORD][:sudo]: a login account for the booted system."""

    name: str
    password: str | None = None  # None: no password login (a key, or none)
    sudo: bool = False

    @classmethod
    def parse(cls, text: str) -> UserSpec:
        """The password is everything between the first ':' and a final ':sudo', so it
        may hold ':' itself (but may not end with ':sudo')."""
        name, colon, rest = text.partition(":")
        sudo = rest == "sudo" or rest.endswith(":sudo")
        if sudo:
            rest = rest.removesuffix("sudo").removesuffix(":")
        if not USER_NAME.fullmatch(name):
            raise Oci2vmError(f"--add-user {name!r}: expected a user name "
                              "(lower case letters, digits, '_' and '-', at most 32)")  # fmt: skip
        if name == "root":
            raise Oci2vmError("--add-user root: use --root-password for root")
        if colon and not rest and not sudo:
            raise Oci2vmError(f"--add-user {name}: the password is empty")
        return cls(name, rest or None, sudo)


@dataclass(frozen=True, slots=True)
class PortMapping:
    """-p [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|udp]; host_port 0 until the run picks a free
    one (-p GUEST_PORT, -p HOST_IP::GUEST_PORT)."""

    host_port: int
    guest_port: int
    host_ip: str = "127.0.0.1"
    protocol: str = "tcp"


DNS_WORD = re.compile(r"[A-Za-z0-9_.:-]+")  # a nameserver, search domain or resolver option


@dataclass(frozen=True, slots=True)
class Volume:
    """-v HOSTDIR:GUESTDIR[:ro], or -v HOSTFILE:GUESTFILE[:ro] (`file`: read-only, its bytes
    travel with the run's arguments; writable, it is shared as a directory of its own that
    holds a hard link to it; the init binds either over GUESTFILE). `create`: HOSTDIR
    did not exist when parsed, and is made when the run starts, as docker run -v makes it."""

    host: Path
    guest: str
    read_only: bool = False
    file: bool = False
    create: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    source: str = ""
    output: Path | None = None
    format: OutputFormat | None = None  # None: from the output's extension
    platform: Platform = field(default_factory=Platform)
    cache_dir: Path | None = None
    creds: str | None = None
    auth_file: Path | None = None
    tls_verify: bool = True  # False covers the source's registry host only
    insecure_hosts: tuple[str, ...] = ()  # more hosts: TLS not verified, plain HTTP allowed
    network_timeout: float = 60.0  # seconds a registry response may go without progress
    pull: PullPolicy = PullPolicy.ALWAYS  # run's default is docker run's: missing
    # the filesystem and disk
    size: int | None = None  # bytes; None = content + headroom
    fs_uuid: str | None = None  # None = derived from the image digest
    boot: BootMode = BootMode.HYBRID
    table: PartitionTable = PartitionTable.GPT
    compress: bool = False
    # the system inside
    hostname: str | None = None  # None = from the image name
    root_password: str | None = None
    ssh_keys: tuple[Path, ...] = ()  # root's
    users: tuple[UserSpec, ...] = ()  # --add-user (not `user`, the workload's)
    user_ssh_keys: tuple[tuple[str, Path], ...] = ()  # --ssh-key USER=FILE
    cloud_init: Path | None = None  # --cloud-init: user-data for the image's cloud-init
    kernel: KernelChoice = field(default_factory=KernelChoice)
    initrd: InitrdChoice = InitrdChoice.AUTO
    init: InitMode = InitMode.AUTO
    # `run SOURCE`: --init auto decides as docker run would (see prepare/kernel.mode_of)
    docker_run: bool = False
    network: NetworkChoice = field(default_factory=NetworkChoice)
    mirror: str | None = None  # Debian mirror; None: $OCI2VM_DEBIAN_MIRROR, else Debian's
    keyrings: tuple[Path, ...] = ()  # OpenPGP keyrings for the Debian archive; () = Debian's
    allow_expired_release: bool = False
    # the workload of app mode (docker run's options); None: the image config's
    command: tuple[str, ...] | None = None  # replaces Cmd
    entrypoint: str | None = None  # replaces Entrypoint ("" clears it)
    env: tuple[str, ...] = ()  # KEY=VALUE added to the config's Env in order; a bare KEY unsets
    workdir: str | None = None
    user: str | None = None  # NAME|UID[:GROUP|GID]
    publish: tuple[PortMapping, ...] = ()
    publish_all: bool = False  # -P: every exposed port, from a free host port
    privileged: bool = False  # docker's --privileged: what the VM's workload has already
    cap_add: tuple[str, ...] = ()  # docker's --cap-add: held already by root's workload
    volumes: tuple[Volume, ...] = ()
    tmpfs: tuple[str, ...] = ()  # PATH[:OPTIONS], a tmpfs mounted there
    add_hosts: tuple[str, ...] = ()  # NAME:IP (or NAME=IP) lines added to /etc/hosts
    dns: tuple[str, ...] = ()  # --dns: the nameservers of the workload's resolv.conf
    dns_search: tuple[str, ...] = ()  # --dns-search: its search domains ("." for none)
    dns_options: tuple[str, ...] = ()  # --dns-option: its options lines' words
    read_only: bool = False  # the root filesystem mounted read-only
    ulimits: tuple[str, ...] = ()  # NAME=SOFT[:HARD], docker's --ulimit
    stop_signal: str | None = None  # replaces the config's StopSignal
    stop_timeout: float | None = None  # seconds from a stop to the VM killed; < 0: none
    interactive: bool = False
    tty: bool = False
    discard: bool = False  # --rm: a disk's run throws the guest's writes away
    # running
    firmware: Firmware = Firmware.BIOS
    memory_mib: int = 1024
    cpus: int = 2
    accel: Accel = Accel.AUTO
    bus: Bus = Bus.VIRTIO
    expect: str = CHECK_EXPECT
    timeout: float = 300.0
    # detached runs (run -d; ps, logs, stop, wait, rm)
    detach: bool = False
    name: str | None = None  # --name: the run's; None: a new one
    runs: tuple[str, ...] = ()  # the runs a command names (or the beginnings of their names)
    follow: bool = False  # logs -f
    all: bool = False  # ps -a, rm -f's counterpart for ps: ended runs too
    force: bool = False  # rm -f: a running one is killed first
    # reporting
    quiet: bool = False
    json: bool = False

    def workload_options(self) -> list[str]:
        """The docker run options given that only an app image's workload takes."""
        return [
            flag
            for flag, value in (
                ("--user", self.user),
                ("--env", self.env or None),
                ("--workdir", self.workdir),
                ("--entrypoint", self.entrypoint),
                ("--volume", self.volumes or None),
                ("--tmpfs", self.tmpfs or None),
                ("--add-host", self.add_hosts or None),
                ("--dns", self.dns or None),
                ("--dns-search", self.dns_search or None),
                ("--dns-option", self.dns_options or None),
                ("--read-only", self.read_only or None),
                ("--ulimit", self.ulimits or None),
                ("--stop-signal", self.stop_signal),
                ("--stop-timeout", self.stop_timeout),
                ("a command to run", self.command),
            )
            if value is not None
        ]

    def system_options(self) -> list[str]:
        """The options given that prepare a bootable system, which a bare root filesystem
        (--format ext4, the image's tree as its layers have it) does not get."""
        return (
            _given(
                ("--hostname", self.hostname is not None),
                ("--root-password", self.root_password is not None),
                ("--ssh-key", bool(self.ssh_keys or self.user_ssh_keys)),
                ("--add-user", bool(self.users)),
                ("--cloud-init", self.cloud_init is not None),
                ("--kernel", self.kernel != KernelChoice()),
                ("--initrd", self.initrd is not InitrdChoice.AUTO),
                ("--init", self.init is not InitMode.AUTO),
                ("--network", self.network != NetworkChoice()),
                ("--boot", self.boot is not BootMode.HYBRID),
                ("--table", self.table is not PartitionTable.GPT),
                ("--mirror", self.mirror is not None),
                ("--keyring", bool(self.keyrings)),
            )
            + self.workload_options()
        )

    def disk_options(self) -> list[str]:
        """The options given that shape a disk as it is built: a disk given to run or
        check boots as it was built, without them."""
        return self.system_options() + _given(
            ("--size", self.size is not None), ("--uuid", bool(self.fs_uuid))
        )

    def output_file_options(self) -> list[str]:
        """The options given that shape only the output file (run and check write none)."""
        return _given(("--format", self.format is not None), ("--compress", self.compress))

    def output_format(self) -> OutputFormat:
        """--format, else the output's extension; a known extension of another format than
        --format's is refused (`-o disk.qcow2 --format raw` would be a raw disk that every
        tool reading the name takes for qcow2); .img may be any format."""
        out = self.output
        if out is not None and str(out) == "-":
            raise Oci2vmError("-o -: a disk is written out of order, not to a stream: name a file")
        if out is not None and os.path.isdir(out):
            raise Oci2vmError(f"-o {out}: is a directory: name the file to write")
        named = EXTENSIONS.get(out.suffix.lower()) if out is not None else None
        if self.format is not None:
            if (
                out is not None
                and out.suffix.lower() != ".img"
                and named not in (None, self.format)
            ):
                raise Oci2vmError(
                    f"-o {out.name}: its extension says {named}, --format says {self.format}: "
                    "rename it, or leave out --format"
                )
            return self.format
        if self.output is None:
            return OutputFormat.RAW
        fmt = named
        if fmt is None:
            raise Oci2vmError(
                f"cannot tell the format of {self.output.name!r} from its extension: "
                "use --format " + "|".join(f.value for f in OutputFormat)
            )
        return fmt


def _given(*flags: tuple[str, bool]) -> list[str]:
    """The flags of (flag, given) pairs that were given, in their order."""
    return [flag for flag, given in flags if given]
