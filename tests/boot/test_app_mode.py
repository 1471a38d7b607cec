"""App mode booted for real (QEMU, TCG): bookworm's kernel booted directly with our
initramfs on the busybox fixture's root built by oci2vm, the workload run like docker run
runs it: the config's Env, User and WorkingDir, its exit status, stdout apart from stderr,
a published port reaching busybox httpd over a 9p volume, and Ctrl-C stopping it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from fixture_images import busybox_fixture
from oci2vm.boot.pvh import pvh_kernel
from oci2vm.cli import main
from oci2vm.config import Accel, Config, PortMapping, Volume
from oci2vm.initramfs.build import INITRAMFS_MODULES, build_initramfs
from oci2vm.initramfs.spec import BootSpec, Mode, VolumeMount
from support.apprun import BOOT_TIMEOUT, AppBoot
from support.kernelbundle import bookworm_kernel, busybox_static, have_debs
from support.programs import requires
from support.runcli import fetch_when_served, free_port

pytestmark = [pytest.mark.qemu, pytest.mark.fixture, requires("qemu-system-x86_64", "dpkg-deb")]

TCG = Config(accel=Accel.TCG, memory_mib=512)


@pytest.fixture(scope="module")
def boot(tmp_path_factory: pytest.TempPathFactory) -> AppBoot:
    if not have_debs():
        pytest.skip("the bookworm kernel and busybox-static .debs are not in the fixture cache")
    work = tmp_path_factory.mktemp("app")
    bundle = bookworm_kernel(work / "kernel", INITRAMFS_MODULES)
    vmlinux = pvh_kernel(bundle.vmlinuz.read_bytes())
    assert vmlinux is not None, "bookworm's kernel has a PVH entry (CONFIG_PVH=y)"
    kernel = work / "vmlinux"
    kernel.write_bytes(vmlinux)
    base = build_initramfs(busybox_static(), bundle.version, bundle.modules, None, mtime=0)
    fx = busybox_fixture()
    root = work / "busybox.ext4"
    assert main(["build", f"oci:{fx.oci_layout}:{fx.tag}", "-o", str(root), "-q"]) == 0
    return AppBoot(kernel, base, root, work)


def app(*argv: str, **fields: object) -> BootSpec:
    # The busybox fixture's config: Env FOO=bar, User 1000:1000, WorkingDir /app.
    defaults: dict[str, object] = dict(
        env=("PATH=/bin", "FOO=bar"), workdir="/app", user="1000:1000"
    )
    defaults.update(fields)
    return BootSpec(mode=Mode.APP, argv=argv, **defaults)  # type: ignore[arg-type]


def finish(proc: subprocess.Popen[bytes], timeout: float = BOOT_TIMEOUT) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def test_workload_gets_env_user_workdir_and_its_exit_status_comes_back(boot: AppBoot) -> None:
    script = 'echo "$FOO"; id -u; pwd; echo to-stderr >&2; exit 7'
    started = time.monotonic()
    code, out, err = finish(boot.start(app("sh", "-c", script), TCG, "env"))
    print(f"app boot under TCG: {time.monotonic() - started:.1f} s")  # shown with -s
    assert (code, out, err) == (7, "bar\n1000\n/app\n", "to-stderr\n")
    assert boot.root.stat().st_size > 0


def test_unknown_user_fails_like_docker(boot: AppBoot) -> None:
    code, out, err = finish(boot.start(app("true", user="nosuchuser"), TCG, "user"))
    assert (code, out) == (125, "")  # docker run's status for an error of the daemon
    assert "unable to find user nosuchuser" in err


def test_published_port_reaches_httpd_serving_a_volume_and_ctrl_c_stops_it(
    boot: AppBoot, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("served from the host\n")
    tmp_path.chmod(0o755)  # the workload runs as user 1000: the share must be open to it
    port = free_port()
    config = Config(
        accel=Accel.TCG, memory_mib=512, publish=(PortMapping(port, 8080),),
        volumes=(Volume(tmp_path, "/srv", read_only=True),),
    )  # fmt: skip
    volumes = (VolumeMount("vol0", "/srv", read_only=True),)
    spec = app("busybox", "httpd", "-f", "-p", "8080", "-h", "/srv", volumes=volumes)
    proc = boot.start(spec, config, "httpd")
    try:
        body = fetch_when_served(f"http://127.0.0.1:{port}/index.html", proc, BOOT_TIMEOUT)
        assert body == b"served from the host\n"
        stopped = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc, 60)
    finally:
        proc.kill()
    assert code == 128 + signal.SIGINT, err  # httpd ended by the SIGINT passed on, as reported
    assert time.monotonic() - stopped < 30


def test_ctrl_c_stops_a_sleeping_workload(boot: AppBoot) -> None:
    proc = boot.start(app("sh", "-c", "echo started; exec sleep 1000"), TCG, "sleep")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        stopped = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc, 60)
    finally:
        proc.kill()
    assert code in (130, 128 + signal.SIGTERM), err
    assert time.monotonic() - stopped < 15


def test_ctrl_c_reaches_a_started_workload_that_handles_it(boot: AppBoot) -> None:
    """Once the init has said the workload started, Ctrl-C is the workload's to handle
    (before, the VM is killed at once): its trap's output and status come back."""
    script = 'trap "echo caught; exit 3" INT; echo started; while :; do sleep 1; done'
    proc = boot.start(app("sh", "-c", script), TCG, "trap")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc, 60)
    finally:
        proc.kill()
    assert (code, out) == (3, "caught\n"), err
