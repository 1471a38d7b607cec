"""Flattening against a container tool: random stacks of layers (support.layerstacks)
written as an OCI layout, oci2vm's tree compared with `umoci raw unpack --rootless` of
the same layout: kinds, modes, owners (but a symlink's), times (nanoseconds), xattrs,
symlink targets, file contents and hardlink groups, the root directory included.

A few dozen examples run by default, the same ones every run (a suite's verdict must not
depend on luck); set OCI2VM_DIFF_EXAMPLES to explore, with random or given seeds:
    OCI2VM_DIFF_EXAMPLES=5000 pytest tests/integration/test_flatten_differential.py \
        [--hypothesis-seed=N]
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from oci2vm.errors import Oci2vmError
from oci2vm.sources import Fetch, resolve
from support.layerstacks import (
    Stack,
    comparable,
    layer_stacks,
    make_removable,
    oci2vm_records,
    umoci_unpack,
)
from support.layouts import write_layout
from support.programs import requires
from support.treecompare import differences

EXPLORE = os.environ.get("OCI2VM_DIFF_EXAMPLES")
EXAMPLES = int(EXPLORE or "50")


def _compare(stack: Stack, work: Path) -> list[str]:
    write_layout(work / "img", stack.layers, compression="none")
    rootfs = work / "rootfs"
    theirs = umoci_unpack(f"{work / 'img'}:latest", rootfs)
    try:
        ours = oci2vm_records(resolve(f"oci:{work / 'img'}", Fetch()))
    except Oci2vmError as e:
        return [] if isinstance(theirs, str) else [f"oci2vm refused what umoci unpacks: {e}"]
    finally:
        if rootfs.exists():
            make_removable(rootfs)
    if isinstance(theirs, str):
        return [f"umoci refused what oci2vm flattens: {theirs}"]
    return differences(comparable(ours, stack.root_listed), comparable(theirs, stack.root_listed))


@requires("umoci")
@settings(
    max_examples=EXAMPLES,
    derandomize=EXPLORE is None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stack=layer_stacks())
def test_flattening_equals_umoci_raw_unpack_of_random_layer_stacks(stack: Stack) -> None:
    work = Path(tempfile.mkdtemp(prefix="oci2vm-diff-"))
    try:
        diff = _compare(stack, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert not diff, stack.describe() + "\n" + "\n".join(diff)
