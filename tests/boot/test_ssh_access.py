"""SSH into built disks (QEMU, TCG): an image with SSH host keys baked in, built twice with
`--ssh-key tester=FILE`, boots into two VMs whose host keys differ from each other and from
the image's; `ssh` from the host, through a port forwarded to the guest's 22, logs in with
the key and runs a command. Each VM's user is also logged in on the serial console, where
it reads the host key the VM made and keeps the VM up until the host's ssh is done.

SSH_CELLS names the fixture images with openssh-server and baked keys; one whose recipe is
missing, or which is not cached and cannot be built here, is skipped."""

from __future__ import annotations

import subprocess
import tarfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from oci2vm import vm
from support.bootmatrix import build_disk, login_script, parse_answers, skip_unless_fixture
from support.programs import requires
from support.runcli import free_port

pytestmark = [pytest.mark.qemu, pytest.mark.fixture,
              requires("qemu-system-x86_64", "ssh", "ssh-keygen", "ssh-keyscan")]  # fmt: skip

SSH_CELLS = ("debian-sysvinit",)  # sysvinit-core + ifupdown + openssh-server, keys baked in
USER, PASSWORD = "tester", "oci2vm-Ssh-pw"
BOOT_TIMEOUT = 420.0  # TCG on two shared cores
HOST_KEY = "etc/ssh/ssh_host_ed25519_key.pub"
DONE_FLAG = "/tmp/oci2vm-ssh-done"  # the host's ssh session creates it
SSH_OPTIONS = ("-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
               "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes",
               "-o", "LogLevel=ERROR")  # fmt: skip
# On the console: show the host key the VM made (once it exists), then keep the session
# open until the host's ssh has been in, so that a broken network still shows the key.
CONSOLE_LINE = (
    f"until [ -e /{HOST_KEY} ]; do sleep 1; done; "
    'echo "==BEGIN-$((6*7))=="; '
    f"echo \"hostkey-$((6*7))=$(cut -d ' ' -f 2 /{HOST_KEY})\"; "
    'echo "==END-$((6*7))=="; '
    f"until [ -e {DONE_FLAG} ]; do sleep 1; done; "
    'echo "==SSH-DONE-$((6*7))=="'
)


@dataclass(frozen=True)
class SshRun:
    """One VM: its console session, the host's ssh output and the key ssh-keyscan saw."""

    boot: vm.CheckResult
    ssh_output: str
    ssh_error: str
    scanned_key: str

    @property
    def console_key(self) -> str:
        return parse_answers(self.boot.tail, ("hostkey",)).get("hostkey", "")


def ssh(port: int, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-p", str(port), "-i", str(key), *SSH_OPTIONS, f"{USER}@127.0.0.1", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def ssh_while_booting(port: int, key: Path, booting: Future[vm.CheckResult]) -> tuple[str, str]:
    """ssh `echo ok` until it works or the boot ends; its (stdout, last stderr)."""
    error = ""
    while not booting.done():
        proc = ssh(port, key, "echo ok")
        if proc.returncode == 0:
            return proc.stdout, ""
        error = proc.stderr.strip()
        time.sleep(3)
    return "", error


def scan_host_key(port: int) -> str:
    argv = ["ssh-keyscan", "-p", str(port), "-t", "ed25519", "-T", "10", "127.0.0.1"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
    fields = out.split()
    return fields[2] if len(fields) >= 3 else ""


def boot_and_ssh(disk: Path, key: Path) -> SshRun:
    """Boot `disk` with the guest's 22 on a free host port, log in on the console, and
    ssh in from the host while it waits."""
    port = free_port()
    with ThreadPoolExecutor(max_workers=1) as pool:
        booting = pool.submit(
            vm.check_boot, disk, expect="login:", timeout=BOOT_TIMEOUT, accel="tcg", cpus=1,
            network=True, forwards=[(port, 22)], fail=vm.KERNEL_PANIC,
            script=[*login_script(USER, PASSWORD, CONSOLE_LINE), ("==SSH-DONE-42==", None)],
        )  # fmt: skip
        out, error = ssh_while_booting(port, key, booting)
        scanned = ""
        if out:  # then let the console show its key and end the session
            scanned = scan_host_key(port)
            ssh(port, key, f"touch {DONE_FLAG}")
        return SshRun(booting.result(), out, error, scanned)


def baked_host_key(fixture_name: str) -> str:
    """The ed25519 host key the image itself ships (read from its rootfs.tar)."""
    from fixture_images import fixture

    with tarfile.open(fixture(fixture_name).rootfs_tar) as tar:
        member = tar.extractfile(HOST_KEY) or tar.extractfile(f"./{HOST_KEY}")
        assert member is not None, f"{fixture_name} has no {HOST_KEY}"
        return member.read().decode().split()[1]


@pytest.fixture(scope="module", params=SSH_CELLS)
def ssh_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[SshRun]]:
    """Two disks of one image with the same --ssh-key, booted side by side."""
    name: str = request.param
    skip_unless_fixture(name)
    directory = tmp_path_factory.mktemp(f"ssh-{name}")
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "oci2vm-test",
                    "-f", str(key)], check=True)  # fmt: skip
    disks = [directory / f"{name}-{n}.img" for n in range(2)]
    for disk in disks:
        build_disk(name, disk, "--add-user", f"{USER}:{PASSWORD}",
                   "--ssh-key", f"{USER}={key}.pub")  # fmt: skip
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda disk: boot_and_ssh(disk, key), disks))
    print(f"ssh: {name}: two VMs in {time.monotonic() - started:.0f} s")
    return name, runs


def describe(runs: list[SshRun]) -> str:
    return "\n".join(
        f"--- VM {n}: {run.boot.reason}; ssh: {run.ssh_error!r}; console tail ---\n{run.boot.tail}"
        for n, run in enumerate(runs)
    )


def test_ssh_with_the_build_time_key_runs_a_command(ssh_runs: tuple[str, list[SshRun]]) -> None:
    _, runs = ssh_runs
    assert [run.ssh_output for run in runs] == ["ok\n", "ok\n"], describe(runs)
    # the key sshd presents through the forwarded port is the one the VM made
    assert [run.scanned_key for run in runs] == [run.console_key for run in runs]


def test_two_vms_of_one_image_have_their_own_host_keys(
    ssh_runs: tuple[str, list[SshRun]],
) -> None:
    name, runs = ssh_runs
    keys = [run.console_key for run in runs]
    assert all(keys), describe(runs)
    assert keys[0] != keys[1]
    assert baked_host_key(name) not in keys
