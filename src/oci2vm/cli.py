"""Command-line parsing only: options become one Config, then a command runs."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

from oci2vm import __version__
from oci2vm.config import (
    Accel,
    BootMode,
    Bus,
    Config,
    Firmware,
    OutputFormat,
    PartitionTable,
)
from oci2vm.errors import Oci2vmError, Terminated
from oci2vm.image.model import Platform
from oci2vm.report import Reporter
from oci2vm.util.units import parse_size

EXAMPLES = """\
sources (skopeo syntax):
  docker://REF or REF          a registry (debian:12 = docker.io/library/debian:12)
  oci:PATH[:TAG]               an OCI image layout directory
  oci-archive:PATH[:TAG]       a tar of an OCI image layout
  docker-archive:PATH[:REF]    docker save / podman save output
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
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, not {text!r}")
    return value


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


def _choice(
    p: argparse.ArgumentParser, flag: str, kind: type[StrEnum], default: StrEnum | None, text: str
) -> None:
    """An option whose values are a StrEnum's."""
    p.add_argument(flag, type=kind, choices=list(kind), default=default, help=text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no notes")
    p.add_argument("-v", "--verbose", action="store_true", help="log every external command")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")


def _source_options(p: argparse.ArgumentParser) -> None:
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


def _build_options(p: argparse.ArgumentParser) -> None:
    _choice(p, "--format", OutputFormat, None, "output format (default: from the -o extension)")
    p.add_argument("--size", type=_size, help="filesystem or disk size, e.g. 10G (sparse)")
    p.add_argument("--uuid", dest="fs_uuid", help="root filesystem UUID (default: from the image)")
    _choice(p, "--boot", BootMode, BootMode.HYBRID,
            "firmware the disk boots on (default: hybrid, both BIOS and UEFI)")  # fmt: skip
    _choice(p, "--table", PartitionTable, PartitionTable.GPT,
            "partition table (default: gpt; mbr for old BIOS platforms)")  # fmt: skip
    p.add_argument("--compress", action="store_true", help="compress qcow2 output")
    p.add_argument("--hostname", help="hostname (default: from the image name)")
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
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="public key for root's authorized_keys (repeatable)",
    )


def _vm_options(p: argparse.ArgumentParser) -> None:
    _choice(p, "--firmware", Firmware, Firmware.BIOS,
            "firmware to boot with (default: bios, SeaBIOS; uefi: OVMF)")  # fmt: skip
    p.add_argument(
        "--memory",
        dest="memory_mib",
        type=int,
        default=1024,
        metavar="MIB",
        help="guest memory in MiB (default: 1024)",
    )
    p.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: 2)")
    _choice(p, "--accel", Accel, Accel.AUTO,
            "auto (default) uses KVM where it works, else TCG emulation")  # fmt: skip
    _choice(p, "--bus", Bus, Bus.VIRTIO, "disk bus (default: virtio)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="oci2vm",
        description="Turn a container image into a bootable disk image, as an ordinary user.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"oci2vm {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="describe an image and what its layers hold")
    p.add_argument("source", help="the image (see the sources in oci2vm --help)")
    _source_options(p)
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
    _source_options(p)
    _build_options(p)
    _common(p)

    p = sub.add_parser("run", help="boot a disk (or a source, built first) in QEMU")
    p.add_argument("source", metavar="DISK|SOURCE")
    _source_options(p)
    _build_options(p)
    _vm_options(p)
    _common(p)

    p = sub.add_parser("check", help="boot headless and wait for a login prompt or a marker")
    p.add_argument("source", metavar="DISK|SOURCE")
    p.add_argument("--expect", default=r"login:", metavar="REGEX")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    _source_options(p)
    _build_options(p)
    _vm_options(p)
    _common(p)
    return top


def config_from(args: argparse.Namespace) -> Config:
    fields = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__}
    if "ssh_keys" in fields:
        fields["ssh_keys"] = tuple(fields["ssh_keys"])
    if "insecure_hosts" in fields:
        fields["insecure_hosts"] = tuple(fields["insecure_hosts"])
    password_file: Path | None = getattr(args, "root_password_file", None)
    if password_file is not None:
        fields["root_password"] = read_password(password_file)
    return Config(**fields)


PASSWORD_LIMIT = 4096  # bytes of a password file's first line


def read_password(path: Path) -> str:
    """The first line of `path` ('-': standard input), without its line ending."""
    try:
        if str(path) == "-":
            line = sys.stdin.readline(PASSWORD_LIMIT + 1)
        else:
            with path.open(encoding="utf-8") as f:
                line = f.readline(PASSWORD_LIMIT + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise Oci2vmError(f"cannot read the root password from {path}: {e}") from None
    password = line.rstrip("\r\n")
    if len(password) > PASSWORD_LIMIT:
        raise Oci2vmError(
            f"{path}: the first line is longer than {PASSWORD_LIMIT} characters: "
            "is it the password file?"
        )
    if not password:
        raise Oci2vmError(f"{path}: the root password is empty")
    return password


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="oci2vm: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from(args)
    except Oci2vmError as e:
        print(f"oci2vm: error: {e}", file=sys.stderr)
        return 1
    reporter = Reporter(quiet=config.quiet, json_output=config.json)
    try:
        with signals_unwind():
            from oci2vm.commands import command

            return command(args.command)(config, reporter)
    except Oci2vmError as e:
        print(f"oci2vm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("oci2vm: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as e:
        print(f"oci2vm: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def signals_unwind() -> Iterator[None]:
    """Turn the signals a user or a CI runner stops a command with into exceptions, so the
    command unwinds and removes its temporary outputs; while it unwinds, further signals
    are ignored (a second Ctrl-C must not leave a half-removed output behind)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield  # started in the background with SIGINT ignored: leave that as it is
        return

    def stop(signum: int, _frame: object) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
