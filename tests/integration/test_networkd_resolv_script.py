"""The script that writes systemd-networkd's DNS servers to /etc/resolv.conf in images
without systemd-resolved, run by the shells a guest has (dash, busybox ash) over a
temporary root holding state files in networkd's format."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from oci2vm.prepare import netfiles
from support.guestscripts import SHELLS, run_script
from support.programs import requires

LINK_STATE = (
    "# This is private data. Do not parse.\n"
    "ADMIN_STATE=configured\n"
    "OPER_STATE=routable\n"
    "DNS=10.0.2.3 192.0.2.1:5353 [2001:db8::1]:53 fe80::1%2 10.0.2.3#dns.example\n"
    "NTP=\n"
)
LEASE = "ADDRESS=10.0.2.15\nROUTER=10.0.2.2\nDNS=198.51.100.7 10.0.2.3\n"


def run(shell: str, root: Path) -> subprocess.CompletedProcess[str]:
    return run_script(shell, netfiles.NETWORKD_RESOLV_SCRIPT.decode(), root, ("/run/", "/etc/"))


@requires("sh", "busybox")
@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_servers_from_link_and_lease_files_in_order_without_suffixes(
    tmp_path: Path, shell: str
) -> None:
    (tmp_path / "run/systemd/netif/links").mkdir(parents=True)
    (tmp_path / "run/systemd/netif/leases").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_text("nameserver 203.0.113.9\n")
    (tmp_path / "run/systemd/netif/links/2").write_text(LINK_STATE)
    (tmp_path / "run/systemd/netif/leases/2").write_text(LEASE)
    done = run(shell, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "etc/resolv.conf").read_text().splitlines()
    assert lines[0].startswith("# Written by oci2vm")
    assert lines[1:] == [
        "nameserver 10.0.2.3",
        "nameserver 192.0.2.1",
        "nameserver 2001:db8::1",
        "nameserver fe80::1",
        "nameserver 198.51.100.7",
    ]
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["resolv.conf"]


@requires("sh", "busybox")
@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_no_servers_yet_leaves_resolv_conf_alone(tmp_path: Path, shell: str) -> None:
    (tmp_path / "run/systemd/netif/links").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_text("nameserver 203.0.113.9\n")
    (tmp_path / "run/systemd/netif/links/1").write_text("ADMIN_STATE=unmanaged\nDNS=\n")
    assert run(shell, tmp_path).returncode == 0
    assert (tmp_path / "etc/resolv.conf").read_text() == "nameserver 203.0.113.9\n"
