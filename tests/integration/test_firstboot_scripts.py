"""The first-boot runner and the machine-ID fragment, run by the shells that run them in
a guest (dash, as Debian's /bin/sh; busybox ash, as Alpine's) over a temporary root:
their absolute paths are moved under it, the logic is the shipped one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oci2vm.prepare import firstboot, identity
from support.guestscripts import SHELLS, run_script
from support.programs import requires


@requires("sh", "busybox")
@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_runner_removes_what_succeeded_and_keeps_what_failed(
    tmp_path: Path, shell: str
) -> None:
    parts = tmp_path / "etc/oci2vm/firstboot.d"
    parts.mkdir(parents=True)
    log = tmp_path / "log"
    (parts / "10-a.sh").write_text(f"echo a >> {log}\n")
    (parts / "20-b.sh").write_text(f"echo b >> {log}\nexit 3\n")
    (parts / "30-c.sh").write_text(f"echo c >> {log}\n")
    done = run_script(shell, firstboot.RUNNER_SCRIPT.decode(), tmp_path)
    assert done.returncode == 0
    assert log.read_text() == "a\nb\nc\n"
    assert sorted(p.name for p in parts.iterdir()) == ["20-b.sh"]
    assert re.search(
        r"oci2vm firstboot: .*/20-b.sh failed; it runs again at the next boot", done.stderr
    )


@requires("sh", "busybox")
@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_the_machine_id_fragment_writes_a_fresh_id_once(tmp_path: Path, shell: str) -> None:
    machine_id = tmp_path / "etc/machine-id"
    machine_id.parent.mkdir()
    ids = []
    for _ in range(2):
        machine_id.write_bytes(b"")
        assert run_script(shell, identity.MAKE_MACHINE_ID, tmp_path).returncode == 0
        ids.append(machine_id.read_text())
        assert re.fullmatch(r"[0-9a-f]{32}\n", ids[-1]), ids[-1]
        assert machine_id.stat().st_mode & 0o777 == 0o444
        machine_id.chmod(0o644)
    assert ids[0] != ids[1]
    assert run_script(shell, identity.MAKE_MACHINE_ID, tmp_path).returncode == 0
    assert machine_id.read_text() == ids[1]  # one there already is kept
