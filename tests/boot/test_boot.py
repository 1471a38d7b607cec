"""The article's Debian image, built rootless into disks that boot in QEMU (TCG) to a
login prompt on the serial console: BIOS and UEFI, GPT and MBR, virtio and SATA, a 10 GiB
disk, qcow2 output, an image pulled from a registry, and a build by an unprivileged user.
Then a login with the password given at build time and a write to / ."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixture_images import FixtureSet, debian_fixture
from oci2vm import vm
from oci2vm.cli import main
from oci2vm.config import CHECK_EXPECT
from support.programs import requires

pytestmark = [pytest.mark.qemu, pytest.mark.fixture, requires("qemu-system-x86_64")]

PASSWORD = "oci2vm-Test-pw"
BOOT_TIMEOUT = 420.0  # TCG on two shared cores: ~25 s idle, far more under load


@pytest.fixture(scope="module")
def debian() -> FixtureSet:
    if os.geteuid() != 0:
        pytest.skip("building the Debian fixture needs root (debootstrap)")
    return debian_fixture()


def build(source: str, out: Path, *args: str) -> Path:
    code = main(["build", source, "-o", str(out), "-q", "--root-password", PASSWORD, *args])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def disks(debian: FixtureSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("disks")
    source = f"oci:{debian.oci_layout}:{debian.tag}"
    return {
        "hybrid": build(source, d / "hybrid.img"),
        "mbr": build(source, d / "mbr.img", "--table", "mbr", "--boot", "bios"),
    }


def assert_boots(disk: Path, **kwargs: object) -> vm.CheckResult:
    result = vm.check_boot(disk, timeout=BOOT_TIMEOUT, accel="tcg", **kwargs)  # type: ignore[arg-type]
    assert result.ok, f"{result.reason}\n--- console tail ---\n{result.tail}"
    assert "login:" in result.tail
    return result


@pytest.mark.parametrize("bus", ["virtio", "sata"])
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_gpt_hybrid_disk_boots_to_login(disks: dict[str, Path], firmware: str, bus: str) -> None:
    assert_boots(disks["hybrid"], firmware=firmware, bus=bus)


@pytest.mark.parametrize("bus", ["virtio", "sata"])
def test_mbr_disk_boots_to_login_on_bios(disks: dict[str, Path], bus: str) -> None:
    assert_boots(disks["mbr"], firmware="bios", bus=bus)


def test_login_with_build_password_and_write_to_root(disks: dict[str, Path]) -> None:
    marker = "oci2vm-rw-ok"
    result = vm.check_boot(
        disks["hybrid"],
        timeout=BOOT_TIMEOUT,
        accel="tcg",
        script=[
            ("", "root"),  # the login prompt check_boot waits for first is already there
            ("Password:", PASSWORD),
            (r"# ", f"echo written > /rw-test && cat /rw-test && echo {marker}-$((6*7))"),
            (rf"{marker}-42", None),
        ],
    )
    assert result.ok, f"{result.reason}\n--- console tail ---\n{result.tail}"
    assert "written" in result.tail


def test_ten_gib_disk_boots_and_stays_sparse(debian: FixtureSet, tmp_path: Path) -> None:
    disk = build(f"oci:{debian.oci_layout}:{debian.tag}", tmp_path / "big.img", "--size", "10G")
    st = disk.stat()
    assert st.st_size == 10 << 30
    assert st.st_blocks * 512 < 2 << 30, "the 10 GiB disk is not sparse"
    assert_boots(disk)


def test_qcow2_output_boots(debian: FixtureSet, tmp_path: Path) -> None:
    disk = build(f"oci:{debian.oci_layout}:{debian.tag}", tmp_path / "disk.qcow2", "--compress")
    info = subprocess.run(
        ["qemu-img", "check", str(disk)], capture_output=True, text=True, check=False
    )
    assert info.returncode == 0, info.stdout + info.stderr
    assert_boots(disk)


def test_check_command_reports_seconds_and_exit_code(
    disks: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", str(disks["mbr"]), "--accel", "tcg", "--timeout", str(BOOT_TIMEOUT)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"ok: /{CHECK_EXPECT}/ after ")  # (login:, or an app's start)
    code = main(
        [
            "check",
            str(disks["mbr"]),
            "--accel",
            "tcg",
            "--timeout",
            "5",
            "--expect",
            "never-printed",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("failed: ")
    assert "--- console tail ---" in out


@pytest.fixture
def unprivileged_user() -> Iterator[str]:
    name = "oci2vm-test"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", name], check=True)
    yield name


@pytest.fixture
def user_dir(unprivileged_user: str) -> Iterator[Path]:
    """A directory the unprivileged user owns (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="oci2vm-user-"))
    shutil.chown(path, unprivileged_user)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _runtime_copy(dest: Path) -> Path:
    """oci2vm and its runtime dependencies copied where any user can read them (the
    test's checkout and interpreter may sit under root's home)."""
    import importlib.metadata as md
    import re

    import oci2vm

    site = dest / "site"
    shutil.copytree(Path(oci2vm.__file__).parent, site / "oci2vm")
    todo, seen = ["oci2vm"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        dist = md.distribution(name)
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[ <>=!~;\[(]", req, maxsplit=1)[0])
        if name == "oci2vm":
            continue
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if source.is_file() and ".." not in file.parts:
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, site / file)
    return site


def _interpreter_for(user: str) -> str:
    """This interpreter if `user` may run it, else the system's Python of the same version."""
    for candidate in (
        os.path.realpath(sys.executable),
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        probe = subprocess.run(
            ["runuser", "-u", user, "--", candidate, "-c", "pass"], check=False, capture_output=True
        )
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python {sys.version_info[:2]} that {user} may run")


@requires("runuser", "useradd")
def test_unprivileged_user_builds_a_disk_that_boots(
    debian: FixtureSet, unprivileged_user: str, user_dir: Path
) -> None:
    disk = user_dir / "disk.img"
    site = _runtime_copy(user_dir / "runtime")
    home = Path(pwd.getpwnam(unprivileged_user).pw_dir)
    proc = subprocess.run(
        [
            "runuser",
            "-u",
            unprivileged_user,
            "--",
            _interpreter_for(unprivileged_user),
            "-m",
            "oci2vm.cli",
            "build",
            f"oci:{debian.oci_layout}:{debian.tag}",
            "-o",
            str(disk),
            "-q",
            "--root-password",
            PASSWORD,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(site)},
    )
    assert proc.returncode == 0, proc.stderr
    assert disk.stat().st_uid == pwd.getpwnam(unprivileged_user).pw_uid
    assert_boots(disk)


@pytest.mark.registry
@requires("docker-registry", "skopeo")
def test_image_pulled_from_local_registry_boots(debian: FixtureSet, tmp_path: Path) -> None:
    from support.registries import running_registry

    with running_registry(tmp_path / "registry") as registry:
        registry.push(debian.oci_layout, debian.tag, "debian:bookworm")
        disk = build(
            f"docker://{registry.host}/debian:bookworm",
            tmp_path / "pulled.img",
            "--tls-verify=false",
            "--cache-dir",
            str(tmp_path / "cache"),
        )
    assert_boots(disk, bus="sata")
