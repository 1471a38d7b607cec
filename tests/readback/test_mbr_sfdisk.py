"""The MBR writer's table as sfdisk reads and verifies it."""

from __future__ import annotations

import json
from pathlib import Path

from oci2vm.disk.mbr import (
    disk_signature_from_seed,
)
from oci2vm.util.tools import run
from support.programs import requires
from support.tables import GIB, mbr_partitions, write_mbr_disk

pytestmark = requires("sfdisk")

MIB = 1024 * 1024


def test_sfdisk_reads_types_bounds_and_bootable_flag(tmp_path: Path) -> None:
    image = write_mbr_disk(tmp_path / "disk.img", 10 * GIB, mbr_partitions(10 * GIB), b"seed")
    table = json.loads(run(["sfdisk", "--json", image]).stdout)
    assert table == {
        "partitiontable": {
            "label": "dos",
            "id": f"0x{disk_signature_from_seed(b'seed'):08x}",
            "device": str(image),
            "unit": "sectors",
            "sectorsize": 512,
            "partitions": [
                {
                    "node": f"{image}1",
                    "start": 2048,
                    "size": 204800,
                    "type": "ef",
                    "bootable": True,
                },
                # the rest of 10 GiB, in whole MiB: 10240 MiB less the 101 MiB before it
                {"node": f"{image}2", "start": 206848, "size": 10139 * 2048, "type": "83"},
            ],
        }
    }
    verify = run(["sfdisk", "--verify", image]).stdout.decode()
    assert "No errors detected." in verify
