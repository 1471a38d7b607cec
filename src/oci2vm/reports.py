"""What each command reports: one typed record per command, with one JSON form (`to_json`,
printed by --json; README lists the keys) and one human form (`human`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from oci2vm.util.text import shown


@dataclass(frozen=True, slots=True)
class FilesystemReport:
    """The root filesystem as written."""

    type: str
    uuid: str
    size: int  # bytes
    blocks: int
    free_blocks: int
    inodes: int
    free_inodes: int
    block_size: int = 4096

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "uuid": self.uuid,
            "size": self.size,
            "blocks": self.blocks,
            "free_blocks": self.free_blocks,
            "inodes": self.inodes,
            "free_inodes": self.free_inodes,
        }


@dataclass(frozen=True, slots=True)
class DiskReport:
    """A bootable disk's shape: null in the JSON of a bare filesystem."""

    size: int
    table: str
    boot: str
    root_offset: int
    arch: str

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "table": self.table,
            "boot": self.boot,
            "root_offset": self.root_offset,
            "arch": self.arch,
        }


@dataclass(frozen=True, slots=True)
class SystemReport:
    """What preparation made of the image as a system: null for a bare filesystem."""

    hostname: str
    kernels: tuple[str, ...]
    init: str
    mode: str = "system"  # system: the image's init is PID 1; app: oci2vm's runs the workload

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "kernels": list(self.kernels),
            "init": self.init,
            "mode": self.mode,
        }


@dataclass(frozen=True, slots=True)
class BuildReport:
    output: str
    format: str
    image_id: str | None
    manifest_digest: str | None
    source_digest: str
    filesystem: FilesystemReport
    entries: int
    seconds: float
    disk: DiskReport | None = None
    system: SystemReport | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "format": self.format,
            "image_id": self.image_id,
            "manifest_digest": self.manifest_digest,
            "source_digest": self.source_digest,
            "filesystem": self.filesystem.to_json(),
            "disk": self.disk.to_json() if self.disk else None,
            "system": self.system.to_json() if self.system else None,
            "entries": self.entries,
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }

    def human(self) -> str:
        fs = self.filesystem
        lines = [
            f"Wrote {self.output} ({self.format})",
            f"  ext4 UUID={fs.uuid}  {fs.size / (1 << 20):.0f} MiB, "
            f"{fs.free_blocks * fs.block_size / (1 << 20):.0f} MiB free",
        ]
        lines.extend(f"  {line}" for line in self.notes)
        lines.append(f"  in {self.seconds:.1f} s")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class LayerReport:
    digest: str
    size: int
    media_type: str | None
    diff_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "media_type": self.media_type,
            "diff_id": self.diff_id,
        }


@dataclass(frozen=True, slots=True)
class KernelReport:
    version: str
    kernel: str
    initrd: str | None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "kernel": self.kernel, "initrd": self.initrd}


@dataclass(frozen=True, slots=True)
class InspectReport:
    source: str
    name: str
    manifest_digest: str | None
    manifest_media_type: str | None
    image_id: str | None
    platform: str
    created: str | None
    layers: tuple[LayerReport, ...]
    config: dict[str, Any]  # the image config's runtime fields, under their OCI names
    entries: dict[str, int]  # per kind (inodes), hardlink_groups, hardlinks, total (names)
    os: dict[str, str | None]  # pretty_name, id, version_id
    kernels: tuple[KernelReport, ...]
    init: str
    init_path: str | None = None
    build: dict[str, str] = field(default_factory=dict)  # what a build would do, in words
    network: str | None = None  # the stack a system build would configure (prepare/network)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "name": self.name,
            "manifest_digest": self.manifest_digest,
            "manifest_media_type": self.manifest_media_type,
            "image_id": self.image_id,
            "platform": self.platform,
            "created": self.created,
            "layers": [layer.to_json() for layer in self.layers],
            "config": self.config,
            "entries": self.entries,
            "os": self.os,
            "kernels": [k.to_json() for k in self.kernels],
            "init": {"system": self.init, "path": self.init_path},
            "network": {"stack": self.network},
            "build": self.build,
        }

    def human(self) -> str:
        lines = [
            f"Source:     {self.source}",
            f"Manifest:   {self.manifest_digest or '(none: not from a registry manifest)'}",
            f"Image ID:   {self.image_id or '(none: a root filesystem tarball)'}",
            f"Platform:   {self.platform}",
            f"OS:         {self.os['pretty_name']}",
            f"Init:       {self.init}" + (f" ({self.init_path})" if self.init_path else ""),
            f"Network:    {self.network or 'not configured (no system build)'}",
            f"Kernels:    {len(self.kernels) or 'none'}",
        ]
        lines.extend(
            f"  {k.version}: {k.kernel}  initrd: {k.initrd or 'none'}" for k in self.kernels
        )
        e = self.entries
        lines.append(
            f"Entries:    {e['total']} ({e['file']} files, {e['dir']} dirs, "
            f"{e['symlink']} symlinks, {e['char'] + e['block']} devices, {e['fifo']} fifos, "
            f"{e.get('hardlinks', 0)} more names of files in {e['hardlink_groups']} hardlink "
            "groups)"
        )
        lines.append(f"Layers:     {len(self.layers)}")
        for layer in self.layers:
            lines.append(f"  {layer.digest}  {layer.size:>12,} B  {layer.media_type or ''}")
            lines.append(f"    diff_id {layer.diff_id}")
        lines.append("Config:")
        for key in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User"):
            lines.append(f"  {key}: {_config_value(self.config[key])}")
        if self.build:
            lines.append("A build would:")
            lines.extend(f"  {key}: {value}" for key, value in self.build.items())
        return "\n".join(lines)


def _config_value(value: object) -> str:
    """A config field as `docker image inspect` shows it (lists as JSON), "(none)" when
    unset; the image's text escaped where a terminal would act on it."""
    if value is None or value == "":
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return shown(text, 100_000)


@dataclass(frozen=True, slots=True)
class CheckReport:
    ok: bool
    seconds: float
    expect: str
    reason: str
    console_tail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "expect": self.expect,
            "reason": self.reason,
            "console_tail": self.console_tail,
        }

    def human(self) -> str:
        if self.ok:
            return f"ok: /{self.expect}/ after {self.seconds:.1f} s"
        return (
            f"failed: {self.reason or 'no match'} after {self.seconds:.1f} s\n"
            f"--- console tail ---\n{self.console_tail}"
        )
