"""QEMU command lines for built images: run one interactively, or boot it headless and watch
its serial console for a marker (optionally logging in and running commands).

KVM is used only when it works: /dev/kvm can exist and still be useless (nested
virtualization that emulates real mode instruction by instruction, or fails with "KVM internal
error"), so `accel="auto"` boots a 512-byte probe under KVM first and falls back to TCG.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import functools
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oci2vm.arch import Arch
from oci2vm.config import Accel, Bus, Firmware, PortMapping
from oci2vm.errors import Oci2vmError
from oci2vm.fs import EXT4_MAGIC, EXT4_MAGIC_OFFSET
from oci2vm.util import tools

log = logging.getLogger(__name__)

# The KVM probe is a PC boot sector: it runs on the PC architecture's emulator.
PROBE_ARCH = Arch.AMD64
KVM_DEVICE = Path("/dev/kvm")

TAIL_CHARS = 4000  # how much console output a CheckResult keeps

# (host port, guest port): QEMU's user network forwards TCP connections to 127.0.0.1:host
# into the guest's port (a loopback-only listener: nothing else on the network reaches it).
# A PortMapping (-p) says its host address and protocol itself.
PortForward = tuple[int, int] | PortMapping

# -- the KVM probe -------------------------------------------------------------------------
# A boot sector in 16-bit real mode, where broken nested KVM is at its worst. It spins ~1M
# loop iterations (a millisecond on working KVM, seconds where real mode is emulated), prints
# a marker on COM1, and ends QEMU by writing 0 to the isa-debug-exit port (exit status 1).
# It runs with the CPU options real boots use: on nested KVM that emulates real mode, the
# probe takes seconds (where TCG needs a fraction of one) or QEMU fails outright ("-cpu
# host" can abort with "failed to set MSR"), and either way the probe's deadline says TCG.
KVM_PROBE_MARKER = b"OCI2VM-KVM-PROBE-OK"
_PROBE_LOAD_ADDRESS = 0x7C00
_PROBE_CODE = bytes.fromhex(
    "fa"  # cli
    "31c0"  # xor ax, ax
    "8ed8"  # mov ds, ax
    "b91000"  # mov cx, 0x10            ; outer loop count
    "bbffff"  # 1: mov bx, 0xffff
    "4b"  # 2: dec bx
    "75fd"  # jnz 2b
    "e2f8"  # loop 1b
    "baf803"  # mov dx, 0x3f8          ; COM1 data port
    "be277c"  # mov si, message         ; 0x7c27, just after this code
    "ac"  # 3: lodsb
    "84c0"  # test al, al
    "7403"  # jz 4f
    "ee"  # out dx, al
    "ebf8"  # jmp 3b
    "baf400"  # 4: mov dx, 0xf4          ; isa-debug-exit
    "30c0"  # xor al, al
    "ee"  # out dx, al
    "f4"  # 5: hlt
    "ebfd"  # jmp 5b
)
KVM_PROBE_TIMEOUT = 3.0  # seconds; working KVM needs well under one, TCG-like speed fails


def kvm_probe_image() -> bytes:
    """The probe boot sector: code, the marker, and the 0x55AA signature."""
    message_address = _PROBE_LOAD_ADDRESS + len(_PROBE_CODE)
    assert _PROBE_CODE[0x14:0x16] == message_address.to_bytes(2, "little")
    image = _PROBE_CODE + KVM_PROBE_MARKER + b"\n\0"
    return image.ljust(510, b"\0") + b"\x55\xaa"


def kvm_device_usable() -> bool:
    """Whether /dev/kvm exists and this user may open it read-write."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


@functools.cache
def kvm_works() -> bool:
    """Whether KVM runs the probe, and faster than TCG emulates it; asked once per process.

    Working KVM runs the probe's loop natively, far faster than TCG. Nested KVM that
    emulates real mode runs it slower than TCG does, and such hosts also fail later in
    real guests (the kernel hangs after the boot loader), even when the probe finishes
    within its deadline: so the verdict compares the two, not the probe with a fixed time.
    """
    if not kvm_device_usable():
        log.info("KVM: %s is not usable; using TCG", KVM_DEVICE)
        return False
    tools.find_program(PROBE_ARCH.facts.qemu_binary, PROBE_ARCH.facts.qemu_package)
    kvm = probe_seconds("kvm")
    if kvm is None:
        return False
    tcg = probe_seconds("tcg")
    if tcg is not None and kvm >= tcg:
        log.info("KVM: the probe took %.2f s, TCG %.2f s; using TCG", kvm, tcg)
        return False
    log.info("KVM: the probe took %.2f s (TCG %s); using KVM", kvm, tcg)
    return True


def probe_seconds(accel: Literal["kvm", "tcg"]) -> float | None:
    """How long QEMU takes to run the probe under `accel`, or None if it did not finish
    within KVM_PROBE_TIMEOUT or failed."""
    qemu = PROBE_ARCH.facts.qemu_binary
    with tempfile.TemporaryDirectory(prefix="oci2vm-kvm-probe-") as tmp:
        image = Path(tmp, "probe.img")
        image.write_bytes(kvm_probe_image())
        argv = [
            qemu, *accel_args(accel), "-machine", "pc", "-m", "16", "-display", "none",
            "-nodefaults", "-no-user-config", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={image},format=raw,if=ide", "-no-reboot",
        ]  # fmt: skip
        started = time.monotonic()
        try:
            proc = tools.run(
                argv,
                input=b"",
                check=False,
                timeout=KVM_PROBE_TIMEOUT,
                package=PROBE_ARCH.facts.qemu_package,
            )
        except Oci2vmError:
            log.info("%s: the probe did not finish in %g s", accel, KVM_PROBE_TIMEOUT)
            return None
    seconds = time.monotonic() - started
    if KVM_PROBE_MARKER in (proc.stdout or b""):
        return seconds
    errors = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
    detail = errors[-1] if errors else f"exit status {proc.returncode}"
    log.info("%s: the probe failed in %.2f s (%s)", accel, seconds, detail)
    return None


def resolve_accel(accel: Accel | str) -> Literal["kvm", "tcg"]:
    accel = Accel(accel)
    if accel is Accel.TCG:
        return "tcg"
    if accel is Accel.KVM:
        if not kvm_device_usable():
            raise Oci2vmError(
                f"KVM was asked for but {KVM_DEVICE} cannot be opened: add yourself to the "
                "'kvm' group, or use accel 'tcg'"
            )
        return "kvm"
    return "kvm" if kvm_works() else "tcg"


def accel_args(accel: Literal["kvm", "tcg"]) -> list[str]:
    """QEMU arguments choosing `accel` and the CPU model it runs best."""
    # TCG's "max" CPU has every feature TCG emulates (x86-64-v2 and up, which some
    # distributions require); qemu64, the default, lacks them.
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # One host thread runs every vCPU in turn. With a thread per vCPU (MTTCG, QEMU 7.2's
    # default) a Linux 6.12 guest now and then oopses on a stale `int3` while another
    # vCPU patches kernel text (static keys, alternatives): seen as "Oops: int3" in
    # sched_clock_cpu and a panic a few seconds into boot, once in a few dozen boots
    # under load. Round-robin vCPUs see every code write in order.
    return ["-accel", "tcg,thread=single", "-cpu", "max"]


# -- command lines -------------------------------------------------------------------------


def copy_efi_vars(directory: Path, arch: Arch = Arch.AMD64) -> Path:
    """A writable copy of the UEFI firmware's variable store template, for one VM run."""
    f = arch.facts
    if not f.efi_vars.is_file() or not f.efi_code.is_file():
        raise Oci2vmError(
            f"UEFI firmware not found in {f.efi_code.parent}: install it with "
            f"'apt-get install {f.efi_package}'"
        )
    target = directory / f.efi_vars.name
    shutil.copyfile(f.efi_vars, target)
    return target


# QEMU's name for each image format `build` writes, by the magic its header starts with
# (VDI's sits at 0x40); anything else is a raw disk.
_MAGIC = (
    (0, b"QFI\xfb", "qcow2"),
    (0, b"KDMV", "vmdk"),
    (0, b"# Disk DescriptorFile", "vmdk"),
    (0, b"vhdxfile", "vhdx"),
    (0, b"conectix", "vpc"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),
)


def disk_format(disk: Path) -> str:
    """The image format of `disk`, read from its content as qemu-img reads it (a name
    says nothing: `-o disk.qcow2 --format raw` is a raw disk). A bare ext4 filesystem
    (`--format ext4`) is refused: no firmware boots one."""
    try:
        with open(disk, "rb") as f:
            head = f.read(2048)
    except FileNotFoundError:  # (a command line made for a disk yet to be written)
        return "qcow2" if disk.suffix.lower() == ".qcow2" else "raw"
    except OSError as e:
        raise Oci2vmError(f"cannot read {disk}: {e.strerror}") from None
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    at = EXT4_MAGIC_OFFSET
    if head[at : at + 2] == EXT4_MAGIC.to_bytes(2, "little") and head[510:512] != b"\x55\xaa":
        raise Oci2vmError(
            f"{disk} is an ext4 filesystem, not a disk: build one with --format raw or qcow2"
        )
    return "raw"


def refuse_unbootable(disk: Path) -> None:
    """A raw file without the boot signature (no MBR, nor a GPT's protective one) boots
    on neither firmware: `run` would sit at the firmware's "No bootable device" for ever
    (`check` reports that as its verdict)."""
    if disk_format(disk) != "raw":
        return
    with open(disk, "rb") as f:
        f.seek(510)
        signature = f.read(2)
    if signature != b"\x55\xaa":
        raise Oci2vmError(
            f"{disk} is not a disk image: no partition table (no boot signature at byte "
            "510), and not qcow2, vmdk, vdi, vhdx or vpc"
        )


def qemu_command(
    disk: Path,
    *,
    arch: Arch = Arch.AMD64,
    firmware: Firmware | str = Firmware.BIOS,
    memory_mib: int = 1024,
    cpus: int = 2,
    accel: Accel | str = Accel.AUTO,
    bus: Bus | str = Bus.VIRTIO,
    serial: str | Path = "stdio",
    snapshot: bool = False,
    efi_vars: Path | None = None,
    network: bool = False,
    forwards: Sequence[PortForward] = (),
) -> list[str]:
    """The QEMU command line that boots `disk` with its console on a serial port.

    `serial` is "stdio" (the serial port and, behind Ctrl-A C, the monitor on QEMU's stdin
    and stdout), a QEMU chardev spec such as "unix:/run/s,server=on,wait=off", or a Path
    (output written to that file). UEFI needs `efi_vars`, a copy_efi_vars() result.
    `snapshot` discards the guest's writes to the disk. `network` gives the guest one
    virtio NIC on QEMU's user network (DHCP in 10.0.2.0/24, the host's loopback at
    10.0.2.2), and `forwards` its TCP ports to the host's 127.0.0.1 (they need `network`).
    """
    firmware, bus = Firmware(firmware), Bus(bus)
    machine = _machine(arch, firmware, bus)
    argv = [
        arch.facts.qemu_binary,
        "-machine",
        machine,
        *accel_args(resolve_accel(accel)),
        "-m",
        str(memory_mib),
        "-smp",
        str(cpus),
        "-nographic",
        "-no-reboot",
    ]
    if firmware is Firmware.UEFI:
        if efi_vars is None:
            raise ValueError("firmware='uefi' needs efi_vars: pass copy_efi_vars(tmpdir)")
        argv += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={arch.facts.efi_code}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={efi_vars}",
        ]
    drive = f"file={disk},format={disk_format(disk)},if=none,id=disk0"
    if snapshot:
        # The guest's writes are thrown away, so its flushes need not reach the disk.
        drive += ",snapshot=on,cache=unsafe"
    argv += ["-drive", drive, *_disk_device_args(bus)]
    if isinstance(serial, Path):
        argv += ["-monitor", "none", "-serial", f"file:{serial}"]
    elif serial == "stdio":
        argv += ["-serial", "mon:stdio"]
    else:
        argv += ["-monitor", "none", "-serial", serial]
    return [*argv, "-nic", _nic(network, forwards)]


def _nic(network: bool, forwards: Sequence[PortForward]) -> str:
    """The -nic option: none, or user networking with `forwards` as hostfwd rules."""
    if not network:
        if forwards:
            raise ValueError("port forwards need network=True")
        return "none"
    return "user,model=virtio-net-pci" + "".join(hostfwd(f) for f in forwards)


def _mapping(forward: PortForward) -> PortMapping:
    return forward if isinstance(forward, PortMapping) else PortMapping(*forward)


def check_ports(forwards: Sequence[PortForward]) -> None:
    """Refuse a published host port that QEMU could not listen on before it starts: QEMU
    only says "Could not set up host forwarding rule", once the boot began."""
    for forward in forwards:
        mapping = _mapping(forward)
        with socket.socket(socket.AF_INET, _socket_type(mapping.protocol)) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU's
            try:
                probe.bind((mapping.host_ip, mapping.host_port))
            except OSError as e:
                why = {
                    errno.EADDRINUSE: "the port is already in use on the host",
                    errno.EACCES: "ports below 1024 need root",
                    errno.EADDRNOTAVAIL: "no interface of the host has that address",
                }.get(e.errno or 0, e.strerror)
                where = f"{mapping.host_ip}:{mapping.host_port}"
                raise Oci2vmError(f"cannot publish {where}/{mapping.protocol}: {why}") from None


def _socket_type(protocol: str) -> socket.SocketKind:
    return socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM


def free_port(protocol: str = "tcp", host_ip: str = "127.0.0.1") -> int:
    """A host port free now (the kernel's pick from its ephemeral range), as docker's -P
    takes one; QEMU binds it a moment later."""
    with socket.socket(socket.AF_INET, _socket_type(protocol)) as probe:
        probe.bind((host_ip, 0))
        port: int = probe.getsockname()[1]
        return port


def hostfwd(forward: PortForward) -> str:
    """One forward as QEMU's user network writes it (qemu-system(1), -netdev user):
    hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport; an empty guest address
    means the one QEMU's DHCP server gives the guest (10.0.2.15)."""
    mapping = _mapping(forward)
    for port in (mapping.host_port, mapping.guest_port):
        if not 0 < port < 65536:
            raise ValueError(f"not a TCP port: {port}")
    return (
        f",hostfwd={mapping.protocol}:{mapping.host_ip}:{mapping.host_port}-:{mapping.guest_port}"
    )


def _machine(arch: Arch, firmware: Firmware, bus: Bus) -> str:
    if not arch.has_bios:  # the PC machines below are the BIOS architecture's
        return arch.facts.qemu_machine
    # IDE means the i440FX's PIIX controller; q35 has AHCI (SATA) only. OVMF runs on both.
    if bus is Bus.IDE:
        return "pc"
    return "q35" if bus is Bus.SATA or firmware is Firmware.UEFI else "pc"


def _disk_device_args(bus: Bus) -> list[str]:
    if bus is Bus.VIRTIO:
        return ["-device", "virtio-blk-pci,drive=disk0,bootindex=0"]
    if bus is Bus.NVME:
        return ["-device", "nvme,drive=disk0,serial=oci2vm-disk0,bootindex=0"]
    # pc: ide.0 is the PIIX primary channel; q35: ide.0 is the first AHCI port.
    return ["-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=0"]


# -- running -------------------------------------------------------------------------------


def run_vm(
    disk: Path,
    *,
    arch: Arch = Arch.AMD64,
    firmware: Firmware | str = Firmware.BIOS,
    memory_mib: int = 1024,
    cpus: int = 2,
    accel: Accel | str = Accel.AUTO,
    bus: Bus | str = Bus.VIRTIO,
    snapshot: bool = False,
    network: bool = True,
    forwards: Sequence[PortForward] = (),
) -> int:
    """Boot `disk` with its serial console on this terminal; return QEMU's exit status.

    Ctrl-A X quits QEMU; the guest powering off ends it too. `snapshot` throws the
    guest's writes away; `forwards` are qemu_command's.
    """
    check_ports(forwards)
    with tempfile.TemporaryDirectory(prefix="oci2vm-vm-") as tmp:
        efi_vars = copy_efi_vars(Path(tmp), arch) if firmware == Firmware.UEFI else None
        argv = qemu_command(
            disk,
            arch=arch,
            firmware=firmware,
            memory_mib=memory_mib,
            cpus=cpus,
            accel=accel,
            bus=bus,
            serial="stdio",
            snapshot=snapshot,
            efi_vars=efi_vars,
            network=network,
            forwards=forwards,
        )
        return tools.run(
            argv,
            check=False,
            capture=False,
            package=arch.facts.qemu_package,
            die_with_parent=True,
        ).returncode


# Terminal control the firmware, GRUB and the kernel print: CSI (ESC [ ... final byte), OSC
# (ESC ] ... BEL or ESC \) and the short forms such as ESC c (reset) or ESC ( B.
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-Z\\^-~])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab and newline; CR too
_LONGEST_ESCAPE = 64  # an ESC this far from the end that still matches nothing is text
# A `fail` pattern is searched again over this much of the text before the last read, so
# that a match cut in two by a read is still found.
_FAIL_OVERLAP = 256
KERNEL_PANIC = r"Kernel panic - not syncing: [^\n]*"  # a `fail` pattern for check_boot
# The firmware found nothing to boot (SeaBIOS; OVMF's boot manager): waiting is in vain.
NO_BOOT_DEVICE = r"No bootable device\.|No bootable option or device was found"
# oci2vm's init on the console of an app disk (init.sh): a workload that could not start
# or ended badly (check's default waits for its start: config.CHECK_EXPECT).
APP_FAILED = r"oci2vm-init: (?:error: [^\n]*|the workload exited with status [1-9][0-9]*)"


class ConsoleText:
    """Serial console bytes as plain text, fed as they arrive: UTF-8 decoded, terminal
    control sequences and carriage returns dropped, so that patterns match what a reader
    sees ("[  OK  ] Reached" even when the guest colours "OK") and the tail is printable."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # an escape sequence cut off at the end of the last read
        self.text = ""

    def feed(self, data: bytes, *, final: bool = False) -> None:
        pending = self._pending + self._decoder.decode(data, final)
        cut = pending.rfind("\x1b")
        if (
            final
            or cut == -1
            or _ESCAPE.match(pending, cut)
            or len(pending) - cut > _LONGEST_ESCAPE
        ):
            cut = len(pending)
        self._pending = pending[cut:]
        self.text += _CONTROL.sub("", _ESCAPE.sub("", pending[:cut]))


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a headless boot showed: whether every expected pattern appeared, how long it
    took, why not, and the end of the console output as plain text (see ConsoleText)."""

    ok: bool
    seconds: float
    tail: str
    reason: str = ""


def check_boot(
    disk: Path,
    *,
    expect: str = r"login:",
    timeout: float = 120.0,
    arch: Arch = Arch.AMD64,
    firmware: Firmware | str = Firmware.BIOS,
    bus: Bus | str = Bus.VIRTIO,
    accel: Accel | str = Accel.AUTO,
    memory_mib: int = 1024,
    cpus: int = 2,
    script: Sequence[tuple[str, str | None]] = (),
    snapshot: bool = True,
    network: bool = False,
    forwards: Sequence[PortForward] = (),
    fail: str | None = None,
) -> CheckResult:
    """Boot `disk` headless and watch its serial console until `expect` (a regex) appears.

    Then, for each (pattern, line) of `script`, wait for the pattern after the previous match
    and type `line` followed by Enter (None: type nothing), e.g. to log in and run a command:
    [("login:", "root"), (r"# ", "uname -r"), (r"\\d+\\.\\d+", None)]. QEMU is always killed
    at the end, whatever happened; `timeout` covers the whole session. `network` and
    `forwards` are qemu_command's: a NIC on QEMU's user network, host ports forwarded in.
    `fail` (a regex, e.g. KERNEL_PANIC) ends the session as a failure as soon as the
    console shows it, instead of waiting for the timeout.
    """
    steps: list[tuple[re.Pattern[str], str | None]] = [(re.compile(expect), None)]
    steps += [(re.compile(pattern), line) for pattern, line in script]
    check_ports(forwards)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="oci2vm-check-") as tmp:
        efi_vars = copy_efi_vars(Path(tmp), arch) if firmware == Firmware.UEFI else None
        argv = qemu_command(
            disk,
            arch=arch,
            firmware=firmware,
            memory_mib=memory_mib,
            cpus=cpus,
            accel=accel,
            bus=bus,
            serial="stdio",
            snapshot=snapshot,
            efi_vars=efi_vars,
            network=network,
            forwards=forwards,
        )
        with open(Path(tmp, "qemu.stderr"), "w+b") as stderr:
            proc = tools.popen(
                argv,
                package=arch.facts.qemu_package,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # its own process group, killed as one
            )
            try:
                failure = re.compile(fail) if fail is not None else None
                ok, reason, console = _watch(proc, steps, started + timeout, failure)
            finally:
                _kill(proc)
            if not ok and proc.returncode not in (None, 0, -signal.SIGKILL):
                # QEMU's own failure or crash (a guest that powers off or resets ends it
                # with 0, and _kill with SIGKILL): no verdict on a disk never booted.
                stderr.seek(0)
                errors = stderr.read().decode(errors="replace").strip().splitlines()
                said = f": {errors[-1]}" if errors else ""
                raise Oci2vmError(f"QEMU failed (exit status {proc.returncode}){said}")
    return CheckResult(ok, time.monotonic() - started, console[-TAIL_CHARS:], reason)


def _watch(
    proc: subprocess.Popen[bytes],
    steps: Sequence[tuple[re.Pattern[str], str | None]],
    deadline: float,
    fail: re.Pattern[str] | None = None,
) -> tuple[bool, str, str]:
    """Read the console until every step matched, QEMU exited, the deadline passed, or
    `fail` appeared."""
    assert proc.stdout is not None and proc.stdin is not None
    console = ConsoleText()
    position = 0  # where the next step's pattern is searched from
    fail_from = 0  # where `fail` is searched from
    step = 0
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            while step < len(steps):
                pattern, line = steps[step]
                match = pattern.search(console.text, position)
                if match is None:
                    break
                position = match.end()
                step += 1
                if line is not None:
                    try:
                        proc.stdin.write(line.encode() + b"\r")  # Enter sends CR
                        proc.stdin.flush()
                    except BrokenPipeError:
                        return False, "QEMU exited while input was being typed", console.text
            if step == len(steps):
                return True, "matched", console.text
            # `fail` after the steps: what was waited for wins when both came in one read
            # (a check that waits for the panic itself succeeds).
            if fail is not None and (failed := fail.search(console.text, fail_from)):
                return False, f"the console showed {failed.group()!r}", console.text
            fail_from = max(0, len(console.text) - _FAIL_OVERLAP)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waiting = steps[step][0].pattern
                return False, f"timed out waiting for {waiting!r}", console.text
            if not selector.select(min(remaining, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                proc.wait()
                console.feed(b"", final=True)
                waiting = steps[step][0].pattern
                return False, f"QEMU exited ({proc.returncode}) before {waiting!r}", console.text
            console.feed(chunk)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill QEMU's process group (it is its leader) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
