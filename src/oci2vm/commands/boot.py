"""`oci2vm run` and `oci2vm check`: boot a disk in QEMU, or build one from a source into
a temporary file first."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from oci2vm import pipeline, runcache, runs, runtime, vm
from oci2vm.config import Config, InitMode, OutputFormat, PortMapping
from oci2vm.errors import Oci2vmError
from oci2vm.image.model import Image
from oci2vm.initramfs.build import spec_archive
from oci2vm.initramfs.spec import MAX_VOLUME_FILE, BootSpec, workload
from oci2vm.prepare.hostname import hostname_from
from oci2vm.prepare.kernel import refuse_workload_options
from oci2vm.report import Reporter
from oci2vm.reports import CheckReport


@contextmanager
def disk_for(config: Config, reporter: Reporter) -> Iterator[Path]:
    """The disk to boot: the argument itself if it is a file, else a disk built from
    the source into a temporary directory that is removed afterwards. The build's report
    goes to stderr as a note: stdout belongs to run and check (check --json prints its own
    report there)."""
    given = Path(config.source)
    if os.path.isfile(given):
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="oci2vm-run-") as tmp:
        disk = Path(tmp) / "disk.img"
        reporter.note(f"building {config.source} into a temporary disk")
        quiet_build = dataclasses.replace(config, output=disk, format=OutputFormat.RAW, json=False)
        report = pipeline.build(quiet_build, Reporter(quiet=config.quiet))
        reporter.note(report.human())
        yield disk


def run_command(config: Config, reporter: Reporter) -> int:
    """A disk boots as it is; a source runs as docker run would run it, on a cached root
    (built on first use) booted directly: an app image's workload, its exit code
    returned; a system image to its login on this terminal. A system image that keeps
    its own kernel boots from a disk built for the run."""
    refuse_output_options(config, "run")
    if config.privileged or config.cap_add:
        given = "--privileged" if config.privileged else f"--cap-add {','.join(config.cap_add)}"
        reporter.note(
            f"{given}: nothing to do, the workload runs on a kernel of its own, where root "
            "holds every capability and sees every device"
        )
    if config.name and not runs.detached():
        reporter.note(f"--name {config.name}: only a detached run (-d) is kept by its name")
    if os.path.isfile(config.source):
        refuse_for_disk(config)
        if config.publish_all:
            raise Oci2vmError(
                "-P: a disk keeps no image config to take the exposed ports from: name them "
                "with -p HOST_PORT:GUEST_PORT"
            )
    else:
        config = as_docker_runs(config)
        with reporter.progress():
            image, store = pipeline.resolve_source(config, reporter)
            entry = runcache.direct_boot(config, reporter, image, store)
        config = pick_host_ports(
            publish_exposed(config, image.config.exposed_ports, reporter), reporter
        )
        if entry is not None and entry.mode is InitMode.APP:
            return run_workload(config, image, entry)
        if entry is not None:
            # Checked when the cached root was built; a later run with other options
            # comes here straight from the cache.
            refuse_workload_options(config.source, config)
            arch = runcache.image_arch(image)
            starting(config)
            return runtime.run_system(entry.kernel, entry.initrd, entry.root, config, arch)
    return boot_disk(pick_host_ports(config, reporter), reporter)


def publish_exposed(config: Config, exposed: Sequence[str], reporter: Reporter) -> Config:
    """-P, as docker run -P: each port the image exposes ("80/tcp", "53/udp", "8080")
    that -p does not publish already is forwarded from a free host port on 127.0.0.1,
    told on stderr (docker leaves that to `docker port`)."""
    if not config.publish_all:
        return config
    taken = {(p.guest_port, p.protocol) for p in config.publish}
    added = []
    for text in exposed:
        number, _, protocol = text.partition("/")
        protocol = protocol.lower() or "tcp"
        port = int(number) if number.isdigit() else 0
        if protocol not in ("tcp", "udp") or not 0 < port < 65536:
            reporter.note(f"-P: the image exposes {text!r}, which QEMU cannot forward")
            continue
        if (port, protocol) in taken:
            continue
        taken.add((port, protocol))
        added.append(PortMapping(vm.free_port(protocol), port, "127.0.0.1", protocol))
    for mapping in added:
        reporter.note(f"-P: {forward_text(mapping)}")
    if not exposed:
        reporter.note("-P: the image exposes no port")
    return dataclasses.replace(config, publish=(*config.publish, *added))


def pick_host_ports(config: Config, reporter: Reporter) -> Config:
    """-p GUEST_PORT (or HOST_IP::GUEST_PORT), as docker run -p: from a free host port,
    picked when the run starts and told on stderr."""
    publish = []
    for mapping in config.publish:
        if not mapping.host_port:
            port = vm.free_port(mapping.protocol, mapping.host_ip)
            mapping = dataclasses.replace(mapping, host_port=port)
            reporter.note(f"-p: {forward_text(mapping)}")
        publish.append(mapping)
    return dataclasses.replace(config, publish=tuple(publish))


def starting(config: Config) -> None:
    """Just before QEMU starts: the published ports checked (QEMU would fail on one only
    once it booted), and a detached run's record told what it forwards."""
    vm.check_ports(config.publish)
    runs.starting([forward_text(p) for p in config.publish], config.discard)


def forward_text(mapping: PortMapping) -> str:
    """A forward as docker port tells it: 127.0.0.1:41023 -> 8080/tcp."""
    return f"{mapping.host_ip}:{mapping.host_port} -> {mapping.guest_port}/{mapping.protocol}"


def as_docker_runs(config: Config) -> Config:
    """docker run runs every image as an app: with a command or another option of the
    workload (-e, -u, -w, --entrypoint, -v), `--init auto` runs the image's workload even
    where the image has an init (alpine's and busybox's are busybox's), which it boots to
    its login when nothing of a workload is given."""
    if config.init is InitMode.AUTO and config.workload_options():
        return dataclasses.replace(config, init=InitMode.APP)
    return dataclasses.replace(config, docker_run=True)


def refuse_output_options(config: Config, command: str) -> None:
    """What run and check boot is a given disk, or one of their own that is gone after:
    options of an output file would be dropped silently."""
    if config.json and command == "run":
        raise Oci2vmError("--json: `oci2vm run` prints what the VM prints, no report")
    if given := config.output_file_options():
        raise Oci2vmError(
            f"{', '.join(given)}: `oci2vm {command}` writes no output file: build one with "
            "`oci2vm build SOURCE -o FILE`"
        )


def refuse_for_disk(config: Config) -> None:
    """A disk boots as it was built: the options of a build would be dropped."""
    if given := config.disk_options():
        raise Oci2vmError(
            f"{config.source}: {', '.join(given)} {'apply' if len(given) > 1 else 'applies'} "
            "when a disk is built (`oci2vm build`, or `oci2vm run SOURCE`), and a disk boots "
            "as it was built"
        )


def volume_files(config: Config, spec: BootSpec) -> list[tuple[str, bytes]]:
    """The bytes of each -v FILE:PATH:ro, by the tag `spec` mounts it under."""
    files = []
    for volume, mount in zip(config.volumes, spec.volumes, strict=True):
        if volume.file and volume.read_only:
            try:
                with open(volume.host, "rb") as f:
                    data = f.read(MAX_VOLUME_FILE + 1)
            except OSError as e:
                raise Oci2vmError(f"-v {volume.host}: {e.strerror}") from None
            if len(data) > MAX_VOLUME_FILE:
                raise Oci2vmError(
                    f"-v {volume.host}: more than {MAX_VOLUME_FILE >> 20} MiB, which a single "
                    "file shared travels as: share its directory"
                )
            files.append((mount.tag, data))
    return files


def make_volume_dirs(config: Config) -> None:
    """The host directories of -v that did not exist: made now (with their parents), as
    docker run -v makes them, the run's user owning them."""
    for volume in config.volumes:
        if volume.create and not volume.host.is_dir():
            try:
                volume.host.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise Oci2vmError(f"-v {volume.host}: cannot make it: {e.strerror}") from None


def run_workload(config: Config, image: Image, entry: runcache.DirectBoot) -> int:
    """The image's workload with docker run's options, on a throwaway overlay of the
    cached root; the arguments reach the guest in an archive after the cached initramfs."""
    spec = workload(image.config, config, hostname=hostname_from(image.name))
    make_volume_dirs(config)
    with tempfile.TemporaryDirectory(prefix="oci2vm-run-") as tmp:
        initrd = Path(tmp, "initrd.img")
        with open(initrd, "wb") as out, open(entry.initrd, "rb") as base:
            shutil.copyfileobj(base, out)
            out.write(spec_archive(spec, files=volume_files(config, spec)))
        arch = runcache.image_arch(image)
        starting(config)
        return runtime.run_app(entry.kernel, initrd, entry.root, spec, config, arch)


def boot_disk(config: Config, reporter: Reporter) -> int:
    """Boot a disk on this terminal: the one given (its changes kept, unless --rm), or one
    built from the source for this run and removed afterwards."""
    with disk_for(config, reporter) as disk:
        vm.refuse_unbootable(disk)
        starting(config)
        return vm.run_vm(
            disk,
            firmware=config.firmware,
            memory_mib=config.memory_mib,
            cpus=config.cpus,
            accel=config.accel,
            bus=config.bus,
            snapshot=config.discard,
            forwards=config.publish,
        )


def check_command(config: Config, reporter: Reporter) -> int:
    refuse_output_options(config, "check")
    if os.path.isfile(config.source):
        refuse_for_disk(config)
    with disk_for(config, reporter) as disk:
        reporter.note(f"booting {disk.name} headless, waiting for /{config.expect}/")
        result = vm.check_boot(
            disk,
            expect=config.expect,
            timeout=config.timeout,
            firmware=config.firmware,
            bus=config.bus,
            accel=config.accel,
            memory_mib=config.memory_mib,
            cpus=config.cpus,
            # Nothing comes after these: no need to sit out the timeout.
            fail=f"{vm.KERNEL_PANIC}|{vm.APP_FAILED}|{vm.NO_BOOT_DEVICE}",
        )
    reporter.result(
        CheckReport(result.ok, result.seconds, config.expect, result.reason, result.tail)
    )
    return 0 if result.ok else 1
