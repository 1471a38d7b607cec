"""The app-mode init's root_path and root_dir (init.sh), run by busybox's sh against a
directory standing in for the image's root: a path of the image (working directory,
volume and tmpfs mount points, /etc/resolv.conf) is resolved as the image's processes
would resolve it, never into the initramfs around the root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from oci2vm.initramfs import spec as spec_module

pytestmark = pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox")

INIT = (Path(spec_module.__file__).parent / "init.sh").read_text()


def _functions(*names: str) -> str:
    found = []
    for name in names:
        match = re.search(rf"^{name}\(\) \{{ #[^\n]*\n.*?^\}}\n", INIT, re.M | re.S)
        assert match is not None, name
        found.append(match[0])
    return "".join(found)


def _run(root: Path, call: str, path: str) -> tuple[int, str]:
    script = f'ROOT="$1"\n{_functions("root_path", "root_dir")}{call} "$2"\n'
    done = subprocess.run(
        ["busybox", "sh", "-c", script, "sh", str(root), path],
        check=False,
        capture_output=True,
        text=True,
    )
    return done.returncode, done.stdout.removesuffix("\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "srv/app").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "etc").mkdir()
    (root / "afile").write_text("x")
    links = {
        "app2": "/srv/app",  # absolute: from the root, not from the initramfs
        "esc": "/etc/oci2vm",  # what the initramfs has at that path
        "var/run": "/run",
        "rel": "../srv/app",
        "up": "../../../../..",
        "loop1": "loop2",
        "loop2": "/loop1",
        "etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    return root


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("/", "/"),
        ("/srv/app", "/srv/app"),
        ("/app2", "/srv/app"),
        ("/app2/data", "/srv/app/data"),
        ("/esc", "/etc/oci2vm"),
        ("/var/run/php", "/run/php"),
        ("/rel/sub", "/srv/app/sub"),
        ("/up/srv", "/srv"),
        ("/../../srv/./app/../app", "/srv/app"),
        ("//srv///app/", "/srv/app"),
        ("/etc/resolv.conf", "/run/systemd/resolve/stub-resolv.conf"),
        ("/missing/app2", "/missing/app2"),  # past a missing component: as it is
    ],
)
def test_a_path_resolves_inside_the_root(root: Path, path: str, inside: str) -> None:
    assert _run(root, "root_path", path) == (0, inside)


def test_a_loop_of_links_is_an_error(root: Path) -> None:
    assert _run(root, "root_path", "/loop1/x") == (1, "")


def test_root_dir_makes_the_directory_inside_the_root(root: Path) -> None:
    outside = sorted(p.name for p in root.parent.iterdir())
    for path, made in [("/esc", "etc/oci2vm"), ("/var/run/php", "run/php"), ("/app2", "srv/app")]:
        assert _run(root, "root_dir", path) == (0, f"{root}/{made}")
        assert (root / made).is_dir() and not (root / made).is_symlink()
    assert sorted(p.name for p in root.parent.iterdir()) == outside


@pytest.mark.parametrize("path", ["/afile", "/afile/sub", "/loop1"])
def test_root_dir_refuses_what_cannot_be_a_directory(root: Path, path: str) -> None:
    assert _run(root, "root_dir", path) == (1, "")
