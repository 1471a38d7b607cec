"""QEMU without running it: the command lines for each firmware and bus, the KVM probe's
boot sector and its verdict when /dev/kvm is unusable, and the console text filter.
(tests/boot/test_vm_check.py runs QEMU.)"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oci2vm import arch, vm
from oci2vm.arch import Arch
from oci2vm.cli import config_from, main, parse
from oci2vm.commands.boot import run_command
from oci2vm.config import PortMapping
from oci2vm.errors import Oci2vmError
from oci2vm.report import Reporter
from oci2vm.util import tools
from support.programs import requires

needs_qemu = requires("qemu-system-x86_64")
needs_grub_pc = requires("grub-pc-modules", "grub-mkimage")
needs_disk_tools = requires("sgdisk", "sfdisk", "mke2fs")


@pytest.fixture
def fresh_kvm_probe() -> Iterator[None]:
    """kvm_works() caches its answer per process; these tests want to ask again."""
    vm.kvm_works.cache_clear()
    yield
    vm.kvm_works.cache_clear()


# -- command lines -------------------------------------------------------------------------


def test_bios_virtio_command_line() -> None:
    argv = vm.qemu_command(Path("/d/disk.img"), accel="tcg", memory_mib=512, cpus=1)
    assert argv == [
        "qemu-system-x86_64",
        "-machine", "pc",
        "-accel", "tcg,thread=single", "-cpu", "max",
        "-m", "512",
        "-smp", "1",
        "-nographic",
        "-no-reboot",
        "-drive", "file=/d/disk.img,format=raw,if=none,id=disk0",
        "-device", "virtio-blk-pci,drive=disk0,bootindex=0",
        "-serial", "mon:stdio",
        "-nic", "none",
    ]  # fmt: skip


def test_uefi_sata_command_line_uses_q35_and_ovmf_flash(tmp_path: Path) -> None:
    vars_copy = tmp_path / "vars.fd"
    argv = vm.qemu_command(
        Path("/d/disk.qcow2"), firmware="uefi", bus="sata", accel="tcg", efi_vars=vars_copy,
        serial=tmp_path / "console.log", snapshot=True, network=True,
    )  # fmt: skip
    assert argv == [
        "qemu-system-x86_64",
        "-machine", "q35",
        "-accel", "tcg,thread=single", "-cpu", "max",
        "-m", "1024",
        "-smp", "2",
        "-nographic",
        "-no-reboot",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={Arch.AMD64.facts.efi_code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-drive", "file=/d/disk.qcow2,format=qcow2,if=none,id=disk0,snapshot=on,cache=unsafe",
        "-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=0",
        "-monitor", "none", "-serial", f"file:{tmp_path / 'console.log'}",
        "-nic", "user,model=virtio-net-pci",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("bus", "firmware", "machine", "device"),
    [
        ("ide", "bios", "pc", "ide-hd,drive=disk0,bus=ide.0,bootindex=0"),
        ("ide", "uefi", "pc", "ide-hd,drive=disk0,bus=ide.0,bootindex=0"),
        ("nvme", "bios", "pc", "nvme,drive=disk0,serial=oci2vm-disk0,bootindex=0"),
        ("virtio", "uefi", "q35", "virtio-blk-pci,drive=disk0,bootindex=0"),
        ("sata", "bios", "q35", "ide-hd,drive=disk0,bus=ide.0,bootindex=0"),
    ],
)
def test_bus_picks_machine_and_device(
    bus: vm.Bus, firmware: vm.Firmware, machine: str, device: str
) -> None:
    argv = vm.qemu_command(
        Path("d.img"), bus=bus, firmware=firmware, accel="tcg", efi_vars=Path("v.fd"),
        serial="unix:/tmp/s,server=on,wait=off",
    )  # fmt: skip
    assert argv[argv.index("-machine") + 1] == machine
    assert argv[argv.index("-device") + 1] == device
    assert argv[argv.index("-serial") + 1] == "unix:/tmp/s,server=on,wait=off"
    assert argv[argv.index("-monitor") + 1] == "none"


def test_uefi_without_a_vars_copy_is_a_bug() -> None:
    with pytest.raises(ValueError, match="efi_vars"):
        vm.qemu_command(Path("d.img"), firmware="uefi", accel="tcg")


def test_missing_ovmf_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = dataclasses.replace(Arch.AMD64.facts, efi_vars=tmp_path / "nope.fd")
    monkeypatch.setitem(arch._FACTS, Arch.AMD64, missing)
    with pytest.raises(Oci2vmError, match="apt-get install ovmf"):
        vm.copy_efi_vars(tmp_path)


# -- the KVM probe -------------------------------------------------------------------------


def test_probe_boot_sector_layout() -> None:
    image = vm.kvm_probe_image()
    assert len(image) == 512
    assert image[510:] == b"\x55\xaa"
    # "mov si, imm16" (0xBE) loads the address where the marker text begins
    mov_si = image.index(b"\xbe")
    address = int.from_bytes(image[mov_si + 1 : mov_si + 3], "little")
    marker = vm.KVM_PROBE_MARKER + b"\n\0"
    assert image[address - 0x7C00 : address - 0x7C00 + len(marker)] == marker


def test_unusable_kvm_device_means_tcg_without_running_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_kvm_probe: None
) -> None:
    monkeypatch.setattr(vm, "KVM_DEVICE", tmp_path / "kvm")

    def no_qemu(*args: object, **kwargs: object) -> object:
        raise AssertionError("the probe must not run without /dev/kvm")

    monkeypatch.setattr(tools, "run", no_qemu)
    assert vm.kvm_works() is False
    assert vm.resolve_accel("auto") == "tcg"
    with pytest.raises(Oci2vmError, match="cannot be opened"):
        vm.resolve_accel("kvm")


# -- check_boot's console ------------------------------------------------------------------


def test_console_text_drops_terminal_control_even_when_split_across_reads() -> None:
    console = vm.ConsoleText()
    reads = [
        b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\n",  # reset, CSI with private parameters
        b"GRUB\x1b[1;",  # a CSI cut in two
        b"1H\x1b(B[\x1b[0;32m  OK  \x1b[0m] Rea",  # charset selection, colours
        b"ched \xe2\x94",  # a UTF-8 character cut in two
        b"\x80 \x1b]0;title\x07login: \x08\x1b",  # OSC, backspace, a lone ESC at the end
    ]
    for data in reads:
        console.feed(data)
    assert console.text == "SeaBIOS\nGRUB[  OK  ] Reached \u2500 login: "
    console.feed(b"", final=True)
    assert console.text == "SeaBIOS\nGRUB[  OK  ] Reached \u2500 login: "


# -- the user network and its port forwards ------------------------------------------------


def test_network_forwards_host_loopback_ports_into_the_guest() -> None:
    argv = vm.qemu_command(
        Path("d.img"), accel="tcg", network=True, forwards=[(2222, 22), (18080, 8080)]
    )
    assert argv[-2:] == [
        "-nic",
        "user,model=virtio-net-pci"
        ",hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:18080-:8080",
    ]


def test_a_published_port_in_use_is_refused_before_qemu_starts() -> None:
    """QEMU said only "Could not set up host forwarding rule" once the boot began: the
    run failed as a VM that ended without an exit status."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            Oci2vmError,
            match=rf"^cannot publish 127.0.0.1:{port}/tcp: the port is already in use on the host$",
        ):
            vm.check_ports([PortMapping(port, 80)])
    vm.check_ports([PortMapping(port, 80)])  # free again


def test_network_without_forwards_is_a_plain_user_nic() -> None:
    argv = vm.qemu_command(Path("d.img"), accel="tcg", network=True)
    assert argv[-2:] == ["-nic", "user,model=virtio-net-pci"]


def test_forwards_without_network_is_a_bug() -> None:
    with pytest.raises(ValueError, match="network=True"):
        vm.qemu_command(Path("d.img"), accel="tcg", forwards=[(2222, 22)])


@pytest.mark.parametrize("forward", [(0, 22), (2222, 65536), (-1, 22)])
def test_forward_ports_must_be_tcp_ports(forward: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="not a TCP port"):
        vm.qemu_command(Path("d.img"), accel="tcg", network=True, forwards=[forward])


def test_check_boot_passes_network_and_forwards_to_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_boot starts QEMU with the NIC it was asked for (QEMU not run: the command line
    is caught where it would start)."""
    seen: list[list[str]] = []

    class QemuStartedError(Exception):
        pass

    def catch_qemu(argv: list[str], **kwargs: object) -> object:
        seen.append(list(argv))
        raise QemuStartedError

    monkeypatch.setattr(tools, "popen", catch_qemu)
    with pytest.raises(QemuStartedError):
        vm.check_boot(tmp_path / "d.img", accel="tcg", network=True, forwards=[(2222, 22)])
    with pytest.raises(QemuStartedError):
        vm.check_boot(tmp_path / "d.img", accel="tcg")
    assert [argv[-2:] for argv in seen] == [
        ["-nic", "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22"],
        ["-nic", "none"],  # no network unless asked for
    ]


class PipeQemu:
    """What _watch reads from QEMU: its stdout as a pipe the test writes (no QEMU runs)."""

    def __init__(self, output: bytes) -> None:
        read_end, write_end = os.pipe()
        os.write(write_end, output)
        os.close(write_end)  # end of output: QEMU "exited"
        self.stdout = os.fdopen(read_end, "rb")
        self.stdin = io.BytesIO()
        self.returncode = 0

    def wait(self) -> int:
        return 0


def test_a_fail_pattern_ends_the_watch_before_the_timeout() -> None:
    qemu = PipeQemu(b"Booting\r\n[ 9.9] Kernel panic - not syncing: Attempted to kill init!\r\n")
    steps = [(re.compile("login:"), None)]
    started = time.monotonic()
    ok, reason, text = vm._watch(qemu, steps, started + 60, re.compile(vm.KERNEL_PANIC))  # type: ignore[arg-type]
    assert (ok, reason) == (
        False,
        "the console showed 'Kernel panic - not syncing: Attempted to kill init!'",
    )
    assert text.startswith("Booting\n")
    assert time.monotonic() - started < 30
    qemu.stdout.close()
    # without a fail pattern the same console is only "QEMU exited before login:"
    qemu = PipeQemu(b"Kernel panic - not syncing: x\r\n")
    ok, reason, _ = vm._watch(qemu, steps, time.monotonic() + 60)  # type: ignore[arg-type]
    assert not ok and reason.startswith("QEMU exited (0) before")
    qemu.stdout.close()


def test_what_was_waited_for_wins_over_a_fail_pattern_in_the_same_read() -> None:
    for expect in ("login:", "Attempted to kill init"):
        qemu = PipeQemu(
            b"debian login: \r\nKernel panic - not syncing: Attempted to kill init!\r\n"
        )
        steps = [(re.compile(expect), None)]
        fail = re.compile(vm.KERNEL_PANIC)
        ok, reason, _ = vm._watch(qemu, steps, time.monotonic() + 60, fail)  # type: ignore[arg-type]
        assert (ok, reason) == (True, "matched"), expect
        qemu.stdout.close()


def test_check_passes_the_kernel_panic_as_its_fail_pattern(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    seen: dict[str, object] = {}

    def check_boot(_disk: Path, **kw: object) -> vm.CheckResult:
        seen.update(kw)
        return vm.CheckResult(True, 1.0, "login:", "matched")

    monkeypatch.setattr(vm, "check_boot", check_boot)
    assert main(["check", str(disk), "-q"]) == 0
    assert seen["fail"] == f"{vm.KERNEL_PANIC}|{vm.APP_FAILED}|{vm.NO_BOOT_DEVICE}"
    fail = re.compile(str(seen["fail"]))
    for line in ("Kernel panic - not syncing: VFS", "oci2vm-init: error: root device x",
                 "oci2vm-init: the workload exited with status 127", "No bootable device.",
                 "BdsDxe: No bootable option or device was found."):  # fmt: skip
        assert fail.search(f"...\n{line}\n")
    assert not fail.search("oci2vm-init: the workload exited with status 0\n")
    expect = re.compile(str(seen["expect"]))
    assert expect.search("debian login: ")
    assert expect.search("oci2vm-init: the workload started: /bin/httpd")


# -- oci2vm run DISK ------------------------------------------------------------------------


def test_run_of_a_disk_forwards_published_ports_and_throws_writes_away_with_rm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-p reaches the disk's QEMU as it reaches an image's (udp and a host address
    included), and --rm boots it on a throwaway overlay; without --rm its writes stay."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(510) + b"\x55\xaa")  # (a boot signature: what run boots)
    seen: list[list[str]] = []

    def catch_qemu(argv: list[str], **kwargs: object) -> object:
        seen.append(list(argv))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(tools, "run", catch_qemu)
    monkeypatch.setattr(vm, "resolve_accel", lambda accel: "tcg")
    assert main(["run", str(disk), "-p", "2222:22", "-p", "0.0.0.0:5353:53/udp", "--rm"]) == 0
    assert main(["run", str(disk)]) == 0
    discarded, kept = seen
    assert discarded[-2:] == [
        "-nic",
        "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53",
    ]
    assert f"file={disk},format=raw,if=none,id=disk0,snapshot=on,cache=unsafe" in discarded
    assert f"file={disk},format=raw,if=none,id=disk0" in kept


@pytest.mark.parametrize(
    ("words", "named"),
    [
        (["-e", "A=1"], "--env"),
        (["-u", "alice:pw"], "--user"),
        (["-w", "/srv", "--entrypoint", "sh"], "--workdir, --entrypoint"),
        (["-v", "/tmp:/data"], "--volume"),
        (["--read-only", "--tmpfs", "/x"], "--tmpfs, --read-only"),
        (["--add-host", "a:1.2.3.4", "--stop-signal", "INT"], "--add-host, --stop-signal"),
        (["--stop-timeout", "3"], "--stop-timeout"),
        (["--", "ls"], "a command to run"),
        (["ls", "-l"], "a command to run"),
        (["--root-password", "x", "--hostname", "h"], "--hostname, --root-password"),
        (["--network", "none"], "--network"),
    ],
)
def test_run_of_a_disk_refuses_the_workload_options_it_would_drop(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    words: list[str],
    named: str,
) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")

    def no_qemu(argv: list[str], **kwargs: object) -> object:
        raise AssertionError("QEMU started")

    monkeypatch.setattr(tools, "run", no_qemu)
    assert main(["run", str(disk), *words]) != 0
    error = capsys.readouterr().err.strip()
    assert re.search(rf"{re.escape(named)} appl(y|ies) when a disk is built", error), error
    assert "\n" not in error


@pytest.mark.parametrize(
    ("command", "words", "message"),
    [
        ("check", ["--root-password", "x", "--size", "5G"], "--root-password, --size apply when"),
        ("check", ["--uuid", "0e5d3f0a-1b2c-4d5e-8f90-123456789abc"], "--uuid applies when"),
        ("check", ["--format", "vmdk"], "--format: `oci2vm check` writes no output file"),
        ("run", ["--compress"], "--compress: `oci2vm run` writes no output file"),
        ("run", ["--json"], "--json: `oci2vm run` prints what the VM prints, no report"),
    ],
)
def test_run_and_check_refuse_the_options_they_would_drop(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    words: list[str],
    message: str,
) -> None:
    """A disk boots as it was built, and what run and check build is theirs alone."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    monkeypatch.setattr(vm, "check_boot", None)  # (no boot is reached)
    monkeypatch.setattr(tools, "run", None)
    assert main([command, *words, str(disk)]) != 0
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error, error


def test_a_system_image_run_from_the_cache_still_refuses_workload_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The build of a system image's cached root refuses -e and the others under --init
    system; a later run with them finds the root cached and must refuse them too, not
    boot without them."""
    from oci2vm import pipeline, runcache
    from oci2vm.config import InitMode
    from oci2vm.image.model import Platform, empty_config

    image = type("FakeImage", (), {"config": empty_config(Platform("linux", "amd64"))})
    entry = runcache.DirectBoot(tmp_path, InitMode.SYSTEM, "6.1.0")
    monkeypatch.setattr(pipeline, "resolve_source", lambda config, reporter: (image, None))
    monkeypatch.setattr(runcache, "direct_boot", lambda *args: entry)

    def no_qemu(argv: list[str], **kwargs: object) -> object:
        raise AssertionError("QEMU started")

    monkeypatch.setattr(tools, "run", no_qemu)
    assert main(["run", "--init", "system", "-e", "A=1", "oci:/nowhere:x"]) != 0
    error = capsys.readouterr().err.strip()
    assert "--env set an app image's workload" in error and "--init app" in error


@pytest.mark.parametrize(
    ("words", "init"),
    [
        ([], "auto"),
        (["-p", "8080:80", "--memory", "1G"], "auto"),
        (["-e", "A=1"], "app"),
        (["-u", "1000"], "app"),
        (["--entrypoint", "sh"], "app"),
        (["--", "ls"], "app"),
        (["--init", "system"], "system"),
    ],
)
def test_run_with_a_workload_runs_even_an_image_with_an_init_as_an_app(
    monkeypatch: pytest.MonkeyPatch, words: list[str], init: str
) -> None:
    """docker run runs every image's workload: given one (a command, -e, -u...), `--init
    auto` asks for app mode, and an image with an init (alpine's busybox) runs it."""
    from oci2vm import pipeline, runcache
    from oci2vm.image.model import Platform, empty_config

    image = type("FakeImage", (), {"config": empty_config(Platform("linux", "amd64"))})
    asked: list[str] = []

    def direct_boot(config: Any, *_args: object) -> None:
        asked.append(config.init.value)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "resolve_source", lambda config, reporter: (image, None))
    monkeypatch.setattr(runcache, "direct_boot", direct_boot)
    with pytest.raises(SystemExit):
        command = words[0] == "--" if words else False  # options before the image
        main(["run", "oci:/nowhere:x", *words] if command else ["run", *words, "oci:/nowhere:x"])
    assert asked == [init]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"QFI\xfb\x00\x00\x00\x03", "qcow2"),
        (b"KDMV\x01\x00\x00\x00", "vmdk"),
        (b"# Disk DescriptorFile\nversion=1\n", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "vpc"),
        (
            b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(0x40, b"\0") + b"\x7f\x10\xda\xbe",
            "vdi",
        ),
        (bytes(510) + b"\x55\xaa", "raw"),  # an MBR (or GPT's protective one)
        (b"", "raw"),
    ],
)
def test_a_disk_format_is_read_from_its_content_not_its_name(
    tmp_path: Path, head: bytes, expected: str
) -> None:
    """What `build -o NAME --format F` wrote boots whatever NAME says (`disk.qcow2` may be
    raw, `disk.IMG` qcow2): the header decides, as qemu-img's probe does."""
    for name in ("disk.qcow2", "disk.img", "DISK.VMDK"):
        disk = tmp_path / name
        disk.write_bytes(head.ljust(4096, b"\0"))
        assert vm.disk_format(disk) == expected


@pytest.mark.parametrize("content", [b"", b"hello\n", bytes(1 << 20)])
def test_run_of_a_file_no_firmware_boots_is_refused_before_qemu_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    """SeaBIOS would print "No bootable device" and try again for ever."""
    disk = tmp_path / "f.qcow2"
    disk.write_bytes(content)
    monkeypatch.setattr(tools, "run", None)  # (no boot is reached)
    with pytest.raises(Oci2vmError, match=r"f.qcow2 is not a disk image: no partition table"):
        run_command(config_from(parse(["run", str(disk)])), Reporter())


def test_a_bare_ext4_filesystem_is_refused_as_a_disk(tmp_path: Path) -> None:
    """SeaBIOS would say "No bootable device" and a check wait out its whole timeout."""
    fs = tmp_path / "root.ext4"
    fs.write_bytes(bytes(1080) + b"\x53\xef" + bytes(4096))
    with pytest.raises(Oci2vmError, match=r"root.ext4 is an ext4 filesystem, not a disk"):
        vm.disk_format(fs)


def _fake_qemu(directory: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """A qemu-system-x86_64 first on PATH that runs `script` (sh) instead of a guest."""
    directory.mkdir()
    program = directory / "qemu-system-x86_64"
    program.write_text(f"#!/bin/sh\n{script}\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")


@pytest.mark.parametrize(
    ("script", "status", "said"),
    [
        # QEMU itself fails: no verdict on the disk, check's own failure (125)
        ('echo "qemu-system-x86_64: cannot set up guest memory" >&2; exit 1', 125,
         "error: QEMU failed (exit status 1): qemu-system-x86_64: cannot set up guest memory"),
        ("kill -SEGV $$", 125, "error: QEMU failed (exit status -11)"),
        # the guest ran and powered off without the marker: the verdict (1)
        ("echo 'Booting'; exit 0", 1, "failed: QEMU exited (0) before 'login:'"),
    ],
)  # fmt: skip
def test_check_tells_qemu_failing_from_a_guest_that_never_showed_the_marker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    script: str,
    status: int,
    said: str,
) -> None:
    _fake_qemu(tmp_path / "bin", monkeypatch, script)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    code = main(["check", str(disk), "--expect", "login:", "--accel", "tcg", "--timeout", "30"])
    captured = capsys.readouterr()
    assert code == status, captured
    assert said in captured.out + captured.err


# -- the programs' lifetime ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["popen", "run"])
def test_a_long_running_program_ends_when_oci2vm_is_killed(how: str, tmp_path: Path) -> None:
    """QEMU runs in a session of its own (Ctrl-C reaches oci2vm alone), so nothing but its
    parent's death signal ends it when oci2vm is killed by SIGKILL: orphaned QEMUs of
    killed runs were found hours later, holding their disks and forwarded ports."""
    pid_file = tmp_path / "pid"
    if how == "popen":
        start = "tools.popen(['sh', '-c', 'echo $$ >%s; exec sleep 600'], start_new_session=True)"
    else:
        start = "tools.run(['sh', '-c', 'echo $$ >%s; exec sleep 600'], die_with_parent=True)"
    source = str(Path(tools.__file__).parents[2])  # the package's import path
    program = f"from oci2vm.util import tools\n{start % pid_file}\nimport time\ntime.sleep(600)"
    parent = subprocess.Popen(
        [sys.executable, "-c", program], env={**os.environ, "PYTHONPATH": source}
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
        os.kill(child, 0)  # running
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the program outlived its killed parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"
