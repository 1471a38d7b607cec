"""docker run's workload rules (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal), the
BootSpec's checks, the spec file's quoting, and the app-mode QEMU command line."""

from __future__ import annotations

import errno
import os
import re
import selectors
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from oci2vm import runtime
from oci2vm.arch import Arch
from oci2vm.boot.pvh import has_pvh_entry, pvh_kernel
from oci2vm.cli import config_from, parse
from oci2vm.commands.boot import volume_files
from oci2vm.config import Accel, Config, NetworkChoice, NetworkMode, PortMapping, Volume
from oci2vm.errors import Oci2vmError
from oci2vm.image.model import ImageConfig, Platform
from oci2vm.initramfs import spec as spec_module
from oci2vm.initramfs.build import spec_archive
from oci2vm.initramfs.spec import (
    DEFAULT_PATH,
    BootSpec,
    Mode,
    VolumeMount,
    parse_signal,
    render,
    shell_quote,
    workload,
)


def image(**fields: object) -> ImageConfig:
    base: dict[str, object] = dict(
        platform=Platform(), entrypoint=("/bin/sh", "-c"), cmd=("echo hello",),
        env=("FOO=bar", "PATH=/bin"), working_dir="/app", user="1000:1000", labels={},
        exposed_ports=(), stop_signal="", diff_ids=(), created="",
    )  # fmt: skip
    base.update(fields)
    return ImageConfig(**base)  # type: ignore[arg-type]


def test_image_entrypoint_and_cmd_run_as_configured() -> None:
    spec = workload(image(), Config())
    assert spec.mode is Mode.APP
    assert spec.argv == ("/bin/sh", "-c", "echo hello")
    assert (spec.workdir, spec.user, spec.stop_signal) == ("/app", "1000:1000", signal.SIGTERM)


def test_arguments_after_dashes_replace_cmd() -> None:
    spec = workload(image(), Config(command=("exit 7",)))
    assert spec.argv == ("/bin/sh", "-c", "exit 7")


def test_entrypoint_option_replaces_entrypoint_and_drops_cmd() -> None:
    assert workload(image(), Config(entrypoint="/bin/true")).argv == ("/bin/true",)
    both = workload(image(), Config(entrypoint="/bin/echo", command=("a", "b")))
    assert both.argv == ("/bin/echo", "a", "b")


def test_empty_entrypoint_clears_it() -> None:
    assert workload(image(), Config(entrypoint="", command=("ls",))).argv == ("ls",)
    with pytest.raises(Oci2vmError, match="no command to run"):
        workload(image(), Config(entrypoint=""))


def test_no_entrypoint_and_no_cmd_is_a_clear_error() -> None:
    with pytest.raises(Oci2vmError, match=r"no command to run.*oci2vm run IMAGE COMMAND"):
        workload(image(entrypoint=None, cmd=None), Config())


def test_env_merges_config_then_options_later_wins_in_place() -> None:
    spec = workload(image(), Config(env=("FOO=baz", "NEW=1"), hostname="box"))
    assert spec.env == ("PATH=/bin", "HOSTNAME=box", "FOO=baz", "NEW=1")
    assert spec.hostname == "box"


def test_a_bare_key_unsets_the_images_value_or_dockers_default() -> None:
    spec = workload(image(env=("FOO=bar", "KEEP=1")), Config(env=("FOO", "PATH", "NEW")))
    assert spec.env == ("HOSTNAME=oci2vm", "KEEP=1")
    assert workload(image(env=("BARE", "X=1")), Config()).env[-1:] == ("X=1",)


def test_path_defaults_to_dockers_and_tty_adds_term() -> None:
    spec = workload(image(env=()), Config(tty=True), hostname="h")
    assert spec.env == (f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "TERM=xterm")
    assert spec.tty


def test_workdir_user_and_volumes_from_options() -> None:
    config = Config(
        workdir="/srv", user="nobody", interactive=True,
        volumes=(Volume(Path("/h"), "/data", True), Volume(Path("/i"), "/more")),
    )  # fmt: skip
    spec = workload(image(working_dir=""), config)
    assert (spec.workdir, spec.user, spec.interactive) == ("/srv", "nobody", True)
    assert spec.volumes == (VolumeMount("vol0", "/data", True), VolumeMount("vol1", "/more"))
    assert workload(image(working_dir=""), Config()).workdir == "/"


@pytest.mark.parametrize(
    ("text", "number"),
    [("", signal.SIGTERM), ("SIGQUIT", signal.SIGQUIT), ("int", signal.SIGINT), ("9", 9),
     ("SIGRTMIN+3", signal.SIGRTMIN + 3), ("RTMAX-1", signal.SIGRTMAX - 1),
     ("SIGRTMIN", signal.SIGRTMIN)],  # systemd's stop signal is RTMIN+3 (kindest/node)
)  # fmt: skip
def test_stop_signal_is_parsed_as_docker_does(text: str, number: int) -> None:
    assert parse_signal(text) == number
    assert workload(image(stop_signal=text), Config()).stop_signal == number


@pytest.mark.parametrize("text", ["SIGNOPE", "0", "999", "RTMIN+40", "RTMAX+1"])
def test_bad_stop_signal_is_refused(text: str) -> None:
    with pytest.raises(Oci2vmError, match="invalid stop signal"):
        parse_signal(text)


@pytest.mark.parametrize(
    "fields",
    [
        {"argv": ()},
        {"argv": ("a\0b",)},
        {"argv": ("x",), "workdir": "rel"},
        {"argv": ("x",), "env": ("NOEQUALS",)},
        {"argv": ("x",), "volumes": (VolumeMount("bad tag", "/x"),)},
    ],
)
def test_malformed_specs_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(Oci2vmError):
        BootSpec(mode=Mode.APP, **fields)  # type: ignore[arg-type]


def test_render_quotes_every_value_and_flags_home() -> None:
    spec = BootSpec(mode=Mode.APP, argv=("it's",), env=("HOME=/h",), user="u:g")
    text = render(spec).decode()
    inner = "'it'\\''s'"  # the word, quoted
    assert f"SPEC_ARGV={shell_quote(inner)}\n" in text  # the list, quoted again
    assert "SPEC_HAS_HOME='1'\n" in text and "SPEC_USER='u:g'\n" in text
    assert all(line.startswith(("#", "SPEC_")) for line in text.splitlines())


def test_shell_quote_closes_and_reopens_around_quotes() -> None:
    assert shell_quote("a'b") == "'a'\\''b'"
    assert shell_quote("$(x)\n`y`") == "'$(x)\n`y`'"


# -- QEMU's command line -------------------------------------------------------------------


def test_qemu_command_boots_kernel_on_a_snapshot_with_forwards_volumes_and_ports(
    tmp_path: Path,
) -> None:
    spec = BootSpec(mode=Mode.APP, argv=("x",), interactive=True)
    channels = runtime.open_channels(spec)
    config = Config(
        accel=Accel.TCG, memory_mib=256, cpus=1,
        publish=(PortMapping(8080, 80), PortMapping(53, 53, "0.0.0.0", "udp")),
        volumes=(Volume(tmp_path, "/data", True),),
    )  # fmt: skip
    argv = runtime.qemu_command(
        Path("/k"), Path("/i"), Path("/r.ext4"), config, Arch.AMD64, channels, Path("/log")
    )
    text = " ".join(argv)
    assert argv[0] == Arch.AMD64.facts.qemu_binary
    assert "-kernel /k -initrd /i" in text and "-m 256 -smp 1" in text
    assert "file=/r.ext4,format=raw,if=none,id=root,snapshot=on" in text
    assert "hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:53-:53" in text
    assert f"local,id=vol0,path={tmp_path},security_model=none,readonly=on" in text
    assert "virtio-9p-pci,fsdev=vol0,mount_tag=vol0" in text
    assert "-serial file:/log" in text
    for name in ("stdin", "stdout", "stderr", "control"):
        fd = channels[name].guest_fd
        assert f"socket,id={name},fd={fd}" in text
        assert f"virtserialport,bus=channels.0,chardev={name},name=org.oci2vm.{name}" in text
    assert f"root={runtime.ROOT_DEVICE}" in argv[argv.index("-append") + 1]


def test_tty_gets_a_virtconsole_and_no_stream_ports() -> None:
    channels = runtime.open_channels(BootSpec(mode=Mode.APP, argv=("x",), tty=True))
    assert sorted(channels) == ["control", "tty"]
    argv = runtime.qemu_command(
        Path("/k"),
        Path("/i"),
        Path("/r"),
        Config(accel=Accel.TCG),
        Arch.AMD64,
        channels,
        Path("/l"),
    )
    assert "virtconsole,bus=channels.0,chardev=tty,name=org.oci2vm.tty" in argv


def test_network_none_is_dockers_a_guest_with_loopback_alone() -> None:
    """It was ignored: the guest had QEMU's user network, the host's loopback in reach."""
    channels = runtime.open_channels(BootSpec(mode=Mode.APP, argv=("x",)))
    none = NetworkChoice(NetworkMode.NONE)
    args = (Path("/k"), Path("/i"), Path("/r"))
    argv = runtime.qemu_command(
        *args, Config(accel=Accel.TCG, network=none), Arch.AMD64, channels, Path("/l")
    )
    assert argv[argv.index("-nic") + 1] == "none" and argv.count("-nic") == 1
    published = Config(accel=Accel.TCG, network=none, publish=(PortMapping(8080, 80),))
    with pytest.raises(Oci2vmError, match=r"^-p and --network none"):
        runtime.qemu_command(*args, published, Arch.AMD64, channels, Path("/l"))


def test_non_interactive_runs_have_no_stdin_port() -> None:
    assert sorted(runtime.open_channels(BootSpec(mode=Mode.APP, argv=("x",)))) == [
        "control", "stderr", "stdout",
    ]  # fmt: skip


def test_pvh_kernel_refuses_what_is_not_a_bzimage() -> None:
    assert pvh_kernel(b"\0" * 4096) is None
    assert not has_pvh_entry(b"\x7fELF" + b"\0" * 60)


def test_a_relative_workdir_is_refused_as_docker_does_and_paths_are_cleaned() -> None:
    with pytest.raises(Oci2vmError, match=r"the working directory 'srv' is invalid, it needs"):
        workload(image(), Config(workdir="srv"))
    assert workload(image(), Config(workdir="/srv/../app/")).workdir == "/app"
    assert workload(image(working_dir="app"), Config()).workdir == "/app"  # the image's


def test_tmpfs_add_host_read_only_and_stop_signal_from_docker_run_options() -> None:
    config = Config(
        tmpfs=("/scratch", "/cache:size=64m,mode=0700"),
        add_hosts=("db:10.1.2.3", "v6=[fd00::1]", "gw:host-gateway"),
        read_only=True,
        stop_signal="SIGINT",
    )
    spec = workload(image(stop_signal="SIGQUIT"), config)
    assert spec.tmpfs == (
        ("/scratch", "noexec,nosuid,nodev"),
        ("/cache", "noexec,nosuid,nodev,size=64m,mode=0700"),
    )
    assert spec.hosts == (("10.1.2.3", "db"), ("fd00::1", "v6"), ("10.0.2.2", "gw"))
    assert (spec.read_only, spec.stop_signal) == (True, signal.SIGINT)
    text = render(spec).decode()
    assert "SPEC_READ_ONLY='1'" in text
    assert "SPEC_HOSTS=''\\''10.1.2.3'\\'' '\\''db'\\''" in text
    assert workload(image(stop_signal="SIGQUIT"), Config()).stop_signal == signal.SIGQUIT


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("tmpfs", "relative", "the path must be absolute"),
        ("tmpfs", "/x/..", "cannot mount over the root"),
        ("tmpfs", "/x:size=1m;reboot", "malformed mount options"),
        ("add_hosts", "db", "invalid IP address"),
        ("add_hosts", "db:not-an-ip", "invalid IP address"),
        ("add_hosts", "two words:1.2.3.4", "expected NAME:IP"),
    ],
)
def test_malformed_tmpfs_and_add_host_are_refused(field: str, value: str, words: str) -> None:
    with pytest.raises(Oci2vmError, match=words):
        workload(image(), Config(**{field: (value,)}))  # type: ignore[arg-type]


def test_ulimits_as_docker_takes_them_with_its_default_for_open_files() -> None:
    assert workload(image(), Config()).limits == (("n", 1024, 524288),)
    config = Config(ulimits=("nofile=2048:4096", "core=-1", "stack=8388608", "nproc=9:-1",
                             "nofile=4096"))  # fmt: skip
    assert workload(image(), config).limits == (
        ("n", 4096, 4096), ("c", -1, -1), ("s", 8192, 8192), ("u", 9, -1),
    )  # fmt: skip
    text = render(workload(image(), Config(ulimits=("nproc=9:-1",)))).decode()
    words = "'n' '1024' '524288' 'u' '9' 'unlimited'"
    assert f"SPEC_LIMITS={shell_quote(words)}" in text


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("nofile", "expected NAME=SOFT"),
        ("files=10", "expected NAME=SOFT"),
        ("nofile=ten", "expected NAME=SOFT"),
        ("nproc=-2", "expected NAME=SOFT"),
        ("nproc=5:3", "the soft limit is above the hard one"),
        ("nproc=-1:5", "the soft limit is above the hard one"),
        ("nofile=-1", "open files are at most 1048576"),
        ("nofile=1048577", "open files are at most 1048576"),
        ("core=100", "core is set in units of 512 bytes"),
    ],
)
def test_malformed_ulimits_are_refused(value: str, words: str) -> None:
    with pytest.raises(Oci2vmError, match=words):
        workload(image(), Config(ulimits=(value,)))


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox")
def test_the_inits_limit_commands_set_soft_and_hard_limits() -> None:
    """The init's limit_commands, run by busybox's sh: lowered limits (raising a hard
    one needs the guest's root) land as asked, in ulimit's units; one that cannot be
    set exits with docker's 125."""
    init = (Path(spec_module.__file__).parent / "init.sh").read_text()
    function = re.search(r"^limit_commands\(\) \{\n.*?^\}\n", init, re.M | re.S)
    assert function is not None
    limits = workload(image(), Config(ulimits=("nofile=64:128", "stack=4194304"))).limits
    spec = render(BootSpec(limits=limits)).decode()
    script = f'{function[0]}{spec}\neval "$(limit_commands)"\nulimit -Sn; ulimit -Hn; ulimit -Ss\n'
    done = subprocess.run(["busybox", "sh", "-c", script], check=False, capture_output=True)
    assert (done.returncode, done.stdout) == (0, b"64\n128\n4096\n"), done.stderr
    spec = render(BootSpec(limits=(("n", 1 << 21, 1 << 21),))).decode()  # over fs.nr_open
    script = f'{function[0]}{spec}\neval "$(limit_commands)"\necho started\n'
    done = subprocess.run(["busybox", "sh", "-c", script], check=False, capture_output=True)
    assert (done.returncode, done.stdout) == (125, b""), done.stderr


@pytest.mark.parametrize(("grace", "waits"), [(10.0, 10.0), (2.0, 2.0), (-1.0, None)])
def test_a_stop_waits_the_stop_timeout_then_kills(grace: float, waits: float | None) -> None:
    """--stop-timeout: how long after the first Ctrl-C QEMU is killed (-1: not until a
    second one); the workload gets the SIGINT either way, as docker run passes it on."""
    import socket
    import time

    wakeup, waker = socket.socketpair()
    control, guest = socket.socketpair()
    with wakeup, waker, control, guest:
        wakeup.setblocking(False)
        session = runtime._Session(grace=grace, started=True)
        waker.send(bytes([signal.SIGINT]))
        before = time.monotonic()
        runtime._on_signal(session, wakeup, control)
        assert guest.recv(64) == b"signal 2\n"
        if waits is None:
            assert session.kill_at is None
        else:
            assert session.kill_at is not None
            assert waits <= session.kill_at - before < waits + 1
        waker.send(bytes([signal.SIGINT]))  # a second Ctrl-C: no more waiting
        runtime._on_signal(session, wakeup, control)
        assert session.kill_at is not None and session.kill_at - before < 1


def test_a_stop_while_the_guest_still_boots_kills_it_at_once() -> None:
    """Until the init says the workload started, nothing in the guest would take the
    signal: waiting out the grace (10 s, silent) served nothing."""
    import socket
    import time

    wakeup, waker = socket.socketpair()
    control, guest = socket.socketpair()
    with wakeup, waker, control, guest:
        wakeup.setblocking(False)
        session = runtime._Session(grace=10.0)
        selector = selectors.DefaultSelector()
        selector.register(control, selectors.EVENT_READ, "control")
        guest.sendall(b"started\n")
        runtime._on_control(session, control, selector)
        assert session.started
        booting = runtime._Session(grace=10.0)
        waker.send(bytes([signal.SIGINT]))
        runtime._on_signal(booting, wakeup, control)
        assert booting.kill_at is not None and booting.kill_at <= time.monotonic()


def test_signals_are_passed_on_as_docker_runs_proxy_passes_them() -> None:
    """SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 reach the workload as themselves and end nothing;
    SIGTERM (a service manager stopping oci2vm) sends the stop signal, as docker stop."""
    import socket

    wakeup, waker = socket.socketpair()
    control, guest = socket.socketpair()
    with wakeup, waker, control, guest:
        wakeup.setblocking(False)
        session = runtime._Session(grace=10.0, started=True)
        others = (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
        waker.send(bytes(others))
        runtime._on_signal(session, wakeup, control)
        expected = "".join(f"signal {int(s)}\n" for s in others).encode()
        assert guest.recv(256) == expected
        assert (session.signal, session.kill_at) == (None, None)
        waker.send(bytes([signal.SIGTERM]))
        runtime._on_signal(session, wakeup, control)
        assert guest.recv(64) == b"stop\n"
        assert session.signal == signal.SIGTERM and session.kill_at is not None


def test_qemu_is_killed_whatever_ends_the_relay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """QEMU runs in a session of its own: an error while relaying (an output that cannot
    be written) must not leave it running."""
    started: list[subprocess.Popen[bytes]] = []
    real_popen = runtime.tools.popen

    def popen(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = real_popen(["sleep", "60"], **kwargs)
        started.append(proc)
        return proc

    def relay(*_args: object) -> runtime._Session:
        raise Oci2vmError("cannot write the workload's output to stdout: No space left")

    monkeypatch.setattr(runtime.tools, "popen", popen)
    monkeypatch.setattr(runtime, "qemu_command", lambda *_args: ["qemu"])
    monkeypatch.setattr(runtime, "_relay", relay)
    files = [tmp_path / name for name in ("kernel", "initrd", "root")]
    with pytest.raises(Oci2vmError, match="No space left"):
        runtime.run_app(*files, BootSpec(), Config(), Arch.AMD64)
    (proc,) = started
    assert proc.poll() is not None


def test_an_output_that_cannot_be_written_is_a_one_line_error() -> None:
    refused = pytest.raises(Oci2vmError, match=r"^cannot write the workload's output to ")
    with open("/dev/full", "wb") as full, refused:
        runtime._write_all(full.fileno(), b"data")


def test_a_single_file_is_shared_read_only_with_the_run_arguments(tmp_path: Path) -> None:
    """docker's -v ./nginx.conf:/etc/nginx/nginx.conf:ro was refused (9p shares
    directories): the file's bytes now travel in the run's archive, bound read-only over
    the path."""
    conf = tmp_path / "nginx.conf"
    conf.write_bytes(b"events {}\n")
    config = config_from(parse(["run", "-v", f"{conf}:/etc/nginx/nginx.conf:ro", "img"]))
    assert config.volumes == (Volume(conf.resolve(), "/etc/nginx/nginx.conf", True, file=True),)
    spec = workload(image(), config)
    assert [(v.tag, v.path, v.read_only) for v in spec.volumes] == [
        ("file0", "/etc/nginx/nginx.conf", True)
    ]
    archive = spec_archive(spec, files=volume_files(config, spec))
    assert b"etc/oci2vm/files/file0\0" in archive and b"events {}\n" in archive
    assert "-fsdev" not in " ".join(
        runtime.qemu_command(conf, conf, conf, config, Arch.AMD64, {}, tmp_path / "log")
    )


def test_a_writable_single_file_is_shared_by_a_directory_that_holds_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker's -v ./app.yml:/app/app.yml (writable): the file is hard-linked into a
    directory of its own, which QEMU shares (the guest sees no neighbour of it, and its
    writes are the file's); where the run's directory is on another filesystem the link
    is made beside the file, and removed after the run; where no link can be made, the
    run is refused naming :ro."""
    conf = tmp_path / "conf" / "app.yml"
    conf.parent.mkdir()
    conf.write_bytes(b"a: 1\n")
    (conf.parent / "secret").write_bytes(b"neighbour")
    config = config_from(parse(["run", "-v", f"{conf}:/app/app.yml", "img"]))
    assert config.volumes == (Volume(conf.resolve(), "/app/app.yml", False, file=True),)
    spec = workload(image(), config)
    assert [(v.tag, v.path, v.read_only) for v in spec.volumes] == [
        ("fvol0", "/app/app.yml", False)
    ]
    assert volume_files(config, spec) == []  # (not in the run's archive)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with runtime.writable_file_shares(config, run_dir) as shares:
        share = shares[0]
        assert share.parent == run_dir and os.listdir(share) == [runtime.SHARED_FILE]
        assert os.path.samefile(share / runtime.SHARED_FILE, conf)
        argv = " ".join(
            runtime.qemu_command(conf, conf, conf, config, Arch.AMD64, {}, tmp_path / "log", shares)
        )
        assert f"path={share},security_model=none -device" in argv and "mount_tag=fvol0" in argv
    real_link = os.link

    def fresh(run: Path) -> Path:  # (the run's temporary directory is a new one each time)
        shutil.rmtree(run)
        run.mkdir()
        return run

    def across(source: object, target: object) -> None:  # run_dir on another filesystem
        if str(target).startswith(str(run_dir)):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_link(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", across)
    with runtime.writable_file_shares(config, fresh(run_dir)) as shares:
        beside = shares[0]
        assert beside.parent == conf.parent and beside.name.startswith(".oci2vm-share-")
        assert os.path.samefile(beside / runtime.SHARED_FILE, conf)
    assert not beside.exists() and conf.read_bytes() == b"a: 1\n"

    def refused(source: object, target: object) -> None:  # (protected_hardlinks)
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", refused)
    refusal = r"cannot share it writable \(.*Operation not permitted\): add :ro"
    with (
        pytest.raises(Oci2vmError, match=refusal),
        runtime.writable_file_shares(config, fresh(run_dir)),
    ):
        pass
