"""The fixture images without a kernel: debian-systemd (an init, no kernel), debian-minbase
(no init at all) and busybox-app (an application image as `docker run` gets one). What the
tests of app mode and of a kernel brought by oci2vm rely on them to hold."""

from __future__ import annotations

import os
import socket
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from fixture_images import (
    BUSYBOX_APP_APPLETS,
    BUSYBOX_APP_INDEX_HTML,
    FixtureSet,
    busybox_app_fixture,
    debian_minbase_fixture,
    debian_systemd_fixture,
    expected_tree,
    fixture_is_cached,
    kernel_paths,
    read_member,
    resolve,
)

pytestmark = pytest.mark.fixture

MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _skip_unless_buildable(name: str) -> None:
    if not fixture_is_cached(name) and os.geteuid() != 0:
        pytest.skip(f"building the {name} fixture needs root (debootstrap, chroot)")


@pytest.fixture(scope="module")
def systemd() -> FixtureSet:
    _skip_unless_buildable("debian-systemd")
    return debian_systemd_fixture()


@pytest.fixture(scope="module")
def minbase() -> FixtureSet:
    _skip_unless_buildable("debian-minbase")
    return debian_minbase_fixture()


@pytest.fixture(scope="module")
def app() -> FixtureSet:
    return busybox_app_fixture()


def test_debian_systemd_boots_systemd_but_has_no_kernel(systemd: FixtureSet) -> None:
    tree = expected_tree(systemd)
    assert tree["sbin"]["linkname"] == "usr/sbin"  # merged /usr
    assert tree["usr/sbin/init"]["linkname"] == "/lib/systemd/systemd"
    assert resolve(tree, "sbin/init") == "usr/lib/systemd/systemd"
    assert tree["usr/lib/systemd/systemd"]["kind"] == "file"
    assert tree["boot"]["kind"] == "dir"
    assert kernel_paths(tree) == []
    assert systemd.layer_media_types == (MT_GZIP,) * 2
    assert (systemd.cmd, systemd.entrypoint) == (("/bin/bash",), None)
    assert systemd.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    assert not [path for path in tree if path.startswith("var/lib/apt/lists/")]


def test_debian_systemd_root_has_no_password(systemd: FixtureSet) -> None:
    shadow = read_member(systemd, "etc/shadow").decode()
    [root] = [line for line in shadow.splitlines() if line.startswith("root:")]
    assert root.split(":")[1] in {"*", "!"}  # locked: tests set one with --root-password


def test_debian_minbase_has_neither_init_nor_kernel(minbase: FixtureSet) -> None:
    tree = expected_tree(minbase)
    assert resolve(tree, "sbin") == "usr/sbin"
    assert resolve(tree, "sbin/init") is None
    assert not [path for path in tree if path.startswith("usr/lib/systemd/systemd")]
    assert kernel_paths(tree) == []
    assert tree["etc/os-release"]["linkname"] == "../usr/lib/os-release"
    assert b"VERSION_CODENAME=bookworm" in read_member(minbase, "usr/lib/os-release")
    assert minbase.cmd == ("/bin/bash",) and len(minbase.diff_ids) == 1


def test_debian_systemd_is_minbase_plus_one_layer(systemd: FixtureSet, minbase: FixtureSet) -> None:
    assert systemd.diff_ids[:1] == minbase.diff_ids
    assert systemd.layer_digests[:1] == minbase.layer_digests
    assert systemd.config_digest != minbase.config_digest


def test_busybox_app_config_is_an_app_image(app: FixtureSet) -> None:
    assert app.config == {
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SOME_ENV_FROM_CONFIG=value-from-config",
        ],
        "User": "app",
        "WorkingDir": "/app",
        "Cmd": ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
        "ExposedPorts": {"8080/tcp": {}},
        "StopSignal": "SIGTERM",
    }
    assert app.entrypoint is None and app.user == "app" and app.working_dir == "/app"
    assert app.layer_media_types == (MT_GZIP,)


def test_busybox_app_tree_resolves_the_user_and_serves_a_page(app: FixtureSet) -> None:
    tree = expected_tree(app)
    assert read_member(app, "etc/passwd") == (
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
    )
    assert read_member(app, "etc/group") == b"root:x:0:\napp:x:1000:\nextra:x:1001:app\n"
    for path in ("app", "home/app", "app/hello.txt"):
        assert (tree[path]["uid"], tree[path]["gid"]) == (1000, 1000), path
    assert read_member(app, "www/index.html").decode() == BUSYBOX_APP_INDEX_HTML
    needed = {"sh", "httpd", "id", "pwd", "echo", "cat", "env", "sleep", "ls", "hostname",
              "ip", "wget", "nc"}  # fmt: skip
    assert needed <= set(BUSYBOX_APP_APPLETS)
    for applet in BUSYBOX_APP_APPLETS:
        assert (tree[f"bin/{applet}"]["kind"], tree[f"bin/{applet}"]["linkname"]) == (
            "symlink", "busybox",
        )  # fmt: skip
    assert tree["bin/busybox"]["kind"] == "file"
    assert tree["tmp"]["mode"] == 0o1777
    assert resolve(tree, "sbin/init") is None
    tops = {path.split("/")[0] for path in tree}
    assert tops == {"app", "bin", "etc", "home", "root", "tmp", "www"}  # no boot, dev, sbin


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_busybox_app_httpd_serves_the_page(app: FixtureSet, tmp_path: Path) -> None:
    """The image's Cmd works with its own busybox: httpd -f serves /www/index.html."""
    with tarfile.open(app.rootfs_tar) as archive:
        archive.extractall(
            tmp_path,
            members=[m for m in archive if m.name.startswith(("bin/busybox", "www"))],
            filter="data",
        )
    port = _free_port()
    cmd = [str(tmp_path / "bin/busybox"), *app.config["Cmd"]]
    cmd[cmd.index("8080")] = f"127.0.0.1:{port}"
    cmd[cmd.index("/www")] = str(tmp_path / "www")
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    assert reply.read().decode() == BUSYBOX_APP_INDEX_HTML
                    break
            except OSError:
                assert time.monotonic() < deadline, "busybox httpd did not answer"
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_busybox_app_rebuilds_to_the_same_digests(app: FixtureSet, tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    for deb in (app.root.parent / "downloads").glob("busybox-static_*.deb"):
        (tmp_path / "downloads" / deb.name).write_bytes(deb.read_bytes())  # no network
    rebuilt = busybox_app_fixture(tmp_path)
    facts = ("config_digest", "diff_ids", "layer_digests", "manifest_digest", "entries",
             "docker_oci_manifest_digest")  # fmt: skip
    assert [getattr(rebuilt, f) for f in facts] == [getattr(app, f) for f in facts]
