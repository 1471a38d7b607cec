"""`oci2vm inspect`: what an image is and what its flattened tree holds."""

from __future__ import annotations

import dataclasses

from oci2vm.arch import Arch
from oci2vm.commands.systemplan import system_plan
from oci2vm.config import Config, InitMode
from oci2vm.errors import Oci2vmError
from oci2vm.image.model import Image
from oci2vm.layers.flatten import flatten
from oci2vm.pipeline import layer_progress, resolve_source
from oci2vm.prepare import kernel
from oci2vm.prepare.hostname import hostname_from
from oci2vm.prepare.step import Target
from oci2vm.report import Reporter
from oci2vm.reports import InspectReport, KernelReport, LayerReport
from oci2vm.tree.model import Inode, Kind, Tree, walk
from oci2vm.tree.osinfo import OsInfo, describe


def inspect_command(config: Config, reporter: Reporter) -> int:
    reporter.result(inspect(config, reporter))
    return 0


def inspect(config: Config, reporter: Reporter) -> InspectReport:
    with reporter.progress():
        image, store = resolve_source(config, reporter)
        tree = flatten(image, progress=layer_progress(reporter, image), store=store)
    info = describe(tree)
    report = image_report(image, tree, info, build_plan(config, image, info))
    target = plan_target(config, image, info)
    if target is None or report.build.get("mode") != InitMode.SYSTEM.value:
        return report
    # After the report: the plan runs the steps over the tree.
    stack, plan = system_plan(tree, dataclasses.replace(target, mode=InitMode.SYSTEM))
    return dataclasses.replace(report, build={**report.build, **plan}, network=stack)


def plan_target(config: Config, image: Image, info: OsInfo) -> Target | None:
    try:
        arch = Arch.from_name(image.config.platform.architecture)
    except Oci2vmError:
        return None
    return Target(os=info, arch=arch, source=image.source, identity="", root_uuid="",
                  hostname=config.hostname or hostname_from(image.name), config=config,
                  image_config=image.config)  # fmt: skip


def build_plan(config: Config, image: Image, info: OsInfo) -> dict[str, str]:
    """What `build` would make of the image with the same options."""
    try:
        Arch.from_name(image.config.platform.architecture)
    except Oci2vmError as e:
        return {"error": str(e)}
    target = plan_target(config, image, info)
    assert target is not None
    return kernel.build_plan(target)


def entry_counts(tree: Tree) -> dict[str, int]:
    counts = {kind.value: 0 for kind in Kind}
    seen: dict[Inode, int] = {}
    for path, inode in walk(tree.root):
        if path == "/":
            continue
        if inode.kind is not Kind.DIR:
            seen[inode] = seen.get(inode, 0) + 1
            if seen[inode] > 1:
                continue
        counts[inode.kind.value] += 1
    counts["hardlink_groups"] = sum(1 for n in seen.values() if n > 1)
    counts["hardlinks"] = sum(n - 1 for n in seen.values() if n > 1)  # names past the first
    counts["total"] = tree.entries
    return counts


def image_report(
    image: Image, tree: Tree, info: OsInfo, plan: dict[str, str] | None = None
) -> InspectReport:
    cfg = image.config
    return InspectReport(
        source=image.source,
        name=image.name,
        manifest_digest=image.manifest_digest,
        manifest_media_type=image.manifest_media_type,
        image_id=image.config_digest,
        platform=str(cfg.platform),
        created=cfg.created or None,
        layers=tuple(
            LayerReport(
                digest=layer.digest or tree.layer_digests[i],
                size=layer.size,
                media_type=layer.media_type or None,
                diff_id=tree.diff_ids[i],
            )
            for i, layer in enumerate(image.layers)
        ),
        config={
            "Entrypoint": list(cfg.entrypoint) if cfg.entrypoint is not None else None,
            "Cmd": list(cfg.cmd) if cfg.cmd is not None else None,
            "Env": list(cfg.env),
            "WorkingDir": cfg.working_dir,
            "User": cfg.user,
            "Labels": cfg.labels,
            "ExposedPorts": list(cfg.exposed_ports),
        },
        entries=entry_counts(tree),
        os={
            "pretty_name": info.pretty_name,
            "id": info.os_release.get("ID"),
            "version_id": info.os_release.get("VERSION_ID"),
        },
        kernels=tuple(KernelReport(k.version, k.path, k.initrd) for k in info.kernels),
        init=info.init_name,
        init_path=info.init_path,
        build=plan or {},
    )
