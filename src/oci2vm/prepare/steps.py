"""The preparation steps of a bootable system, in the order they run, and the runner."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from oci2vm.config import Config
from oci2vm.prepare import (
    accounts,
    appmode,
    bootcfg,
    busyboxboot,
    cleanup,
    cloudinit,
    console,
    distro,
    firstboot,
    fstab,
    hostkeys,
    hostname,
    identity,
    kernel,
    mountpoints,
    network,
    openrcboot,
    ssh,
    users,
)
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.osinfo import describe

SYSTEM_STEPS: tuple[Step, ...] = (
    kernel.STEP,
    cleanup.STEP,
    mountpoints.STEP,
    busyboxboot.STEP,
    openrcboot.STEP,
    distro.STEP,
    identity.STEP,
    hostkeys.STEP,
    firstboot.STEP,
    appmode.STEP,
    fstab.STEP,
    hostname.STEP,
    network.STEP,
    cloudinit.STEP,
    console.STEP,
    accounts.STEP,
    users.STEP,
    ssh.STEP,
    bootcfg.STEP,
)


def run_steps(steps: Sequence[Step], edit: TreeEditor, target: Target) -> tuple[list[str], Target]:
    """Apply every step that applies, in order; returns their notes and the target as
    the last step saw it (what the tree holds, described anew after a step changed it)."""
    notes: list[str] = []
    for step in steps:
        if step.applies(target):
            notes.extend(step.apply(edit, target))
            if step.refreshes_os:
                target = dataclasses.replace(target, os=describe(edit.tree))
    return notes, target


def data_bytes(steps: Sequence[Step], config: Config) -> int:
    """The file data the steps will add, for the disk plan."""
    return sum(step.data_bytes(config) for step in steps)
