"""The contract every preparation step keeps, and the target it prepares the tree for.

A step is small and stands alone: whether it applies to this image, what it adds to or
replaces in the tree (through a TreeEditor), and the notes it has for the user. It runs after
the layers streamed and before the filesystem's metadata is written. A step that injects file
data (a kernel's modules, an initramfs) streams it through the editor to the filesystem
writer, as layer data goes, and says how many bytes it adds before any layer streams, so the
disk plan has room for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from oci2vm.arch import Arch
from oci2vm.config import Config, InitMode
from oci2vm.image.blobs import BlobStore
from oci2vm.image.model import ImageConfig
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import OsInfo


@dataclass(slots=True)
class BootOutputs:
    """Where the kernel step leaves the kernel and the initramfs when they are booted
    directly (oci2vm run) instead of from the disk's /boot."""

    version: str = ""
    kernel: bytes = b""
    initrd: bytes = b""


@dataclass(frozen=True, slots=True)
class Target:
    """What the prepared system must be: a build's options and what the image holds."""

    os: OsInfo
    arch: Arch
    source: str  # the image as the user named it, for messages
    identity: str  # the build's identity (image digest), for derived salts
    root_uuid: str
    hostname: str
    root_password: str | None = None
    ssh_keys: tuple[bytes, ...] = ()  # root's
    user_ssh_keys: tuple[tuple[str, tuple[bytes, ...]], ...] = ()  # other users', by name
    config: Config = field(default_factory=Config)
    store: BlobStore | None = None  # the blob cache (Debian packages are cached there)
    image_config: ImageConfig | None = None
    mode: InitMode = InitMode.SYSTEM  # decided (prepare/kernel.mode_of): never AUTO here
    boot_outputs: BootOutputs | None = None  # given: the kernel and initrd go there, not /boot

    @property
    def serial_console(self) -> str:
        return self.arch.facts.serial_console


def always(_target: Target) -> bool:
    return True


def system_mode(target: Target) -> bool:
    return target.mode is InitMode.SYSTEM


def app_mode(target: Target) -> bool:
    return target.mode is InitMode.APP


def no_data(_config: Config) -> int:
    return 0


@dataclass(frozen=True, slots=True)
class Step:
    """One preparation step. `apply` edits the tree and returns notes for the user;
    `applies` says whether it has anything to do for this target; `data_bytes` is the file
    data it will add, known from the options alone (counted by the disk plan)."""

    name: str
    apply: Callable[[TreeEditor, Target], list[str]]
    applies: Callable[[Target], bool] = always
    data_bytes: Callable[[Config], int] = no_data
    refreshes_os: bool = False  # what the tree holds changes (a kernel added): describe it anew
