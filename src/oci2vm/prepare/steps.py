"""The preparation steps of a bootable system, in the order they run, and the runner."""

from __future__ import annotations

from collections.abc import Sequence

from oci2vm.config import Config
from oci2vm.prepare import accounts, bootcfg, cleanup, console, fstab, hostname, kernel, ssh
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor

SYSTEM_STEPS: tuple[Step, ...] = (
    kernel.STEP,
    cleanup.STEP,
    fstab.STEP,
    hostname.STEP,
    console.STEP,
    accounts.STEP,
    ssh.STEP,
    bootcfg.STEP,
)


def run_steps(steps: Sequence[Step], edit: TreeEditor, target: Target) -> list[str]:
    """Apply every step that applies, in order; returns their notes."""
    notes: list[str] = []
    for step in steps:
        if step.applies(target):
            notes.extend(step.apply(edit, target))
    return notes


def data_bytes(steps: Sequence[Step], config: Config) -> int:
    """The file data the steps will add, for the disk plan."""
    return sum(step.data_bytes(config) for step in steps)
