"""Traces of the container runtime that would mislead a booted system (systemd and others
take /.dockerenv and /run/.containerenv as "running in a container")."""

from __future__ import annotations

from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor

RUNTIME_MARKERS = ("/.dockerenv", "/run/.containerenv")


def apply(edit: TreeEditor, _target: Target) -> list[str]:
    for path in RUNTIME_MARKERS:
        edit.remove(path)
    return []


STEP = Step("cleanup", apply)
