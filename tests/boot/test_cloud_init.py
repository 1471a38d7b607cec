"""cloud-init in a built disk (QEMU, TCG): the debian-cloudinit image (bookworm, systemd,
cloud-init) built with `--cloud-init USER_DATA` boots, and cloud-init finds the NoCloud
seed the build wrote (no cloud metadata service to wait for): it writes the user-data's
file, sets the hostname the meta-data names, and its runcmd prints a line on the serial
console with what it found (the cloud-id, the hostname, the file). The machine logs in
with the root password afterwards, so nothing cloud-init did broke the console."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oci2vm import vm
from support.bootmatrix import build_disk, skip_unless_fixture
from support.programs import requires

pytestmark = [pytest.mark.qemu, pytest.mark.fixture,
              requires("qemu-system-x86_64")]  # fmt: skip

ROOT_PASSWORD = "oci2vm-Cloud-pw"
HOSTNAME = "cloudy"
BOOT_TIMEOUT = 600.0  # cloud-init's four stages start python each, under TCG
FILE_TEXT = "written-by-cloud-init"
# The runcmd's line: `$((6*7))` is expanded by the guest's shell, so only its output (never
# the user-data itself, were it ever echoed) matches MARK.
FOUND = "$(cat /run/cloud-init/cloud-id) $(hostname) $(cat /etc/oci2vm-cloud-file)"
USER_DATA = f"""#cloud-config
write_files:
  - path: /etc/oci2vm-cloud-file
    content: "{FILE_TEXT}\\n"
runcmd:
  - [sh, -c, 'echo "CLOUD-$((6*7)) {FOUND}" > /dev/ttyS0']
"""
MARK = r"CLOUD-42 (\S+) (\S+) (\S+)"


def test_cloud_init_takes_the_seed_and_runs_the_user_data(tmp_path: Path) -> None:
    skip_unless_fixture("debian-cloudinit")
    user_data = tmp_path / "user-data"
    user_data.write_text(USER_DATA)
    disk = tmp_path / "disk.img"
    build_disk("debian-cloudinit", disk, "--cloud-init", str(user_data),
               "--hostname", HOSTNAME, "--root-password", ROOT_PASSWORD)  # fmt: skip
    result = vm.check_boot(
        disk, expect=MARK, timeout=BOOT_TIMEOUT, accel="tcg", cpus=1, network=True,
        fail=vm.KERNEL_PANIC,
        # Enter makes the getty ask again, whether its prompt came before the mark or not
        script=[("", ""), ("login:", "root"), ("Password:", ROOT_PASSWORD),
                (r"# ", 'echo "LOGGED-IN-$((6*7))"'), ("LOGGED-IN-42", None)],
    )  # fmt: skip
    assert result.ok, f"{result.reason}\n--- console tail ---\n{result.tail}"
    found = re.findall(MARK, result.tail)
    assert found, result.tail
    assert found[-1] == ("nocloud", HOSTNAME, FILE_TEXT), result.tail
