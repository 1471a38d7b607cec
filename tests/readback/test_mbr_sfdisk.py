"""The MBR writer's table as sfdisk reads and verifies it."""

from __future__ import annotations

import json
from pathlib import Path

from oci2vm.disk.mbr import (
    TYPE_ESP,
    TYPE_LINUX,
    MbrPartition,
    disk_signature_from_seed,
    write_mbr,
)
from oci2vm.disk.placement import place_partitions
from oci2vm.util.tools import run
from support.programs import requires

pytestmark = requires("sfdisk")


MIB = 1024 * 1024


GIB = 1024 * MIB


def _partitions(disk_size: int) -> list[MbrPartition]:
    _, extents = place_partitions([100 * MIB, None], disk_size=disk_size)
    (esp_first, esp_last), (root_first, root_last) = extents
    return [
        MbrPartition(TYPE_ESP, esp_first, esp_last - esp_first + 1, bootable=True),
        MbrPartition(TYPE_LINUX, root_first, root_last - root_first + 1),
    ]


def _write(path: Path, disk_size: int, partitions: list[MbrPartition], seed: bytes) -> Path:
    with path.open("wb") as out:
        out.truncate(disk_size)
        write_mbr(out, partitions, disk_signature=disk_signature_from_seed(seed))
    return path


def _sector0(path: Path) -> bytes:
    with path.open("rb") as image:
        return image.read(512)


def test_sfdisk_reads_types_bounds_and_bootable_flag(tmp_path: Path) -> None:
    image = _write(tmp_path / "disk.img", 10 * GIB, _partitions(10 * GIB), b"seed")
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
