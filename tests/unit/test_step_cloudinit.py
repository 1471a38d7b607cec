"""The cloud-init step: a NoCloud seed (--cloud-init's user-data, else empty) and
datasource_list pinned to it, for images that have cloud-init."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oci2vm.cli import config_from, parser
from oci2vm.config import Config, InitMode
from oci2vm.errors import Oci2vmError
from oci2vm.prepare import cloudinit
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Tree, lookup
from support.initlayouts import debian_sysvinit
from support.layouts import Member, directory, file
from support.prepared import FS_TIME, content, entry, flattened, options, target

USER_DATA = b"#cloud-config\npackages: [htop]\n"
CLOUD_INIT = [directory("usr/bin"), file("usr/bin/cloud-init", b"#!/usr/bin/python3\n", mode=0o755)]


def prepared(
    tmp_path: Path, members: list[Member], user_data: bytes | None
) -> tuple[Tree, list[str]]:
    tree = flattened(tmp_path, members)
    path = None
    if user_data is not None:
        path = tmp_path / "user-data"
        path.write_bytes(user_data)
    goal = dataclasses.replace(target(tree, options()), config=Config(cloud_init=path))
    return tree, cloudinit.STEP.apply(TreeEditor(tree, FS_TIME), goal)


def test_user_data_becomes_a_nocloud_seed_and_the_only_datasource(tmp_path: Path) -> None:
    tree, notes = prepared(tmp_path, [*debian_sysvinit(), *CLOUD_INIT], USER_DATA)
    assert notes == []
    seed = "/var/lib/cloud/seed/nocloud"
    assert content(tree, f"{seed}/user-data") == USER_DATA
    meta = content(tree, f"{seed}/meta-data").decode()
    assert meta == (
        f"instance-id: {cloudinit.instance_id(target(tree, options()), USER_DATA)}\n"
        "local-hostname: vm1\n"
    )
    assert meta.startswith("instance-id: oci2vm-")
    for name in ("user-data", "meta-data"):
        made = entry(tree, f"{seed}/{name}")
        assert (made.mode & 0o7777, made.uid, made.gid) == (0o600, 0, 0)
    assert content(tree, "/etc/cloud/cloud.cfg.d/99_oci2vm.cfg") == (
        b"# Written by oci2vm: this machine's datasource is the seed in "
        b"/var/lib/cloud/seed/nocloud.\ndatasource_list: [ NoCloud, None ]\n"
    )


def test_without_the_option_the_seed_is_empty_and_a_note_says_so(tmp_path: Path) -> None:
    tree, notes = prepared(tmp_path, [*debian_sysvinit(), *CLOUD_INIT], None)
    assert notes == [cloudinit.EMPTY_SEED_NOTE]
    assert "--cloud-init USER_DATA_FILE" in notes[0]
    assert entry(tree, "/var/lib/cloud/seed/nocloud/user-data").size == 0
    assert lookup(tree.root, "/etc/cloud/cloud.cfg.d/99_oci2vm.cfg") is not None


def test_the_images_own_seed_is_kept_when_no_user_data_is_given(tmp_path: Path) -> None:
    own = [directory("var/lib/cloud/seed/nocloud"),
           file("var/lib/cloud/seed/nocloud/meta-data", b"instance-id: mine\n")]  # fmt: skip
    tree, notes = prepared(tmp_path, [*debian_sysvinit(), *CLOUD_INIT, *own], None)
    assert notes == []
    assert lookup(tree.root, "/var/lib/cloud/seed/nocloud/user-data") is None
    assert lookup(tree.root, "/etc/cloud") is None


def test_an_image_without_cloud_init_is_left_alone_or_refuses_user_data(tmp_path: Path) -> None:
    tree, notes = prepared(tmp_path / "a", debian_sysvinit(), None)
    assert notes == [] and lookup(tree.root, "/var/lib/cloud") is None
    with pytest.raises(Oci2vmError) as error:
        prepared(tmp_path / "b", debian_sysvinit(), USER_DATA)
    assert str(error.value) == (
        f"--cloud-init {tmp_path / 'b' / 'user-data'}: test has no cloud-init "
        "(/usr/bin/cloud-init) to read it"
    )


def test_the_instance_id_follows_image_hostname_and_user_data(tmp_path: Path) -> None:
    goal = target(flattened(tmp_path, debian_sysvinit()), options())
    same = cloudinit.instance_id(goal, USER_DATA)
    assert same == cloudinit.instance_id(goal, USER_DATA)
    others = {
        cloudinit.instance_id(goal, b""),
        cloudinit.instance_id(dataclasses.replace(goal, hostname="vm2"), USER_DATA),
        cloudinit.instance_id(dataclasses.replace(goal, identity="sha256:" + "cd" * 32), USER_DATA),
    }
    assert same not in others and len(others) == 3


def test_the_option_reaches_the_config_for_build_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_data = tmp_path / "ud.yaml"
    user_data.write_text("#cloud-config\n")
    for command in (["build", "img", "-o", "x.img"], ["run", "img"]):
        assert config_from(parser().parse_args(command)).cloud_init is None
        config = config_from(parser().parse_args([*command, "--cloud-init", str(user_data)]))
        assert config.cloud_init == user_data
        with pytest.raises(SystemExit):  # missing: told as the line is read
            parser().parse_args([*command, "--cloud-init", str(tmp_path / "no.yaml")])
        assert "no.yaml: no such file" in capsys.readouterr().err


def test_app_mode_says_the_user_data_is_not_used(tmp_path: Path) -> None:
    tree = flattened(tmp_path, [directory("etc"), *CLOUD_INIT])
    path = tmp_path / "ud"
    goal = dataclasses.replace(
        target(tree, options()), config=Config(cloud_init=path), mode=InitMode.APP
    )
    assert cloudinit.STEP.applies(goal)
    assert cloudinit.STEP.apply(TreeEditor(tree, FS_TIME), goal) == [
        f"--cloud-init {path}: not used: in app mode oci2vm's init runs, not cloud-init"
    ]
    assert lookup(tree.root, "/var/lib/cloud") is None
    assert not cloudinit.STEP.applies(dataclasses.replace(goal, config=Config()))
