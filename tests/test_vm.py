"""QEMU command lines, the KVM probe, and check_boot: it stops at the first match, types
scripted input, reports failures with the console tail and never leaves QEMU running."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from oci2vm import vm
from oci2vm.errors import Oci2vmError
from oci2vm.util import tools
from test_grub import (
    gpt_bios_disk,
    have_grub_pc,
    marker_cfg,
    needs_disk_tools,
    needs_grub_pc,
)

have_qemu = tools.have_program(vm.QEMU)
needs_qemu = pytest.mark.skipif(not have_qemu, reason="needs qemu-system-x86")


@pytest.fixture
def fresh_kvm_probe() -> Iterator[None]:
    """kvm_works() caches its answer per process; these tests want to ask again."""
    vm.kvm_works.cache_clear()
    yield
    vm.kvm_works.cache_clear()


def processes_using(path: Path) -> list[int]:
    """PIDs of live processes whose command line mentions `path`."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


# -- command lines -------------------------------------------------------------------------


def test_bios_virtio_command_line() -> None:
    argv = vm.qemu_command(Path("/d/disk.img"), accel="tcg", memory_mib=512, cpus=1)
    assert argv == [
        "qemu-system-x86_64",
        "-machine", "pc",
        "-accel", "tcg", "-cpu", "max",
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
        "-accel", "tcg", "-cpu", "max",
        "-m", "1024",
        "-smp", "2",
        "-nographic",
        "-no-reboot",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={vm.OVMF_CODE}",
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


def test_efi_vars_copy_is_the_ovmf_template(tmp_path: Path) -> None:
    if not vm.OVMF_VARS.is_file():
        pytest.skip("needs ovmf")
    copy = vm.copy_efi_vars(tmp_path)
    assert copy.parent == tmp_path
    assert copy.read_bytes() == vm.OVMF_VARS.read_bytes()


def test_missing_ovmf_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "OVMF_VARS", tmp_path / "nope.fd")
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


@pytest.mark.qemu
@needs_qemu
def test_probe_boot_sector_prints_its_marker_under_tcg(tmp_path: Path) -> None:
    image = tmp_path / "probe.img"
    image.write_bytes(vm.kvm_probe_image())
    proc = tools.run(
        [vm.QEMU, "-accel", "tcg", "-machine", "pc", "-m", "16", "-display", "none",
         "-nodefaults", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
         "-drive", f"file={image},format=raw,if=ide", "-no-reboot"],
        input=b"", check=False, timeout=30,
    )  # fmt: skip
    assert proc.stdout == vm.KVM_PROBE_MARKER + b"\n"
    assert proc.returncode == 1  # isa-debug-exit: (0 << 1) | 1


@pytest.mark.qemu
@needs_qemu
def test_probe_verdict_matches_how_kvm_really_runs_it(
    tmp_path: Path, fresh_kvm_probe: None
) -> None:
    """Run the probe under KVM with all the time it wants: KVM is chosen exactly when it
    finishes within the probe's budget. On this project's build machine (nested KVM that
    emulates real mode) that is never, so the verdict is TCG."""
    verdict = vm.kvm_works()
    if not vm.kvm_device_usable():
        assert verdict is False
        return
    image = tmp_path / "probe.img"
    image.write_bytes(vm.kvm_probe_image())
    started = time.monotonic()
    proc = tools.run(
        [vm.QEMU, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "16",
         "-display", "none", "-nodefaults", "-serial", "stdio",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
         "-drive", f"file={image},format=raw,if=ide", "-no-reboot"],
        input=b"", check=False, timeout=60,
    )  # fmt: skip
    seconds = time.monotonic() - started
    finished = vm.KVM_PROBE_MARKER in proc.stdout
    if finished and seconds < vm.KVM_PROBE_TIMEOUT * 0.8:
        assert verdict is True
    elif not finished or seconds > vm.KVM_PROBE_TIMEOUT * 1.2:
        assert verdict is False
    assert vm.kvm_works() is verdict  # cached
    assert vm.kvm_works.cache_info().hits >= 1


@pytest.mark.qemu
@needs_qemu
def test_auto_accel_is_tcg_on_the_build_machine(fresh_kvm_probe: None) -> None:
    """REFERENCE.md: /dev/kvm here is nested and faults; boots must use TCG."""
    if os.environ.get("OCI2VM_HOST_HAS_WORKING_KVM") == "1":
        pytest.skip("this host declares working KVM")
    argv = vm.qemu_command(Path("d.img"))
    assert argv[argv.index("-accel") + 1] == "tcg"


# -- check_boot ----------------------------------------------------------------------------


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


def grub_disk(tmp_path: Path, grub_cfg_text: str) -> Path:
    if not have_grub_pc:
        pytest.skip("needs grub-pc-bin")
    return gpt_bios_disk(tmp_path, grub_cfg_text)


WAIT_CFG = (
    "serial --unit=0 --speed=115200\n"
    "terminal_input serial console\n"
    "terminal_output serial console\n"
    "echo OCI2VM-WAITING\n"
    "sleep 600\n"
)


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_check_boot_stops_at_the_first_match(tmp_path: Path) -> None:
    image = grub_disk(tmp_path, WAIT_CFG)
    result = vm.check_boot(image, expect="OCI2VM-WAITING", timeout=60, accel="tcg")
    assert result.ok
    assert result.reason == "matched"
    assert "OCI2VM-WAITING" in result.tail
    assert result.seconds < 30  # GRUB sleeps 600 s after the marker
    assert processes_using(image) == []


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_check_boot_times_out_with_the_console_tail_and_kills_qemu(tmp_path: Path) -> None:
    image = grub_disk(tmp_path, WAIT_CFG)
    result = vm.check_boot(image, expect="NEVER-PRINTED", timeout=4, accel="tcg")
    assert not result.ok
    assert result.reason == "timed out waiting for 'NEVER-PRINTED'"
    assert "OCI2VM-WAITING" in result.tail
    assert 4 <= result.seconds < 10
    assert processes_using(image) == []


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_check_boot_reports_a_guest_that_powers_off_first(tmp_path: Path) -> None:
    image = grub_disk(tmp_path, marker_cfg("OCI2VM-BYE"))
    result = vm.check_boot(image, expect="NEVER-PRINTED", timeout=60, accel="tcg")
    assert not result.ok
    assert result.reason == "QEMU exited (0) before 'NEVER-PRINTED'"
    assert "OCI2VM-BYE" in result.tail
    assert processes_using(image) == []


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_check_boot_kills_qemu_when_watching_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = grub_disk(tmp_path, WAIT_CFG)
    seen: list[list[int]] = []

    def broken_watch(proc: subprocess.Popen[bytes], *args: object) -> object:
        time.sleep(0.5)
        seen.append(processes_using(image))
        raise RuntimeError("watcher bug")

    monkeypatch.setattr(vm, "_watch", broken_watch)
    with pytest.raises(RuntimeError, match="watcher bug"):
        vm.check_boot(image, expect="x", timeout=60, accel="tcg")
    assert seen and seen[0]  # QEMU was running while the watcher ran...
    assert processes_using(image) == []  # ...and is gone after the error


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_check_boot_script_types_on_the_serial_console(tmp_path: Path) -> None:
    cfg = (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial\n"
        "terminal_output serial\n"
        "set timeout=60\n"
        "menuentry 'OCI2VM test entry' { echo never }\n"
    )
    image = grub_disk(tmp_path, cfg)
    # The typed text echoes as "${x}-by-script"; only GRUB's expansion prints the match.
    script: Sequence[tuple[str, str | None]] = [
        (r"", "c"),
        (r"grub> ", "set x=typed; echo ${x}-by-script"),
        (r"typed-by-script", None),
    ]
    result = vm.check_boot(
        image, expect="OCI2VM test entry", script=script, timeout=60, accel="tcg"
    )
    assert result.ok, result.tail
    assert "\ntyped-by-script" in result.tail  # GRUB's output line, not the echo
    assert processes_using(image) == []


@pytest.mark.qemu
@needs_qemu
@needs_grub_pc
@needs_disk_tools
def test_run_vm_returns_qemu_exit_status(tmp_path: Path) -> None:
    image = grub_disk(tmp_path, marker_cfg("OCI2VM-RUN"))
    started = time.monotonic()
    assert vm.run_vm(image, accel="tcg", snapshot=True, network=False) == 0  # GRUB halts
    assert time.monotonic() - started < 60
