"""Issue 12's boot matrix (QEMU, TCG): each fixture image, built twice into disks with a
password user (`--add-user`) and a root password, boots to `login:` on the serial console;
the user logs in and one typed line (support.bootmatrix.probe_line) answers: the first
NIC's DHCP address (QEMU's user network, 10.0.2.0/24), the DNS server the lease named
written to /etc/resolv.conf, a page the test serves on the host's
loopback (reached at 10.0.2.2), a file written to / as root (through `su`: minbase has no
sudo), and /etc/machine-id, which must differ between the two disks.

A cell is one line of CELLS: the fixture's name (tests/fixture_images.fixture) and how its
guest fetches the page. A cell whose fixture has no recipe yet, or is not cached and cannot
be built here, is skipped. The module fixture builds every selected cell's disks first,
then boots them BOOTS_AT_ONCE at a time (a TCG guest keeps one host core busy); each cell's
test asserts on its own boots, so one cell's failure hides no other's."""

from __future__ import annotations

import ipaddress
import os
import re
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oci2vm import vm
from support.bootmatrix import (
    BASH_TCP,
    BUSYBOX_WGET,
    USER_NET_DNS,
    WRITTEN_TEXT,
    Page,
    build_disk,
    parse_answers,
    probe_line,
    probe_script,
    served_page,
    skip_unless_fixture,
)
from support.programs import requires

pytestmark = [pytest.mark.qemu, pytest.mark.fixture,
              requires("qemu-system-x86_64")]  # fmt: skip

USER, PASSWORD, ROOT_PASSWORD = "tester", "oci2vm-Matrix-pw", "oci2vm-Root-pw"
BOOT_TIMEOUT = 420.0  # TCG on two shared cores: far more than idle under load
BOOTS_AT_ONCE = int(os.environ.get("OCI2VM_BOOTS_AT_ONCE", "2"))
# oci2vm's initramfs names a driver that failed to load, and the kernel each symbol a
# module misses (Hyper-V's drivers on top of a vmbus that would not load, say).
MODULE_FAILED = r"oci2vm-init: could not load [^\n]*|: Unknown symbol [^\n]*"
DISKS_PER_CELL = 2  # the second proves the machine-id is made at first boot, per machine


@dataclass(frozen=True)
class Cell:
    fixture: str  # a name of tests/fixture_images.fixture
    fetch: str = BASH_TCP  # shell that prints the page's body (support.bootmatrix)
    su: bool = True  # the user writes to / through su; False: logs out, root logs in


CELLS = (
    Cell("debian-systemd"),  # bookworm minbase + systemd-sysv: networkd
    Cell("debian-sysvinit"),  # sysvinit-core + ifupdown + isc-dhcp-client
    Cell("debian-openrc"),  # sysvinit-core + openrc + ifupdown
    Cell("debian-runit"),  # runit-init without getty-run
    Cell("debian-trixie"),  # trixie + systemd-sysv: merged /usr, .ko.xz modules
    Cell("busybox-init", fetch=BUSYBOX_WGET, su=False),  # busybox is not setuid
)


@dataclass
class CellRun:
    """One cell's outcome: skipped (why), failed to build (the error), or its boots."""

    skipped: str = ""
    error: str = ""
    disks: list[Path] = field(default_factory=list)
    build_seconds: float = 0.0
    boots: list[vm.CheckResult] = field(default_factory=list)


def selected_cells(request: pytest.FixtureRequest) -> list[Cell]:
    """The cells whose tests this session runs (-k, node ids), so that only they boot."""
    chosen = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.path == request.node.path and callspec is not None and "cell" in callspec.params:
            chosen.add(callspec.params["cell"])
    return [cell for cell in CELLS if cell in chosen]


def build_cell(cell: Cell, directory: Path) -> CellRun:
    run = CellRun()
    try:
        skip_unless_fixture(cell.fixture)
    except pytest.skip.Exception as skip:
        run.skipped = str(skip.msg)
        return run
    started = time.monotonic()
    try:
        for n in range(DISKS_PER_CELL):
            disk = directory / f"{cell.fixture}-{n}.img"
            build_disk(cell.fixture, disk, "--add-user", f"{USER}:{PASSWORD}:sudo",
                       "--root-password", ROOT_PASSWORD)  # fmt: skip
            run.disks.append(disk)
    except Exception:  # the cell's test reports it; the other cells still boot
        run.error = traceback.format_exc()
    run.build_seconds = time.monotonic() - started
    print(f"matrix: {cell.fixture}: {len(run.disks)} disks built in {run.build_seconds:.0f} s")
    return run


def boot(cell: Cell, disk: Path, page: Page) -> vm.CheckResult:
    """Boot `disk` with a NIC, log in, run the probe (one host core: TCG, one vCPU)."""
    result = vm.check_boot(
        disk, expect="login:", timeout=BOOT_TIMEOUT, accel="tcg", cpus=1, network=True,
        fail=f"{vm.KERNEL_PANIC}|{MODULE_FAILED}",
        script=probe_script(USER, PASSWORD, ROOT_PASSWORD,
                            probe_line(page.port, cell.fetch, su=cell.su), su=cell.su),
    )  # fmt: skip
    print(f"matrix: {disk.name}: {'ok' if result.ok else result.reason} in {result.seconds:.0f} s")
    return result


@pytest.fixture(scope="module")
def matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[Cell, CellRun], Page]]:
    """Every selected cell built, then booted BOOTS_AT_ONCE at a time."""
    directory = tmp_path_factory.mktemp("matrix")
    runs = {cell: build_cell(cell, directory) for cell in selected_cells(request)}
    jobs = [(cell, disk) for cell, run in runs.items() for disk in run.disks]
    with served_page() as page, ThreadPoolExecutor(max_workers=BOOTS_AT_ONCE) as pool:
        started = time.monotonic()
        results = list(pool.map(lambda job: boot(job[0], job[1], page), jobs))
        print(f"matrix: {len(jobs)} boots, {BOOTS_AT_ONCE} at once: "
              f"{time.monotonic() - started:.0f} s")  # fmt: skip
        for (cell, _), result in zip(jobs, results, strict=True):
            runs[cell].boots.append(result)
        yield runs, page


def problems_of(result: vm.CheckResult, page: Page) -> list[str]:
    """What one boot got wrong, from its console's answers."""
    if not result.ok:
        return [f"boot: {result.reason}"]
    answers = parse_answers(result.tail)
    problems = []
    address = answers.get("ip", "")
    try:
        if ipaddress.ip_address(address) not in ipaddress.ip_network("10.0.2.0/24"):
            problems.append(f"address {address} is not from QEMU's DHCP (10.0.2.0/24)")
    except ValueError:
        problems.append(f"no IPv4 address on the NIC: {address!r}")
    if answers.get("dns") != USER_NET_DNS:
        problems.append(f"resolv.conf's nameserver {answers.get('dns')!r}, not the lease's")
    if answers.get("page") != page.body:
        problems.append(f"page fetched from the host: {answers.get('page')!r}")
    if answers.get("write") != WRITTEN_TEXT:
        problems.append(f"file written to / reads {answers.get('write')!r}")
    if not re.fullmatch(r"[0-9a-f]{32}", answers.get("machine-id", "")):
        problems.append(f"machine-id {answers.get('machine-id')!r} is not 32 hex digits")
    return problems


@pytest.mark.parametrize("cell", CELLS, ids=[cell.fixture for cell in CELLS])
def test_cell_logs_in_gets_dhcp_fetches_writes_and_has_its_own_machine_id(
    matrix: tuple[dict[Cell, CellRun], Page], cell: Cell
) -> None:
    runs, page = matrix
    run = runs[cell]
    if run.skipped:
        pytest.skip(run.skipped)
    assert not run.error, f"building {cell.fixture} failed:\n{run.error}"
    report = []
    for disk, result in zip(run.disks, run.boots, strict=True):
        problems = problems_of(result, page)
        if problems:
            report.append(f"{disk.name}: " + "; ".join(problems))
            report.append(f"--- {disk.name} console tail ---\n{result.tail}")
    ids = [parse_answers(result.tail).get("machine-id") for result in run.boots]
    if not report and len(set(ids)) != len(ids):
        report.append(f"two machines built from one image share machine-id {ids[0]}")
    assert not report, "\n".join(report)
