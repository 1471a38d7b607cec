"""docker-daemon: an image held by a local Podman (vfs storage in a temporary directory,
so the test needs no daemon and touches no system storage) is saved and read like the
docker-archive it becomes, with the same identity."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from oci2vm.cli import main
from support.layouts import directory, file, write_layout
from support.programs import requires

pytestmark = requires("podman")


def test_image_from_podman_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    built = write_layout(
        tmp_path / "layout",
        [[directory("etc"), file("etc/os-release", b"ID=tiny\n")], [file("app", b"x" * 5000)]],
        tag="tiny",
    )
    archive = tmp_path / "tiny.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(built.path, arcname=".")
    conf = tmp_path / "storage.conf"
    conf.write_text(
        "[storage]\n"
        'driver = "vfs"\n'
        f'runroot = "{tmp_path / "run"}"\n'
        f'graphroot = "{tmp_path / "graph"}"\n'
    )
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir(mode=0o700)
    load = subprocess.run(
        ["podman", "load", "-i", str(archive)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
    )
    assert load.returncode == 0, load.stderr
    image_id = built.config_digest.split(":")[1]
    subprocess.run(["podman", "tag", image_id, "localhost/tiny:latest"], check=True)
    code = main(
        [
            "inspect",
            "--json",
            "docker-daemon:localhost/tiny:latest",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert [layer["diff_id"] for layer in report["layers"]] == built.diff_ids
    assert report["os"]["id"] == "tiny"


def test_unknown_image_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{tmp_path / "run"}"\n'
        f'graphroot = "{tmp_path / "graph"}"\n'
    )
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    code = main(["inspect", "docker-daemon:no/such:image", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("oci2vm: error: docker-daemon:no/such:image: ")
    assert len(err.strip().splitlines()) == 1
