"""inspect's report of the init, the network stack and what a system build would write
for network, console and first boot (the steps run over inspect's own tree)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oci2vm.cli import main
from support.initlayouts import debian_runit, debian_sysvinit
from support.layouts import Member, directory, file, write_layout

NETWORKING = b"#!/bin/sh\n### BEGIN INIT INFO\n# Provides: networking\n# Default-Start: S\n"
IFUPDOWN = [
    file("sbin/ifup", b"\x7fELF", mode=0o755),
    file("sbin/ifquery", b"\x7fELF", mode=0o755),
    file("sbin/dhclient", b"\x7fELF", mode=0o755),
    directory("etc/network"),
    file("etc/network/interfaces", b"source /etc/network/interfaces.d/*\n"),
    file("etc/init.d/networking", NETWORKING, mode=0o755),
]


def inspected(tmp_path: Path, capsys: pytest.CaptureFixture[str], members: list[Member],
              *options: str) -> tuple[dict[str, object], str]:  # fmt: skip
    write_layout(tmp_path / "img", [members])
    source = f"oci:{tmp_path / 'img'}:latest"
    assert main(["inspect", source, "--json", *options]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["inspect", source, *options]) == 0
    return report, capsys.readouterr().out


def test_runit_with_ifupdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, text = inspected(tmp_path, capsys, [*debian_runit(), *IFUPDOWN])
    assert report["init"] == {"system": "runit", "path": "/lib/runit/runit-init"}
    assert report["network"] == {"stack": "ifupdown"}
    build = report["build"]
    assert isinstance(build, dict)
    assert build["network"] == (
        "ifupdown: writes /etc/network/interfaces.d/oci2vm, /etc/rcS.d/S40networking"
    )
    assert build["console"] == (
        "writes /etc/runit/runsvdir/default/oci2vm-getty-ttyS0, /etc/sv/oci2vm-getty-ttyS0/run"
    )
    assert build["identity"] == (
        "writes /etc/init.d/oci2vm-firstboot, /etc/oci2vm/firstboot, "
        "/etc/oci2vm/firstboot.d/10-machine-id.sh, /etc/rcS.d/S99oci2vm-firstboot"
    )
    assert build["distribution"] == "unknown"  # no /etc/os-release
    assert "Init:       runit (/lib/runit/runit-init)\n" in text
    assert "Network:    ifupdown\n" in text
    assert "\n  network: ifupdown: writes /etc/network/interfaces.d/oci2vm," in text


def test_debian_openrc_is_named_and_gets_its_runlevel_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    debian = file("etc/os-release", b"ID=debian\n")
    report, text = inspected(tmp_path, capsys, [*debian_sysvinit(openrc=True), *IFUPDOWN, debian])
    assert report["init"] == {"system": "sysvinit+openrc", "path": "/sbin/init"}
    build = report["build"]
    assert isinstance(build, dict)
    assert build["network"] == (
        "ifupdown: writes /etc/network/interfaces.d/oci2vm, /etc/runlevels/default/networking"
    )
    assert build["console"] == "writes /etc/inittab"
    assert build["distribution"] == "Debian"
    assert "Init:       sysvinit+openrc (/sbin/init)\n" in text


def test_the_plan_leaves_the_reported_entry_counts_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = [*debian_sysvinit(), *IFUPDOWN]
    report, _ = inspected(tmp_path, capsys, members)
    entries = report["entries"]
    assert isinstance(entries, dict)
    assert entries["total"] == len(members)


def test_no_stack_and_no_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, _ = inspected(tmp_path / "a", capsys, debian_sysvinit())
    build = report["build"]
    assert isinstance(build, dict)
    assert build["network"].startswith("none: writes nothing; no network configuration written")
    app, text = inspected(tmp_path / "b", capsys, [directory("etc"), file("etc/hosts")])
    assert app["network"] == {"stack": None}
    assert "network" not in app["build"]  # type: ignore[operator]
    assert "Network:    not configured (no system build)\n" in text


def test_network_none_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    members = [*debian_sysvinit(), *IFUPDOWN]
    report, _ = inspected(tmp_path, capsys, members, "--network", "none")
    build = report["build"]
    assert isinstance(build, dict)
    assert build["network"] == "ifupdown: left as the image has it (--network none)"
