"""The initramfs read back by reference tools: GNU cpio lists and extracts what the writer
wrote; a real sh sources the spec file and gets every hostile value back byte for byte;
the init scripts parse under busybox sh."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from oci2vm.initramfs import build
from oci2vm.initramfs.cpio import CpioWriter
from oci2vm.initramfs.spec import BootSpec, Mode, VolumeMount, render
from support.programs import requires

HOSTILE = (
    "it's", 'say "hi"', "$(touch /tmp/oci2vm-pwned)", "`id`", "a\nb", "back\\slash",
    "", " lead and trail ", "*", "$HOME", "'", "''", "\t", "é ü", "-n", "--", "\\'",
)  # fmt: skip


@requires("cpio")
def test_gnu_cpio_lists_and_extracts_the_archive(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = CpioWriter(out, mtime=1_700_000_000)
    writer.add_dir("etc")
    writer.add_file("etc/conf", b"x" * 1001, 0o640)
    writer.add_symlink("etc/link", "conf")
    writer.add_file("odd name", b"")
    writer.close()
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=out.getvalue(), capture_output=True, check=True
    )
    assert listing.stdout.decode().splitlines() == ["etc", "etc/conf", "etc/link", "odd name"]
    subprocess.run(
        ["cpio", "-i", "--quiet", "--no-absolute-filenames", "-m"],
        input=out.getvalue(), cwd=tmp_path, check=True,
    )  # fmt: skip
    assert (tmp_path / "etc/conf").read_bytes() == b"x" * 1001
    assert (tmp_path / "etc/conf").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "etc/conf").stat().st_mtime == 1_700_000_000
    assert os.readlink(tmp_path / "etc/link") == "conf"


@requires("cpio")
def test_gnu_cpio_reads_the_built_initramfs(tmp_path: Path) -> None:
    data = build.build_initramfs(b"BB", "v", [("kernel/m.ko", b"KO")], None, mtime=0)
    listing = (
        subprocess.run(
            ["cpio", "-t", "--quiet"], input=gzip.decompress(data), capture_output=True, check=True
        )
        .stdout.decode()
        .splitlines()
    )
    assert {"init", "bin/busybox", "dev/console", "lib/modules/v/kernel/m.ko"} <= set(listing)


def _sourced(spec: BootSpec, tmp_path: Path, shell: str, variable: str) -> list[str]:
    spec_file = tmp_path / "spec"
    spec_file.write_bytes(render(spec))
    script = f'. "$1"; eval "set -- ${variable}"; printf "%s\\0" "$@"'
    shell_argv = [shell, "sh"] if shell == "busybox" else [shell]
    result = subprocess.run(
        [*shell_argv, "-c", script, "sh", str(spec_file)],
        capture_output=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    return result.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("shell", [pytest.param("sh", marks=requires("sh")),
                                   pytest.param("busybox", marks=requires("busybox"))])  # fmt: skip
def test_hostile_argv_env_and_volumes_survive_the_shell(tmp_path: Path, shell: str) -> None:
    spec = BootSpec(
        mode=Mode.APP,
        argv=HOSTILE,
        env=tuple(f"K{i}={value}" for i, value in enumerate(HOSTILE)),
        volumes=(VolumeMount("vol0", "/a 'b'\n$(c)"),),
    )
    assert _sourced(spec, tmp_path, shell, "SPEC_ARGV") == list(HOSTILE)
    assert _sourced(spec, tmp_path, shell, "SPEC_ENV") == list(spec.env)
    assert _sourced(spec, tmp_path, shell, "SPEC_VOLUMES") == ["vol0", "/a 'b'\n$(c)", "rw"]
    assert not Path("/tmp/oci2vm-pwned").exists()


@requires("busybox")
@pytest.mark.parametrize("script", ["init.sh", "udhcpc.sh", "growroot.sh"])
def test_init_scripts_parse_under_busybox_sh(tmp_path: Path, script: str) -> None:
    path = tmp_path / script
    path.write_bytes(resources.files("oci2vm.initramfs").joinpath(script).read_bytes())
    subprocess.run(["busybox", "sh", "-n", str(path)], check=True)
