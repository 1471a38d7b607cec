"""A disk enlarged after the build grows its root at the next boot (QEMU, TCG): the
debian-systemd image (systemd, e2fsprogs), built with Debian's kernel and oci2vm's
initramfs, resized by +2 GiB with `qemu-img resize`, boots to `login:`, and `df -k /`
shows a root filesystem about 2 GiB larger than the one built. The initramfs grows the
GPT's root partition and, with the image's resize2fs, the mounted ext4
(src/oci2vm/initramfs/growroot.sh); the console tells which. The Debian image (its own
kernel, systemd 252) built with its own initrd is grown by systemd instead: systemd-repart
(the repart.d file the build writes) grows the partition, systemd-growfs the filesystem.

Kernel packages come from the shared fixture store (support.debarchives.fixture_store)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fixture_images import FixtureSet, debian_fixture, debian_systemd_fixture
from oci2vm import vm
from support.debarchives import configured_mirror, fixture_store
from support.disks import cli
from support.programs import requires
from support.runcli import skip_unless_buildable

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.fixture,
    requires("qemu-system-x86_64", "qemu-img"),
]

PASSWORD = "oci2vm-Test-pw"
BOOT_TIMEOUT = 420.0  # TCG on two shared cores
GROWTH = 2 << 30
MARKER = "oci2vm-df"
GROWFS_WAIT = (
    'while [ "$(systemctl show -P ActiveState systemd-growfs@-.service)" = activating ]; '
    "do sleep 1; done"
)
DF_LINE = f"df -k / | tail -n 1 | while read -r _ kib _; do echo {MARKER}=$kib=end; done"


def build(fx: FixtureSet, out: Path, *args: str) -> dict[str, Any]:
    result = cli("build", f"oci:{fx.oci_layout}:{fx.tag}", "-o", str(out), "--json",
                 "--cache-dir", str(fixture_store().root), "--mirror", configured_mirror(),
                 "--root-password", PASSWORD, *args)  # fmt: skip
    assert result.code == 0, result.err
    report: dict[str, Any] = json.loads(result.out)
    return report


# The root's partition: GPT's third (after BIOS boot and the ESP), MBR's second (after the ESP).
ROOT_PARTITION = {"gpt": "/dev/vda3", "mbr": "/dev/vda2"}


@pytest.mark.parametrize("table", sorted(ROOT_PARTITION))
def test_disk_resized_by_two_gib_boots_with_a_root_two_gib_larger(
    tmp_path: Path, table: str
) -> None:
    skip_unless_buildable("debian-systemd")
    disk = tmp_path / "disk.img"
    built = build(debian_systemd_fixture(), disk, "--table", table)["filesystem"]["size"]
    subprocess.run(["qemu-img", "resize", "-f", "raw", str(disk), "+2G"], check=True)
    root = ROOT_PARTITION[table]
    # The console's lines in the order they come; the tail kept is too short for all.
    result = vm.check_boot(
        disk,
        expect=rf"oci2vm-init: grew the root partition {root} from \d+ MiB to \d+ MiB",
        timeout=BOOT_TIMEOUT,
        accel="tcg",
        script=[
            (f"oci2vm-init: grew the root filesystem to fill {root}", None),
            ("login:", "root"),
            ("Password:", PASSWORD),
            (r"# ", DF_LINE),
            # to the terminator: the session ends at the first match, and a match on the
            # number alone could end it before the console had every digit
            (rf"{MARKER}=\d+=end", None),
        ],
    )
    assert_grown(result, built)


def assert_grown(result: vm.CheckResult, built: int) -> None:
    assert result.ok, f"{result.reason}\n--- console tail ---\n{result.tail}"
    found = re.search(rf"{MARKER}=(\d+)=end", result.tail)
    assert found is not None, result.tail
    total = int(found.group(1)) * 1024
    # df counts the blocks less the metadata (inode tables, bitmaps, journal), so the grown
    # filesystem shows a little less than the built size + 2 GiB, and far more than before.
    assert GROWTH - (256 << 20) <= total - built <= GROWTH, (total, built, result.tail)


def test_with_the_images_initrd_systemd_repart_and_growfs_grow_it(tmp_path: Path) -> None:
    skip_unless_buildable("debian")
    disk = tmp_path / "disk.img"
    built = build(debian_fixture(), disk, "--initrd", "image")["filesystem"]["size"]
    subprocess.run(["qemu-img", "resize", "-f", "raw", str(disk), "+2G"], check=True)
    result = vm.check_boot(
        disk,
        expect=r"Finished systemd-repart[^\n]*",
        timeout=BOOT_TIMEOUT,
        accel="tcg",
        script=[
            ("login:", "root"),
            ("Password:", PASSWORD),
            # should growfs still run when the prompt comes, wait for it to be done
            (r"# ", f"{GROWFS_WAIT}; {DF_LINE}"),
            (rf"{MARKER}=\d+=end", None),
        ],
    )
    assert_grown(result, built)
