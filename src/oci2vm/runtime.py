"""The host side of app mode: boot a kernel and our initramfs in QEMU on a root filesystem
and behave like `docker run` while the workload runs.

The channels are virtio-serial ports (the guest's virtio_console module), each backed by
one end of a socketpair handed to QEMU as a file descriptor: org.oci2vm.stdout and
.stderr carry the workload's output apart from each other, .stdin carries ours (-i; its
end closed is the workload's EOF), and .control carries "started", "exit STATUS" (or
"error MESSAGE") from the guest's init and "signal N" / "stop" / "kill" to it. The exit
status comes with the bytes of output the guest relayed to each port ("exit STATUS OUT
ERR"), and the guest powers off only once it is answered "drained": QEMU stops taking a
port's data while its socket is full (a slow reader of ours), and what the guest still
held when it powered off was lost, silently. With -t a
virtconsole (the guest's hvc0, a terminal with its line discipline) replaces the three
streams. The kernel's console is the serial port, written to a log file, so kernel
messages never mix in; the log's tail is shown when the guest ends without an exit
status. Measured alternatives: ISA serial ports would need the guest's tty set raw and
each byte is an emulated port write.

Signals reach the workload as docker run's signal proxy passes them on: Ctrl-C is its
SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are themselves; SIGTERM (a service manager
stopping oci2vm) is its stop signal, as docker stop sends it; the guest's init ends a
workload (its namespace's PID 1) by one it does not handle. After Ctrl-C or SIGTERM QEMU
is killed if the workload has not ended STOP_GRACE_SECONDS later (--stop-timeout; never
when negative), or at a second one, or at once while the guest still boots (no workload
yet to take them). QEMU is killed whatever ends the relay.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oci2vm import vm
from oci2vm.arch import Arch
from oci2vm.config import FIRSTBOOT_OFF, Config, NetworkMode
from oci2vm.errors import Oci2vmError
from oci2vm.initramfs.spec import STOP_GRACE_SECONDS, BootSpec, volume_tag
from oci2vm.util import tools

ROOT_DEVICE = "/dev/vda"  # the root is the only virtio disk
POWEROFF_SECONDS = 10.0  # how long QEMU may take to end after the exit status came
# How long the output the exit status counts may stop coming before it is taken as all
# there will be (a relay in the guest that could not write to its port).
DRAIN_STALL_SECONDS = 10.0
CONSOLE_TAIL_LINES = 15
PORT_PREFIX = "org.oci2vm."
CHUNK = 65536


def kernel_command_line(arch: Arch, root: str = ROOT_DEVICE) -> str:
    """The kernel's arguments for app mode: the console on the serial port, quiet (warnings
    and worse only, into the log), the root, and a panic that ends QEMU (-no-reboot)."""
    return f"console={arch.facts.serial_console} root={root} rw quiet panic=-1"


@dataclass(frozen=True, slots=True)
class Channel:
    """A virtio-serial port: QEMU's end `guest_fd`, ours `host`."""

    name: str
    host: socket.socket
    guest_fd: int


def open_channels(spec: BootSpec) -> dict[str, Channel]:
    """A socketpair per channel the spec needs ("tty" replaces the three streams)."""
    if spec.tty:
        names: tuple[str, ...] = ("tty", "control")
    else:
        names = ("stdout", "stderr", "control") + (("stdin",) if spec.interactive else ())
    channels = {}
    for name in names:
        host, guest = socket.socketpair()
        guest_fd = guest.detach()
        channels[name] = Channel(name, host, guest_fd)
    return channels


def qemu_command(
    kernel: Path,
    initrd: Path,
    root: Path,
    config: Config,
    arch: Arch,
    channels: dict[str, Channel],
    console_log: Path,
    file_shares: Mapping[int, Path] | None = None,
) -> list[str]:
    """QEMU's command line: direct kernel boot, the root as a throwaway copy-on-write
    overlay (snapshot=on: the file is never written), user networking with -p's forwards,
    a 9p share per -v (`file_shares`: the directory that shares each writable single file,
    by the index of its -v; see writable_file_shares), and the channels."""
    argv = direct_boot_args(kernel, initrd, root, config, arch, kernel_command_line(arch))
    if config.network.mode is NetworkMode.NONE:  # docker's --network none: loopback alone
        if config.publish:
            raise Oci2vmError("-p and --network none: no port can be published without a network")
        at = argv.index("-nic")
        argv[at : at + 2] = ["-nic", "none"]
    argv += ["-monitor", "none", "-serial", f"file:{console_log}"]
    for index, volume in enumerate(config.volumes):
        if volume.file and volume.read_only:
            continue  # (in the run's archive)
        path = str((file_shares or {})[index] if volume.file else volume.host.resolve())
        if "," in path:
            raise Oci2vmError(f"-v {path}: QEMU cannot share a directory with ',' in its path")
        readonly = ",readonly=on" if volume.read_only else ""
        argv += [
            "-fsdev", f"local,id=vol{index},path={path},security_model=none{readonly}",
            "-device", f"virtio-9p-pci,fsdev=vol{index},mount_tag={volume_tag(volume)}{index}",
        ]  # fmt: skip
    argv += ["-device", "virtio-serial-pci,id=channels"]
    for name, channel in channels.items():
        device = "virtconsole" if name == "tty" else "virtserialport"
        argv += [
            "-chardev", f"socket,id={name},fd={channel.guest_fd}",
            "-device", f"{device},bus=channels.0,chardev={name},name={PORT_PREFIX}{name}",
        ]  # fmt: skip
    return argv


@dataclass
class _Session:
    """What the relay loop has learnt so far."""

    status: int | None = None
    error: str = ""
    signal: int | None = None  # the first stop signal oci2vm received
    started: bool = False  # the init said the workload started
    kill_at: float | None = None  # when QEMU is killed
    grace: float = STOP_GRACE_SECONDS  # from a stop to QEMU killed (< 0: no limit)
    control_buffer: bytes = b""
    open_outputs: set[str] = field(default_factory=set)
    received: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    expected: dict[str, int] | None = None  # the output the exit status counts, to come
    last_output: float = 0.0  # when output last came


def run_app(
    kernel: Path,
    initrd: Path,
    root: Path,
    spec: BootSpec,
    config: Config,
    arch: Arch,
    *,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    console_log: Path | None = None,
) -> int:
    """Boot `kernel` + `initrd` (whose spec is `spec`) on the ext4 file `root` and relay the
    workload's streams until it ends; return its exit status (128+N for a signal N), or
    when the workload never reported one, 128 + the signal that stopped oci2vm (137 for
    SIGTERM: the VM killed after the stop's grace, as docker stop's SIGKILL gives).

    `root` is never modified. `console_log`: where the kernel's console goes (default: a
    temporary file, its tail shown if the guest fails before the workload ends)."""
    vm.check_ports(config.publish)
    with (
        tempfile.TemporaryDirectory(prefix="oci2vm-run-") as tmp,
        writable_file_shares(config, Path(tmp)) as shares,
    ):
        channels = open_channels(spec)
        log = console_log or Path(tmp, "console.log")
        argv = qemu_command(kernel, initrd, root, config, arch, channels, log, shares)
        with open(Path(tmp, "qemu.stderr"), "w+b") as qemu_stderr:
            try:
                proc = tools.popen(
                    argv,
                    package=arch.facts.qemu_package,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=qemu_stderr,
                    pass_fds=[c.guest_fd for c in channels.values()],
                    start_new_session=True,  # Ctrl-C reaches oci2vm alone
                )
            finally:
                for channel in channels.values():
                    os.close(channel.guest_fd)
            fds = _Fds(stdin_fd, stdout_fd, stderr_fd)
            # Raw only when the keys reach the guest (-it), as docker's hijack does: with -t
            # alone nothing reads them, and Ctrl-C must stay a signal to oci2vm.
            raw = spec.tty and spec.interactive
            grace = STOP_GRACE_SECONDS if config.stop_timeout is None else config.stop_timeout
            try:
                with _host_terminal(raw, stdin_fd), _signals() as wakeup:
                    session = _relay(proc, channels, fds, wakeup, spec, grace)
            finally:  # (QEMU is in a session of its own: nothing else would end it)
                vm._kill(proc)
                for channel in channels.values():
                    channel.host.close()
            return _outcome(session, proc, log, qemu_stderr)


SHARED_FILE = "f"  # the name of a writable single file's link in its share


@contextlib.contextmanager
def writable_file_shares(config: Config, tmp: Path) -> Iterator[dict[int, Path]]:
    """-v FILE:PATH without :ro. 9p shares directories, and sharing the file's own would
    show the guest its neighbours: each such file is shared as a directory of its own that
    holds a hard link to it (the same inode: the guest's writes are the file's, as with
    docker's bind mount of a file), made in `tmp`, or beside the file where `tmp` is on
    another filesystem, and removed after the run."""
    shares: dict[int, Path] = {}
    beside: list[Path] = []
    try:
        for index, volume in enumerate(config.volumes):
            if volume.file and not volume.read_only:
                shares[index] = _link_share(volume.host, tmp / f"fvol{index}", beside)
        yield shares
    finally:
        for made in beside:
            shutil.rmtree(made, ignore_errors=True)


def _link_share(host: Path, share: Path, beside: list[Path]) -> Path:
    share.mkdir()
    try:
        os.link(host, share / SHARED_FILE)
        return share
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise _unshareable(host, e) from None
    try:
        made = Path(tempfile.mkdtemp(prefix=".oci2vm-share-", dir=host.parent))
        beside.append(made)
        os.link(host, made / SHARED_FILE)
    except OSError as e:
        raise _unshareable(host, e) from None
    return made


def _unshareable(host: Path, e: OSError) -> Oci2vmError:
    return Oci2vmError(
        f"-v {host}: cannot share it writable (a hard link to it: {e.strerror}): "
        "add :ro, or share its directory"
    )


def _outcome(
    session: _Session, proc: subprocess.Popen[bytes], log: Path, qemu_stderr: object
) -> int:
    if session.status is not None:
        return session.status
    if session.signal == signal.SIGTERM:  # a stop past its grace: docker stop's SIGKILL
        return 128 + signal.SIGKILL
    if session.signal is not None:
        return 128 + session.signal
    detail = session.error or _last_line(qemu_stderr) or "the guest stopped"
    tail = _tail(log)
    raise Oci2vmError(
        f"the VM ended before the workload reported an exit status: {detail}"
        + (f"\n--- kernel console (last lines) ---\n{tail}" if tail else "")
    )


def _last_line(stream: object) -> str:
    assert hasattr(stream, "seek") and hasattr(stream, "read")
    stream.seek(0)
    lines = stream.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def _tail(log: Path) -> str:
    try:
        text = log.read_bytes().decode(errors="replace")
    except OSError:
        return ""
    text = vm._CONTROL.sub("", vm._ESCAPE.sub("", text))
    return "\n".join(text.strip().splitlines()[-CONSOLE_TAIL_LINES:])


@dataclass(frozen=True, slots=True)
class _Fds:
    stdin: int
    stdout: int
    stderr: int


@contextlib.contextmanager
def _host_terminal(raw: bool, fd: int) -> Iterator[None]:
    """With -t, the host's terminal in raw mode while the workload runs (its keys, Ctrl-C
    included, go to the guest's terminal), restored after."""
    if not raw or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# What reaches the workload (docker run's proxy passes on every signal it can catch but
# SIGCHLD, SIGPIPE and SIGURG; these are the ones a user or a service manager sends).
FORWARDED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip
STOPPING = (signal.SIGINT, signal.SIGTERM)  # then the VM is killed after the grace


@contextlib.contextmanager
def _signals() -> Iterator[socket.socket]:
    """The FORWARDED signals turned into bytes (their numbers) on a socket to select on."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    reader.setblocking(False)
    handlers = {s: signal.getsignal(s) for s in FORWARDED}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        for signum in handlers:
            signal.signal(signum, lambda *_: None)
        yield reader
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        reader.close()
        writer.close()


def _relay(
    proc: subprocess.Popen[bytes],
    channels: dict[str, Channel],
    fds: _Fds,
    wakeup: socket.socket,
    spec: BootSpec,
    grace: float,
) -> _Session:
    """Copy the streams until QEMU ends (or is to be killed); see the module docstring."""
    session = _Session(grace=grace)
    outputs = {"stdout": fds.stdout, "stderr": fds.stderr, "tty": fds.stdout}
    control = channels["control"].host
    with selectors.DefaultSelector() as selector:
        for name, channel in channels.items():
            if name in outputs or name == "control":
                selector.register(channel.host, selectors.EVENT_READ, name)
        selector.register(wakeup, selectors.EVENT_READ, "signal")
        guest_input = channels.get("tty" if spec.tty else "stdin")
        input_fd = fds.stdin
        if spec.interactive and guest_input is not None:
            try:
                selector.register(input_fd, selectors.EVENT_READ, "input")
            except PermissionError:  # a regular file, /dev/null: epoll takes neither
                input_fd = _pumped(input_fd)
                selector.register(input_fd, selectors.EVENT_READ, "input")
        while proc.poll() is None:
            now = time.monotonic()
            _drained(session, control, now)
            if session.kill_at is not None and now >= session.kill_at:
                break
            timeout = 0.5 if session.kill_at is None else min(0.5, session.kill_at - now)
            for key, _ in selector.select(max(timeout, 0.0)):
                name = key.data
                if name == "signal":
                    _on_signal(session, wakeup, control)
                elif name == "input":
                    _forward_input(selector, input_fd, guest_input, spec.tty, control)
                elif name == "control":
                    _on_control(session, control, selector)
                else:
                    data = _recv(channels[name].host)
                    if data:
                        if not _write_all(outputs[name], data):
                            _reader_gone(session)
                        _count(session, name, len(data))
                    else:
                        selector.unregister(channels[name].host)
        _drain(session, channels, outputs)
    return session


def _count(session: _Session, name: str, size: int) -> None:
    if name in session.received:
        session.received[name] += size
    session.last_output = time.monotonic()


def _drained(session: _Session, control: socket.socket, now: float) -> None:
    """Once every byte the exit status counts has come (or stopped coming), tell the guest,
    which then powers off, and give QEMU POWEROFF_SECONDS to end."""
    expected = session.expected
    if expected is None:
        return
    complete = all(session.received[name] >= size for name, size in expected.items())
    if complete or now - session.last_output >= DRAIN_STALL_SECONDS:
        session.expected = None
        _send(control, b"drained\n")
        if session.kill_at is None or session.kill_at > now + POWEROFF_SECONDS:
            session.kill_at = now + POWEROFF_SECONDS


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except (ConnectionResetError, BlockingIOError):
        return b""


def _reader_gone(session: _Session) -> None:
    """Our output's reader went away (`oci2vm run IMG yes | head -1`): oci2vm ends as a
    program writing there does, by SIGPIPE, as the docker client (Go) does, and the VM
    with it."""
    if session.signal is None:
        session.signal = signal.SIGPIPE
    session.kill_at = time.monotonic()


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of `data`; False when the reader went away (the output is dropped)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            return False
        except OSError as e:  # a full disk under a redirection: the run cannot go on
            name = {1: "stdout", 2: "stderr"}.get(fd, f"descriptor {fd}")
            raise Oci2vmError(
                f"cannot write the workload's output to {name}: {e.strerror}"
            ) from None
        view = view[written:]
    return True


def _drain(session: _Session, channels: dict[str, Channel], outputs: dict[str, int]) -> None:
    """What QEMU wrote before it ended, not read yet: output, and the exit status (a slow
    reader of ours kept the loop from reading it before QEMU ended)."""
    for name, channel in channels.items():
        if name not in outputs and name != "control":
            continue
        channel.host.setblocking(False)
        while data := _recv(channel.host):
            if name == "control":
                _control_lines(session, data)
            else:
                _write_all(outputs[name], data)


def _on_signal(session: _Session, wakeup: socket.socket, control: socket.socket) -> None:
    try:
        received = wakeup.recv(64)
    except BlockingIOError:
        return
    for signum in received:
        if signum in STOPPING:
            if session.signal is not None:  # a second Ctrl-C: no more waiting
                session.kill_at = time.monotonic()
                continue
            session.signal = signum
            if not session.started:  # still booting: nothing would take the signal
                session.kill_at = time.monotonic()
            elif session.grace >= 0:
                session.kill_at = time.monotonic() + session.grace
        _send(control, b"stop\n" if signum == signal.SIGTERM else f"signal {signum}\n".encode())


def _send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _pumped(fd: int) -> int:
    """A pipe that a thread fills from `fd` (which the selector cannot watch), for the
    selector to watch instead; it ends where `fd` does."""
    reader, writer = os.pipe()

    def pump() -> None:
        try:
            while data := os.read(fd, CHUNK):
                view = memoryview(data)
                while view:
                    view = view[os.write(writer, view) :]
        except OSError:
            pass  # (the run ended: the reading end is gone)
        finally:
            os.close(writer)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return reader


# Keys the guest's terminal turns into signals for its foreground group (^C, ^\\), which
# the kernel drops for the workload, its namespace's init, unless it handles them: the
# init is told, to end the workload as a signal passed on would (init.sh's tty_signal).
TERMINAL_SIGNALS = {b"\x03": signal.SIGINT, b"\x1c": signal.SIGQUIT}


def _forward_input(
    selector: selectors.BaseSelector,
    fd: int,
    channel: Channel | None,
    raw: bool,
    control: socket.socket,
) -> None:
    assert channel is not None
    try:
        data = os.read(fd, CHUNK)
    except OSError:
        data = b""
    if data:
        _send(channel.host, data)
        for key, signum in TERMINAL_SIGNALS.items():
            if raw and key in data:
                _send(control, f"tty-signal {int(signum)}\n".encode())
        return
    selector.unregister(fd)
    if not raw:  # end of our stdin: the workload's stdin ends too
        with contextlib.suppress(OSError):
            channel.host.shutdown(socket.SHUT_WR)


def _on_control(
    session: _Session, control: socket.socket, selector: selectors.BaseSelector
) -> None:
    data = _recv(control)
    if not data:
        selector.unregister(control)
        return
    _control_lines(session, data)


def _control_lines(session: _Session, data: bytes) -> None:
    session.control_buffer += data
    while b"\n" in session.control_buffer:
        line, _, session.control_buffer = session.control_buffer.partition(b"\n")
        word, _, rest = line.decode(errors="replace").partition(" ")
        numbers = rest.split()
        if word == "exit" and numbers and all(n.isdigit() for n in numbers):
            session.status = int(numbers[0])
            if len(numbers) == 3:  # the init waits for "drained", then powers off
                session.expected = {"stdout": int(numbers[1]), "stderr": int(numbers[2])}
                session.last_output = time.monotonic()
            else:  # it powers off now; QEMU must end soon, whatever happens
                session.kill_at = time.monotonic() + POWEROFF_SECONDS
        elif word == "started":
            session.started = True
        elif word == "error":
            session.error = rest


def direct_boot_args(
    kernel: Path, initrd: Path, root: Path, config: Config, arch: Arch, append: str
) -> list[str]:
    """What every direct boot of a cached root has: QEMU's lean machine, the kernel and
    initramfs, the root as a throwaway copy-on-write overlay (snapshot=on: the file is
    never written) and user networking with -p's forwards."""
    forwards = "".join(vm.hostfwd(p) for p in config.publish)
    return [
        arch.facts.qemu_binary, "-machine", arch.facts.qemu_machine,
        *vm.accel_args(vm.resolve_accel(config.accel)),
        "-m", str(config.memory_mib), "-smp", str(config.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
        "-drive", f"file={root},format=raw,if=none,id=root,snapshot=on,cache=unsafe",
        "-device", "virtio-blk-pci,drive=root",
        "-nic", f"user,model=virtio-net-pci{forwards}",
    ]  # fmt: skip


def system_command(kernel: Path, initrd: Path, root: Path, config: Config, arch: Arch) -> list[str]:
    """QEMU's command line for a system image's cached root: booted directly, as an app
    is, with its console (and, behind Ctrl-A C, QEMU's monitor) on this terminal."""
    append = f"console={arch.facts.serial_console} root={ROOT_DEVICE} rw panic=-1"
    append += f" {FIRSTBOOT_OFF}"  # (see config.FIRSTBOOT_OFF)
    return [*direct_boot_args(kernel, initrd, root, config, arch, append),
            "-serial", "mon:stdio"]  # fmt: skip


def run_system(kernel: Path, initrd: Path, root: Path, config: Config, arch: Arch) -> int:
    """Boot a system image's cached root to its login on this terminal, on a throwaway
    overlay (what the session changes is gone afterwards, as with docker run); returns
    QEMU's exit status. Ctrl-A X quits; the guest powering off ends it too."""
    argv = system_command(kernel, initrd, root, config, arch)
    return tools.run(argv, check=False, capture=False, package=arch.facts.qemu_package).returncode
