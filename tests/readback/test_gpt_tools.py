"""The GPT writer's tables as sgdisk and sfdisk read them: verified, with the types,
GUIDs, names, attributes and bounds written; beyond 2 TiB; and an ESP written into a
large sparse disk, read back through mtools."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from oci2vm.arch import Arch
from oci2vm.disk.gpt import (
    BIOS_BOOT,
    ESP,
    LINUX_DATA,
    PartitionSpec,
    layout,
    write_gpt,
)
from oci2vm.fs.fat import write_fat
from oci2vm.util.tools import run
from support.programs import requires
from support.tables import GIB, GPT_SPECS, ROOT_X86_64, gpt_disk, write_gpt_disk

pytestmark = requires("sgdisk", "sfdisk")

ROOT_ARM64 = Arch.ARM64.facts.root_partition_type

MIB = 1024 * 1024


def test_sgdisk_verifies_the_table(tmp_path: Path) -> None:
    image = gpt_disk(tmp_path / "disk.img")
    proc = run(["sgdisk", "-v", image])
    output = proc.stdout.decode()
    assert "No problems found." in output
    assert not re.search(r"(?i)problem:|warning|corrupt|invalid|mismatch", output), output


def test_sgdisk_shows_types_guids_names_attributes_and_bounds(tmp_path: Path) -> None:
    image = gpt_disk(tmp_path / "disk.img")
    disk = layout(GPT_SPECS, seed=b"seed", disk_size=GIB)
    expected = [
        (BIOS_BOOT, "BIOS boot partition", 2048, "1024.0 KiB", 4095, "2.0 MiB", "1024.0 KiB"),
        (ESP, "EFI system partition", 4096, "2.0 MiB", 135167, "66.0 MiB", "64.0 MiB"),
        (ROOT_X86_64, "Linux x86-64 root (/)", 135168, "66.0 MiB", 2097111, "1024.0 MiB",
         "958.0 MiB"),
    ]  # fmt: skip
    names = ["BIOS boot", "EFI System", "root-x86-64 ✓"]
    for number, (partition, want) in enumerate(zip(disk.partitions, expected, strict=True), 1):
        type_guid, type_name, first, first_at, last, last_at, size = want
        output = run(["sgdisk", "-i", str(number), image]).stdout.decode("utf-8")
        assert output.splitlines() == [
            f"Partition GUID code: {str(type_guid).upper()} ({type_name})",
            f"Partition unique GUID: {str(partition.guid).upper()}",
            f"First sector: {first} (at {first_at})",
            f"Last sector: {last} (at {last_at})",
            f"Partition size: {last - first + 1} sectors ({size})",
            f"Attribute flags: {4 if number == 2 else 0:016X}",
            f"Partition name: '{names[number - 1]}'",
        ]
    header = run(["sgdisk", "-p", image]).stdout.decode()
    assert f"Disk identifier (GUID): {str(disk.disk_guid).upper()}" in header
    assert "First usable sector is 34, last usable sector is 2097118" in header


def test_sfdisk_reads_the_same_table(tmp_path: Path) -> None:
    image = gpt_disk(tmp_path / "disk.img")
    disk = layout(GPT_SPECS, seed=b"seed", disk_size=GIB)
    table = json.loads(run(["sfdisk", "--json", image]).stdout)
    parts = disk.partitions
    assert table == {
        "partitiontable": {
            "label": "gpt",
            "id": str(disk.disk_guid).upper(),
            "device": str(image),
            "unit": "sectors",
            "firstlba": 34,
            "lastlba": 2097118,
            "sectorsize": 512,
            "partitions": [
                {
                    "node": f"{image}1",
                    "start": 2048,
                    "size": 2048,
                    "type": str(BIOS_BOOT).upper(),
                    "uuid": str(parts[0].guid).upper(),
                    "name": "BIOS boot",
                },
                {
                    "node": f"{image}2",
                    "start": 4096,
                    "size": 131072,
                    "type": str(ESP).upper(),
                    "uuid": str(parts[1].guid).upper(),
                    "name": "EFI System",
                    "attrs": "LegacyBIOSBootable",
                },
                {
                    "node": f"{image}3",
                    "start": 135168,
                    "size": 1961944,
                    "type": str(ROOT_X86_64).upper(),
                    "uuid": str(parts[2].guid).upper(),
                    "name": "root-x86-64 ✓",
                },
            ],
        }
    }


def test_protective_mbr_of_a_disk_beyond_2_tib_covers_what_it_can(tmp_path: Path) -> None:
    size = 3 * 1024 * GIB
    disk = layout([PartitionSpec(LINUX_DATA, "data", None)], seed=b"s", disk_size=size)
    image = write_gpt_disk(tmp_path / "huge.img", size, disk.partitions, disk.disk_guid)
    with image.open("rb") as data:
        sector0 = data.read(512)
    assert sector0[446:462] == bytes.fromhex("00 000200 ee ffffff 01000000 ffffffff")
    assert "No problems found." in run(["sgdisk", "-v", image]).stdout.decode()


def test_arm64_root_type_is_recognised(tmp_path: Path) -> None:
    disk = layout([PartitionSpec(ROOT_ARM64, "root-arm64", 8 * MIB)], seed=b"s")
    image = write_gpt_disk(tmp_path / "disk.img", disk.disk_size, disk.partitions, disk.disk_guid)
    first_line = run(["sgdisk", "-i", "1", image]).stdout.decode().splitlines()[0]
    assert first_line == (
        "Partition GUID code: B921B045-1DF0-41C3-AF44-4C6F280D3FAE (Linux ARM64 root (/))"
    )


@requires("mcopy")
def test_esp_on_a_large_disk_keeps_the_file_sparse(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    size = 16 * GIB
    disk = layout(GPT_SPECS, seed=b"seed", disk_size=size)
    esp = disk.partitions[1]
    files = {"EFI/BOOT/BOOTX64.EFI": bytes(range(256)) * 4096}
    with path.open("wb") as out:
        out.truncate(size)
        write_gpt(out, size, disk.partitions, disk_guid=disk.disk_guid)
        esp_size = (esp.last_lba - esp.first_lba + 1) * 512
        write_fat(out, esp.first_lba * 512, esp_size, files, volume_id=1)
    assert os.stat(path).st_size == size
    assert os.stat(path).st_blocks * 512 < 2 * MIB  # 1 MiB of file + GPT + FAT metadata
    assert "No problems found." in run(["sgdisk", "-v", path]).stdout.decode()
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    target = tmp_path / "BOOTX64.EFI"
    run(
        ["mcopy", "-n", "-i", f"{path}@@{esp.first_lba * 512}", "::EFI/BOOT/BOOTX64.EFI", target],
        env=env,
    )
    assert target.read_bytes() == files["EFI/BOOT/BOOTX64.EFI"]
