"""The project's fixture images through every source form: the same image ID and
diff_ids whichever way the image arrives, and a flattened tree equal to independent ones
(the fixture's own expected tree, and `umoci raw unpack` of the Debian image)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fixture_images import (
    BUSYBOX_CASES,
    FixtureSet,
    busybox_fixture,
    debian_fixture,
)
from oci2vm.cli import main
from oci2vm.sources import Fetch, resolve
from support.programs import requires
from support.treecompare import (
    Record,
    differences,
    directory_records,
    expected_records,
    flatten_records,
)

pytestmark = pytest.mark.fixture


def forms(fx: FixtureSet) -> dict[str, tuple[str, str | None]]:
    """source string -> manifest digest expected from it."""
    result: dict[str, tuple[str, str | None]] = {
        "oci": (f"oci:{fx.oci_layout}:{fx.tag}", fx.manifest_digest),
        "docker-archive": (f"docker-archive:{fx.docker_archive}", None),
        "docker-archive-ref": (f"docker-archive:{fx.docker_archive}:{fx.repo_tag}", None),
        "docker-oci-archive": (
            f"docker-archive:{fx.docker_oci_archive}",
            fx.docker_oci_manifest_digest,
        ),
    }
    if fx.oci_archive is not None:
        result["oci-archive"] = (f"oci-archive:{fx.oci_archive}:{fx.tag}", fx.manifest_digest)
    return result


@pytest.fixture(scope="module")
def busybox() -> FixtureSet:
    return busybox_fixture()


@pytest.fixture(scope="module")
def debian() -> FixtureSet:
    if os.geteuid() != 0:
        pytest.skip("building the Debian fixture needs root (debootstrap)")
    return debian_fixture()


@pytest.mark.parametrize("form", ["oci", "oci-archive", "docker-archive", "docker-archive-ref",
                                  "docker-oci-archive"])  # fmt: skip
def test_busybox_every_form_reports_same_identity(
    busybox: FixtureSet, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    source, manifest_digest = forms(busybox)[form]
    assert main(["inspect", "--json", source]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["image_id"] == busybox.config_digest
    assert [layer["diff_id"] for layer in report["layers"]] == list(busybox.diff_ids)
    assert report["manifest_digest"] == manifest_digest
    assert report["config"]["Entrypoint"] == list(busybox.entrypoint or [])
    assert report["config"]["Cmd"] == list(busybox.cmd or [])
    assert report["config"]["Env"] == list(busybox.env)
    assert report["config"]["WorkingDir"] == busybox.working_dir
    assert report["config"]["User"] == busybox.user
    assert report["init"]["system"] == "none"  # an app image: no /sbin/init
    if form == "oci":
        assert [layer["media_type"] for layer in report["layers"]] == list(
            busybox.layer_media_types
        )
        assert [layer["digest"] for layer in report["layers"]] == list(busybox.layer_digests)


def _without_root(records: dict[str, Record]) -> dict[str, Record]:
    return {p: r for p, r in records.items() if p != "/"}


def test_busybox_flattens_to_the_expected_tree(busybox: FixtureSet) -> None:
    _tree, ours = flatten_records(resolve(f"oci:{busybox.oci_layout}:{busybox.tag}", Fetch()))
    expected = expected_records(busybox)
    diff = differences(_without_root(ours), expected)
    assert not diff, "\n".join(diff)
    for case in BUSYBOX_CASES:
        assert (("/" + case.path) in ours) == case.present, case


@pytest.mark.parametrize("form", ["docker-archive", "docker-oci-archive", "rootfs"])
def test_busybox_other_forms_flatten_identically(busybox: FixtureSet, form: str) -> None:
    source = f"tar:{busybox.rootfs_tar}" if form == "rootfs" else forms(busybox)[form][0]
    _t, reference = flatten_records(resolve(f"oci:{busybox.oci_layout}:{busybox.tag}", Fetch()))
    _t, ours = flatten_records(resolve(source, Fetch()))
    diff = differences(_without_root(ours), _without_root(reference))
    assert not diff, "\n".join(diff)


@pytest.mark.root
@requires("umoci")
def test_debian_flattening_equals_umoci_raw_unpack(debian: FixtureSet, tmp_path: Path) -> None:
    rootfs = tmp_path / "umoci"
    subprocess.run(
        ["umoci", "raw", "unpack", "--image", f"{debian.oci_layout}:{debian.tag}", str(rootfs)],
        check=True,
        capture_output=True,
    )
    try:
        theirs = directory_records(rootfs)
        _tree, ours = flatten_records(resolve(f"oci:{debian.oci_layout}:{debian.tag}", Fetch()))
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    assert len(ours) == debian.entries + 1  # + the root directory
    diff = differences(ours, theirs)
    assert not diff, "\n".join(diff)
    acl = theirs.get("/var/log/journal", {}).get("xattrs", {})
    assert "system.posix_acl_default" in acl or "system.posix_acl_access" in acl
    assert sum(1 for r in ours.values() if "links" in r) >= 4


def test_debian_every_form_reports_same_identity(debian: FixtureSet) -> None:
    seen: set[tuple[Any, ...]] = set()
    for source, manifest_digest in forms(debian).values():
        image = resolve(source, Fetch())
        assert image.manifest_digest == manifest_digest
        seen.add((image.config_digest, tuple(layer.diff_id for layer in image.layers)))
    assert seen == {(debian.config_digest, debian.diff_ids)}
