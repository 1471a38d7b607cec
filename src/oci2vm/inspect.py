"""`oci2vm inspect`: what an image is and what its flattened tree holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oci2vm.config import Config
from oci2vm.image.blobs import BlobStore, ProgressFn
from oci2vm.image.model import Image, Layer
from oci2vm.layers.flatten import flatten
from oci2vm.report import Reporter
from oci2vm.sources import Fetch, resolve
from oci2vm.tree.model import Kind, Tree, walk
from oci2vm.tree.osinfo import OsInfo, describe


def blob_store(config: Config) -> BlobStore:
    return BlobStore(config.cache_dir or BlobStore.default_root())


def fetch_options(config: Config, reporter: Reporter) -> Fetch:
    return Fetch(
        platform=config.platform,
        store=blob_store(config),
        creds=config.creds,
        auth_file=config.auth_file,
        tls_verify=config.tls_verify,
        quiet=config.quiet,
        on_blob=reporter.task if reporter.interactive else None,
    )


def layer_progress(reporter: Reporter, image: Image) -> Callable[[int, Layer], ProgressFn]:
    """A progress bar per layer, sized in compressed bytes read."""

    def start(index: int, layer: Layer) -> ProgressFn:
        return reporter.task(f"layer {index + 1}/{len(image.layers)}", layer.size)

    return start


def entry_counts(tree: Tree) -> dict[str, int]:
    counts = {kind.value: 0 for kind in Kind}
    seen: dict[int, int] = {}
    for path, inode in walk(tree.root):
        if path == "/":
            continue
        if inode.kind is not Kind.DIR:
            seen[id(inode)] = seen.get(id(inode), 0) + 1
            if seen[id(inode)] > 1:
                continue
        counts[inode.kind.value] += 1
    counts["hardlink_groups"] = sum(1 for n in seen.values() if n > 1)
    counts["total"] = tree.entries
    return counts


def image_report(image: Image, tree: Tree, info: OsInfo) -> dict[str, Any]:
    cfg = image.config
    return {
        "source": image.source,
        "name": image.name,
        "manifest_digest": image.manifest_digest,
        "manifest_media_type": image.manifest_media_type,
        "image_id": image.config_digest,
        "platform": str(cfg.platform),
        "created": cfg.created or None,
        "layers": [
            {
                "digest": layer.digest or tree.layer_digests[i],
                "size": layer.size,
                "media_type": layer.media_type or None,
                "diff_id": tree.diff_ids[i],
            }
            for i, layer in enumerate(image.layers)
        ],
        "config": {
            "Entrypoint": list(cfg.entrypoint) if cfg.entrypoint is not None else None,
            "Cmd": list(cfg.cmd) if cfg.cmd is not None else None,
            "Env": list(cfg.env),
            "WorkingDir": cfg.working_dir,
            "User": cfg.user,
            "Labels": cfg.labels,
            "ExposedPorts": list(cfg.exposed_ports),
        },
        "entries": entry_counts(tree),
        "os": {
            "pretty_name": info.pretty_name,
            "id": info.os_release.get("ID"),
            "version_id": info.os_release.get("VERSION_ID"),
        },
        "kernels": [
            {"version": k.version, "kernel": k.path, "initrd": k.initrd} for k in info.kernels
        ],
        "init": {"system": info.init, "path": info.init_path},
    }


def human(report: dict[str, Any]) -> str:
    lines = [
        f"Source:     {report['source']}",
        f"Manifest:   {report['manifest_digest'] or '(none: not from a registry manifest)'}",
        f"Image ID:   {report['image_id'] or '(none: a root filesystem tarball)'}",
        f"Platform:   {report['platform']}",
        f"OS:         {report['os']['pretty_name']}",
        f"Init:       {report['init']['system']}"
        + (f" ({report['init']['path']})" if report["init"]["path"] else ""),
    ]
    kernels = report["kernels"]
    lines.append(f"Kernels:    {len(kernels) or 'none'}")
    lines.extend(
        f"  {k['version']}: {k['kernel']}  initrd: {k['initrd'] or 'none'}" for k in kernels
    )
    e = report["entries"]
    lines.append(
        f"Entries:    {e['total']} ({e['file']} files, {e['dir']} dirs, {e['symlink']} symlinks, "
        f"{e['char'] + e['block']} devices, {e['fifo']} fifos, "
        f"{e['hardlink_groups']} hardlink groups)"
    )
    lines.append(f"Layers:     {len(report['layers'])}")
    for layer in report["layers"]:
        lines.append(f"  {layer['digest']}  {layer['size']:>12,} B  {layer['media_type'] or ''}")
        lines.append(f"    diff_id {layer['diff_id']}")
    c = report["config"]
    lines.append("Config:")
    for key in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User"):
        lines.append(f"  {key}: {c[key]}")
    return "\n".join(lines)


def inspect(config: Config, reporter: Reporter) -> dict[str, Any]:
    with reporter.progress():
        image = resolve(config.source, fetch_options(config, reporter))
        tree = flatten(image, progress=layer_progress(reporter, image), store=blob_store(config))
    report = image_report(image, tree, describe(tree))
    reporter.result(report, human(report))
    return report
