"""What our init does at boot (BootSpec), how it is written for the init to read (a file of
shell assignments, every value single-quoted), and docker run's rules for turning an image
config and the command line's options into the workload of app mode.

The root filesystem is not in the spec: the kernel command line's `root=` names it (GRUB's
entries and `oci2vm run` both write it), so one initramfs serves any disk it is given.
User names are resolved in the guest from the root's /etc/passwd and /etc/group, as docker
resolves them when the container starts; HOME likewise, when the environment lacks it.
"""

from __future__ import annotations

import posixpath
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from oci2vm.config import DNS_WORD, Config, Volume
from oci2vm.errors import Oci2vmError
from oci2vm.image.model import ImageConfig

SPEC_PATH = "etc/oci2vm/spec"  # in the initramfs
FILES_DIR = "etc/oci2vm/files"  # the files of -v FILE:PATH:ro, by their volume's tag
MAX_VOLUME_FILE = 64 << 20  # bytes of one such file (it travels in the guest's memory)
DEFAULT_INIT = "/sbin/init"
# Docker's PATH when the image's Env has none (moby's oci.DefaultPathEnv on Linux).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "oci2vm"
# Docker's stop timeout: how long the workload has between the stop signal and SIGKILL.
STOP_GRACE_SECONDS = 10.0


class Mode(StrEnum):
    SYSTEM = "system"  # the root's own init takes over as PID 1
    APP = "app"  # our init stays PID 1 and runs the workload


@dataclass(frozen=True, slots=True)
class VolumeMount:
    """A 9p share the host exports under `tag`, mounted at `path` in the guest; a tag
    file<N> is a file that came in the run's archive (FILES_DIR), bound over `path`; a tag
    fvol<N> is a share that holds one file, `f` (a link to the host's), bound over `path`."""

    tag: str
    path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class BootSpec:
    """Everything the init needs besides the root device (see the module's docstring)."""

    mode: Mode = Mode.SYSTEM
    init: str = DEFAULT_INIT  # system mode; the kernel command line's init= overrides it
    argv: tuple[str, ...] = ()  # app mode: the workload, argv[0] looked up in its PATH
    env: tuple[str, ...] = ()  # KEY=VALUE, complete but for HOME when the user's is meant
    workdir: str = "/"
    user: str = ""  # docker's NAME|UID[:GROUP|GID]; "" is root
    hostname: str = DEFAULT_HOSTNAME
    stop_signal: int = int(signal.SIGTERM)
    tty: bool = False
    interactive: bool = False
    volumes: tuple[VolumeMount, ...] = ()
    tmpfs: tuple[tuple[str, str], ...] = ()  # (path, mount options) of docker's --tmpfs
    hosts: tuple[tuple[str, str], ...] = ()  # (address, name) lines added to /etc/hosts
    # resolv.conf's nameservers and search domains in place of the network's; options added
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    read_only: bool = False  # the root mounted read-only once the workload's mounts exist
    # The workload's resource limits: (sh's ulimit flag, soft, hard) in ulimit's units,
    # UNLIMITED for none (docker run's --ulimit; see workload_limits()).
    limits: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        texts = (self.init, self.workdir, self.user, self.hostname, *self.argv, *self.env)
        texts += tuple(w for pair in self.tmpfs + self.hosts for w in pair)
        if any("\0" in t for t in texts + tuple(v.path for v in self.volumes)):
            raise Oci2vmError("a NUL character cannot be passed to a program")
        if self.mode is Mode.APP and not self.argv:
            raise Oci2vmError("app mode needs a command to run")
        for what, path in (("working directory", self.workdir), ("init", self.init)):
            if not path.startswith("/"):
                raise Oci2vmError(f"the {what} must be an absolute path, not {path!r}")
        for entry in self.env:
            if "=" not in entry or entry.startswith("="):
                raise Oci2vmError(f"malformed environment entry {entry!r}: expected KEY=VALUE")
        for volume in self.volumes:
            if not volume.path.startswith("/") or not volume.tag.isidentifier():
                raise Oci2vmError(f"malformed volume mount {volume.tag!r} -> {volume.path!r}")
        for path, options in self.tmpfs:
            if not path.startswith("/") or not _MOUNT_OPTIONS.fullmatch(options):
                raise Oci2vmError(f"malformed tmpfs mount {path!r} ({options!r})")
        for address, name in self.hosts:
            if not _HOST_NAME.fullmatch(name) or not _ADDRESS.fullmatch(address):
                raise Oci2vmError(f"malformed hosts line {address!r} {name!r}")
        for address in self.dns:
            if not _ADDRESS.fullmatch(address):
                raise Oci2vmError(f"malformed nameserver {address!r}")
        for word in (*self.dns_search, *self.dns_options):
            if not DNS_WORD.fullmatch(word):
                raise Oci2vmError(f"malformed resolv.conf word {word!r}")
        flags = {flag for flag, _unit in ULIMITS.values()}
        for flag, soft, hard in self.limits:
            if flag not in flags or min(soft, hard) < UNLIMITED:
                raise Oci2vmError(f"malformed resource limit -{flag} {soft}:{hard}")


_MOUNT_OPTIONS = re.compile(r"[A-Za-z0-9_=.,+-]*")
_HOST_NAME = re.compile(r"[^\s#]+")
_ADDRESS = re.compile(r"[0-9A-Fa-f.:]+")


# -- the file the init reads ---------------------------------------------------------------


def shell_quote(text: str) -> str:
    """`text` as one single-quoted sh word: every byte but NUL survives (a quote inside
    ends the quoting, is escaped, and starts it again)."""
    return "'" + text.replace("'", "'\\''") + "'"


def shell_words(words: Sequence[str]) -> str:
    """Words as a string of quoted words, for the init's `eval "set -- $VAR"`."""
    return " ".join(shell_quote(word) for word in words)


def render(spec: BootSpec) -> bytes:
    """The spec as sh assignments (the init sources it): lists are strings of quoted words,
    so each value is quoted twice and the init's eval unquotes the inner layer."""
    has_home = any(entry.startswith("HOME=") for entry in spec.env)
    volumes = [w for v in spec.volumes for w in (v.tag, v.path, "ro" if v.read_only else "rw")]
    values = {
        "SPEC_MODE": spec.mode.value,
        "SPEC_INIT": spec.init,
        "SPEC_ARGV": shell_words(spec.argv),
        "SPEC_ARGS": shell_words(spec.argv[1:]),  # after argv[0], which the init looks up
        "SPEC_PATH": next(
            (e[5:] for e in reversed(spec.env) if e.startswith("PATH=")), DEFAULT_PATH
        ),
        "SPEC_ENV": shell_words(spec.env),
        "SPEC_HAS_HOME": "1" if has_home else "0",
        "SPEC_WORKDIR": spec.workdir,
        "SPEC_USER": spec.user,
        "SPEC_HOSTNAME": spec.hostname,
        "SPEC_STOP_SIGNAL": str(spec.stop_signal),
        "SPEC_TTY": "1" if spec.tty else "0",
        "SPEC_INTERACTIVE": "1" if spec.interactive else "0",
        "SPEC_VOLUMES": shell_words(volumes),
        "SPEC_TMPFS": shell_words([w for pair in spec.tmpfs for w in pair]),
        "SPEC_HOSTS": shell_words([w for pair in spec.hosts for w in pair]),
        "SPEC_DNS": shell_words(spec.dns),
        "SPEC_DNS_SEARCH": shell_words(spec.dns_search),
        "SPEC_DNS_OPTIONS": shell_words(spec.dns_options),
        "SPEC_READ_ONLY": "1" if spec.read_only else "0",
        "SPEC_LIMITS": shell_words(
            [
                word
                for flag, soft, hard in spec.limits
                for word in (flag, _limit_word(soft), _limit_word(hard))
            ]
        ),
    }
    lines = ["# oci2vm boot spec, read by /init (sh assignments)"]
    lines += [f"{key}={shell_quote(value)}" for key, value in values.items()]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _limit_word(value: int) -> str:
    return "unlimited" if value == UNLIMITED else str(value)


# -- docker run's rules --------------------------------------------------------------------


def parse_signal(text: str) -> int:
    """A StopSignal as images write it: SIGTERM, TERM or 15 (moby's signal.ParseSignal)."""
    if not text:
        return int(signal.SIGTERM)
    if text.isdigit():
        number = int(text)
        if not 0 < number < signal.NSIG:
            raise Oci2vmError(f"invalid stop signal {text!r}")
        return number
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    realtime = _REALTIME.fullmatch(name)  # RTMIN+3 (systemd's), as moby's SignalMap has
    if realtime:
        base = int(signal.SIGRTMIN if realtime[1] == "MIN" else signal.SIGRTMAX)
        number = base + int(realtime[2] or 0)
        if not signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            raise Oci2vmError(f"invalid stop signal {text!r}")
        return number
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise Oci2vmError(f"invalid stop signal {text!r}") from None


_REALTIME = re.compile(r"SIGRT(MIN|MAX)([+-]\d{1,2})?")


def merge_env(*layers: Sequence[str]) -> tuple[str, ...]:
    """KEY=VALUE lists merged in order: a later value replaces an earlier one in place, and
    a bare KEY (`-e KEY` unset where oci2vm runs) removes it, as docker's daemon does."""
    merged: dict[str, str] = {}
    for layer in layers:
        for entry in layer:
            key, sep, _ = entry.partition("=")
            if sep:
                merged[key] = entry
            else:
                merged.pop(key, None)
    return tuple(merged.values())


def workload_argv(image: ImageConfig, config: Config) -> tuple[str, ...]:
    """Entrypoint + Cmd as docker run computes them: --entrypoint replaces the Entrypoint
    ("" clears it) and drops the image's Cmd; arguments after -- replace Cmd."""
    entrypoint = image.entrypoint or ()
    cmd = image.cmd or ()
    if config.entrypoint is not None:
        entrypoint = (config.entrypoint,) if config.entrypoint else ()
        cmd = ()
    if config.command is not None:
        cmd = config.command
    argv = tuple(entrypoint) + tuple(cmd)
    if not argv:
        raise Oci2vmError(
            "no command to run: the image has no Entrypoint or Cmd; give one (oci2vm run "
            "IMAGE COMMAND ARG..., oci2vm build IMAGE -o OUT -- COMMAND ARG...) or "
            "--entrypoint"
        )
    return argv


def volume_tag(volume: Volume) -> str:
    """The prefix of a -v's tag: a shared directory, a read-only file in the run's
    archive, or a writable file shared by a directory of its own."""
    if not volume.file:
        return "vol"
    return "file" if volume.read_only else "fvol"


def workload(image: ImageConfig, config: Config, *, hostname: str | None = None) -> BootSpec:
    """The app-mode BootSpec for `image` run with `config`'s docker run options.

    `hostname` is used when config.hostname is None (then DEFAULT_HOSTNAME)."""
    name = config.hostname or hostname or DEFAULT_HOSTNAME
    env = merge_env([f"PATH={DEFAULT_PATH}", f"HOSTNAME={name}"], image.env, config.env)
    if config.tty and not any(e.startswith("TERM=") for e in env):
        env += ("TERM=xterm",)  # what docker run -t adds
    volumes = tuple(
        VolumeMount(f"{volume_tag(v)}{i}", v.guest, v.read_only)
        for i, v in enumerate(config.volumes)
    )
    if config.workdir is not None and not config.workdir.startswith("/"):
        raise Oci2vmError(  # docker run's words for it (moby's translateWorkingDir)
            f"the working directory {config.workdir!r} is invalid, it needs to be an absolute path"
        )
    workdir = config.workdir or image.working_dir or "/"
    return BootSpec(
        mode=Mode.APP,
        argv=workload_argv(image, config),
        env=env,
        workdir=posixpath.normpath("/" + workdir.lstrip("/")) if workdir != "/" else "/",
        user=config.user if config.user is not None else image.user,
        hostname=name,
        stop_signal=parse_signal(
            image.stop_signal if config.stop_signal is None else config.stop_signal
        ),
        tty=config.tty,
        interactive=config.interactive,
        volumes=volumes,
        tmpfs=tuple(tmpfs_mount(option) for option in config.tmpfs),
        hosts=tuple(hosts_line(option) for option in config.add_hosts),
        dns=config.dns,
        dns_search=config.dns_search,
        dns_options=config.dns_options,
        read_only=config.read_only,
        limits=workload_limits(config.ulimits),
    )


# docker run's --ulimit names: the flag of sh's ulimit that sets it, and the bytes of
# ulimit's unit for it (1: the value as setrlimit(2) takes it).
ULIMITS = {
    "core": ("c", 512), "cpu": ("t", 1), "data": ("d", 1024), "fsize": ("f", 512),
    "locks": ("x", 1), "memlock": ("l", 1024), "msgqueue": ("q", 1), "nice": ("e", 1),
    "nofile": ("n", 1), "nproc": ("u", 1), "rss": ("m", 1024), "rtprio": ("r", 1),
    "sigpending": ("i", 1), "stack": ("s", 1024), "as": ("v", 1024),
}  # fmt: skip
UNLIMITED = -1  # docker's -1: RLIM_INFINITY
# Open files when --ulimit does not say: what Docker >= 25 and systemd give a service (the
# kernel's own hard limit, 4096, would stop a workload that raises its soft limit).
DEFAULT_NOFILE = (1024, 524288)
NR_OPEN = 1 << 20  # the kernel's fs.nr_open: no open-files limit goes above it


def workload_limits(options: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """docker run's --ulimit NAME=SOFT[:HARD] options as (flag, soft, hard), a later one
    for a name replacing an earlier one, with the default for open files."""
    limits: dict[str, tuple[str, int, int]] = {
        "nofile": ("n", *DEFAULT_NOFILE),
    }
    for option in options:
        name, sep, values = option.partition("=")
        soft_text, _, hard_text = values.partition(":")
        try:
            soft = int(soft_text)
            hard = int(hard_text) if hard_text else soft
        except ValueError:
            soft = hard = -2
        if name not in ULIMITS or not sep or min(soft, hard) < UNLIMITED:
            known = ", ".join(sorted(ULIMITS))
            raise Oci2vmError(
                f"--ulimit {option!r}: expected NAME=SOFT[:HARD] with NAME one of {known}"
                " and numbers (-1: unlimited)"
            )
        if hard != UNLIMITED and (soft == UNLIMITED or soft > hard):
            raise Oci2vmError(f"--ulimit {option!r}: the soft limit is above the hard one")
        if name == "nofile" and (UNLIMITED in (soft, hard) or max(soft, hard) > NR_OPEN):
            raise Oci2vmError(f"--ulimit {option!r}: open files are at most {NR_OPEN} (fs.nr_open)")
        flag, unit = ULIMITS[name]
        if any(v != UNLIMITED and v % unit for v in (soft, hard)):
            raise Oci2vmError(f"--ulimit {option!r}: {name} is set in units of {unit} bytes")
        scaled = [v if v == UNLIMITED else v // unit for v in (soft, hard)]
        limits[name] = (flag, scaled[0], scaled[1])
    return tuple(limits.values())


# docker's --tmpfs mounts without options take these (moby's default tmpfs options).
TMPFS_DEFAULTS = "noexec,nosuid,nodev"
HOST_GATEWAY = "10.0.2.2"  # the host, as QEMU's user-mode network reaches it


def tmpfs_mount(option: str) -> tuple[str, str]:
    """docker's --tmpfs PATH[:OPTIONS] as (path, mount options)."""
    path, _, options = option.partition(":")
    if not path.startswith("/"):
        raise Oci2vmError(f"--tmpfs {option!r}: the path must be absolute")
    path = posixpath.normpath(path)
    if path == "/":
        raise Oci2vmError(f"--tmpfs {option!r}: cannot mount over the root")
    options = ",".join(o for o in (TMPFS_DEFAULTS, options) if o)
    if not _MOUNT_OPTIONS.fullmatch(options):
        raise Oci2vmError(f"--tmpfs {option!r}: malformed mount options")
    return path, options


def check_options(config: Config) -> None:
    """The workload's options that need no image (--add-host, --ulimit, --tmpfs,
    --stop-signal), checked when the command line is read: before a pull or a kernel's
    download, not after them."""
    for option in config.add_hosts:
        hosts_line(option)
    for option in config.tmpfs:
        tmpfs_mount(option)
    workload_limits(config.ulimits)
    if config.stop_signal is not None:
        parse_signal(config.stop_signal)


def hosts_line(option: str) -> tuple[str, str]:
    """docker's --add-host NAME:IP (or NAME=IP) as (address, name); the address
    host-gateway is the host."""
    import ipaddress

    name, sep, address = option.partition("=")
    if not sep:
        name, sep, address = option.partition(":")
    address = HOST_GATEWAY if address == "host-gateway" else address.strip("[]")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise Oci2vmError(f"--add-host {option!r}: invalid IP address {address!r}") from None
    if not sep or not _HOST_NAME.fullmatch(name):
        raise Oci2vmError(f"--add-host {option!r}: expected NAME:IP")
    return address, name
