"""cloud-init in the image finds its datasource as on a cloud: a NoCloud seed written
into the tree, which --cloud-init's user-data fills.

Facts from cloud-init's docs (datasources/nocloud, 22.4 as Debian 12 ships it): the
NoCloud datasource reads a seed directory, /var/lib/cloud/seed/nocloud/, holding
`meta-data` (YAML: instance-id, local-hostname) and `user-data` (both must exist; empty
user-data is valid); `datasource_list` in /etc/cloud/cloud.cfg.d/*.cfg, merged in name
order (Debian's package writes 90_dpkg.cfg), says which datasources it tries, so pinning
NoCloud keeps it from waiting for metadata services that a local VM does not have.
A changed instance-id makes cloud-init run its per-instance modules again: ours follows
the image, the hostname and the user-data.
"""

from __future__ import annotations

import hashlib
import uuid

from oci2vm.errors import Oci2vmError
from oci2vm.prepare.step import Step, Target, system_mode
from oci2vm.tree.editor import TreeEditor
from oci2vm.util.smallfiles import read_small
from oci2vm.util.units import MIB

CLOUD_INIT = ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init")
SEED = "/var/lib/cloud/seed/nocloud"
DROPIN = "/etc/cloud/cloud.cfg.d/99_oci2vm.cfg"
USER_DATA_LIMIT = 16 * MIB
DATASOURCES = b"""\
# Written by oci2vm: this machine's datasource is the seed in /var/lib/cloud/seed/nocloud.
datasource_list: [ NoCloud, None ]
"""
EMPTY_SEED_NOTE = (
    "the image has cloud-init: a NoCloud seed with empty user-data was written "
    f"({SEED}) so that it does not wait for a cloud's metadata service; "
    "--cloud-init USER_DATA_FILE gives it yours"
)

APP_MODE_NOTE = "--cloud-init {}: not used: in app mode oci2vm's init runs, not cloud-init"


def has_cloud_init(edit: TreeEditor) -> bool:
    return any(edit.get(path) is not None for path in CLOUD_INIT)


def instance_id(target: Target, user_data: bytes) -> str:
    """The same for the same image, hostname and user-data; new when any changes."""
    digest = hashlib.sha256(user_data).hexdigest()
    name = f"oci2vm:{target.identity}:{target.hostname}:cloud-init:{digest}"
    return f"oci2vm-{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def meta_data(target: Target, user_data: bytes) -> bytes:
    return (
        f"instance-id: {instance_id(target, user_data)}\nlocal-hostname: {target.hostname}\n"
    ).encode()


def apply(edit: TreeEditor, target: Target) -> list[str]:
    given = target.config.cloud_init
    if not system_mode(target):
        return [] if given is None else [APP_MODE_NOTE.format(given)]
    if not has_cloud_init(edit):
        if given is None:
            return []
        raise Oci2vmError(
            f"--cloud-init {given}: {target.source} has no cloud-init ({CLOUD_INIT[0]}) to read it"
        )
    if given is None and edit.get(f"{SEED}/meta-data") is not None:
        return []  # the image's own seed
    user_data = b"" if given is None else read_small(given, USER_DATA_LIMIT, "--cloud-init")
    parts = SEED.split("/")
    for i in range(2, len(parts) + 1):
        edit.mkdir("/".join(parts[:i]))
    edit.write(f"{SEED}/meta-data", meta_data(target, user_data), mode=0o600, uid=0, gid=0)
    edit.write(f"{SEED}/user-data", user_data, mode=0o600, uid=0, gid=0)
    for directory in ("/etc/cloud", "/etc/cloud/cloud.cfg.d"):
        edit.mkdir(directory)
    edit.write(DROPIN, DATASOURCES, mode=0o644, uid=0, gid=0)
    return [EMPTY_SEED_NOTE] if given is None else []


def applies(target: Target) -> bool:
    return system_mode(target) or target.config.cloud_init is not None


STEP = Step("cloudinit", apply, applies=applies)
