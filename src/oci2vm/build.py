"""`oci2vm build`: source → image → tree → ext4 (→ disk → output format).

The output appears only when it is complete: everything is written to a temporary file
beside it and renamed into place at the end; on any error the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from oci2vm.config import Config, OutputFormat
from oci2vm.errors import Oci2vmError
from oci2vm.fs.ext4 import Ext4Result, Ext4Writer
from oci2vm.image.blobs import BlobStore, uncompressed_size_hint
from oci2vm.image.model import Image
from oci2vm.inspect import blob_store, fetch_options, layer_progress
from oci2vm.layers.decompress import prompt_handoffs
from oci2vm.layers.flatten import flatten
from oci2vm.report import Reporter
from oci2vm.sources import resolve
from oci2vm.tree.model import FileSink, Tree

# Namespace for the UUIDs derived from an image's identity (random, fixed forever).
UUID_NAMESPACE = uuid.UUID("5f0f6c43-1b7e-4c55-9d0e-3f6f3c8a3a21")


@dataclass(frozen=True, slots=True)
class Identity:
    """What makes a build deterministic: derived from the image's digests."""

    digest: str  # the image ID, or the digest of a rootfs tarball
    fs_uuid: uuid.UUID
    hash_seed: uuid.UUID
    fs_time: int  # seconds since the epoch, for filesystem timestamps

    def derive(self, label: str) -> uuid.UUID:
        return uuid.uuid5(UUID_NAMESPACE, f"{self.digest}:{label}")


def image_identity(image: Image, config: Config) -> Identity:
    digest = image.config_digest
    if digest is None:
        # A rootfs tarball: its digest is its identity (one extra read, cached by the OS).
        digest = image.layers[0].blob.compute_digest()
    fs_uuid = uuid.uuid5(UUID_NAMESPACE, f"{digest}:fs")
    if config.fs_uuid:
        try:
            fs_uuid = uuid.UUID(config.fs_uuid)
        except ValueError as e:
            raise Oci2vmError(f"malformed --uuid {config.fs_uuid!r}: {e}") from e
    return Identity(
        digest=digest,
        fs_uuid=fs_uuid,
        hash_seed=uuid.uuid5(UUID_NAMESPACE, f"{digest}:hash-seed"),
        fs_time=fs_time(image),
    )


def fs_time(image: Image) -> int:
    """SOURCE_DATE_EPOCH when set, else the image's creation time, else 0."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return int(epoch)
        except ValueError as e:
            raise Oci2vmError(f"malformed SOURCE_DATE_EPOCH {epoch!r}") from e
    created = image.config.created
    if created:
        try:
            return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return 0


def data_size_hint(image: Image) -> int:
    return sum(uncompressed_size_hint(layer.blob, layer.media_type) for layer in image.layers)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed to it on success, removed on failure."""
    path = path.absolute()
    if path.is_dir():
        raise Oci2vmError(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise Oci2vmError(f"{path.parent}: no such directory")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise Oci2vmError(
            f"{path.parent}: cannot create files there ({e.strerror}): choose another -o"
        ) from e
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class RootFs:
    """A root filesystem written into a file: what the disk builder gets back."""

    image: Image
    tree: Tree
    identity: Identity
    ext4: Ext4Result


Prepare = Callable[[Image, Tree, Identity], None]


def write_rootfs(
    image: Image,
    out: BinaryIO,
    *,
    offset: int,
    size: int | None,
    identity: Identity,
    reporter: Reporter,
    prepare: Prepare | None = None,
    label: str = "",
    store: BlobStore | None = None,
) -> RootFs:
    """Flatten the image straight into an ext4 filesystem at `offset` of `out`.

    `prepare` may add or replace entries of the tree (OS preparation) after the layers
    streamed and before the metadata is written.
    """
    writer = Ext4Writer(
        out,
        offset=offset,
        size=size,
        data_size_hint=data_size_hint(image),
        uuid=identity.fs_uuid,
        hash_seed=identity.hash_seed,
        fs_time=identity.fs_time,
        label=label,
    )
    sink: FileSink = writer.write_file
    try:
        with prompt_handoffs():
            tree = flatten(
                image,
                sink=sink,
                progress=layer_progress(reporter, image),
                store=store,
                implicit_mtime_ns=identity.fs_time * 1_000_000_000,
            )
            if prepare is not None:
                prepare(image, tree, identity)
            result = writer.finish(tree.root)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()  # the first error is the one to report
        raise
    return RootFs(image, tree, identity, result)


def build(config: Config, reporter: Reporter) -> dict[str, Any]:
    if config.output is None:
        raise Oci2vmError("build needs -o OUTPUT")
    fmt = config.output_format()
    started = time.monotonic()
    with reporter.progress():
        image = resolve(config.source, fetch_options(config, reporter))
        identity = image_identity(image, config)
        if fmt is OutputFormat.EXT4:
            with atomic_output(config.output) as tmp, open(tmp, "r+b") as out:
                rootfs = write_rootfs(
                    image,
                    out,
                    offset=0,
                    size=config.size,
                    identity=identity,
                    reporter=reporter,
                    store=blob_store(config),
                )
            report = _report(config, fmt, rootfs, time.monotonic() - started)
        else:
            from oci2vm.disk_build import build_disk

            report = build_disk(config, fmt, image, identity, reporter)
            report["seconds"] = round(time.monotonic() - started, 3)
    reporter.result(report, _human(report))
    return report


def _report(config: Config, fmt: OutputFormat, rootfs: RootFs, seconds: float) -> dict[str, Any]:
    return {
        "output": str(config.output),
        "format": fmt.value,
        "image_id": rootfs.image.config_digest,
        "manifest_digest": rootfs.image.manifest_digest,
        "source_digest": rootfs.identity.digest,
        "filesystem": {
            "type": "ext4",
            "uuid": str(rootfs.ext4.uuid),
            "size": rootfs.ext4.size,
            "blocks": rootfs.ext4.blocks_count,
            "free_blocks": rootfs.ext4.free_blocks,
            "inodes": rootfs.ext4.inodes_count,
            "free_inodes": rootfs.ext4.free_inodes,
        },
        "entries": rootfs.tree.entries,
        "seconds": round(seconds, 3),
    }


def _human(report: dict[str, Any]) -> str:
    fs = report.get("filesystem") or report.get("root", {})
    lines = [f"Wrote {report['output']} ({report['format']})"]
    if fs:
        lines.append(
            f"  ext4 UUID={fs['uuid']}  {fs['size'] / (1 << 20):.0f} MiB, "
            f"{fs['free_blocks'] * 4096 / (1 << 20):.0f} MiB free"
        )
    lines.extend(f"  {line}" for line in report.get("notes", []))
    lines.append(f"  in {report['seconds']:.1f} s")
    return "\n".join(lines)
