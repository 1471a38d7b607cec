"""Random trees (odd names, depth, sparse files with many extents, big xattrs that need an
xattr block, ACLs, hardlink groups, devices, extreme owners and times) become ext4 images
that e2fsck passes and that debugfs reads back equal to the tree."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oci2vm.tree.model import Inode
from support.ext4check import assert_reads_back, build
from support.ext4trees import trees
from support.programs import requires

pytestmark = requires("e2fsck", "debugfs")


@settings(
    max_examples=int(os.environ.get("EXT4_PROP_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(root=trees(), stream=st.booleans())
def test_random_trees_pass_e2fsck_and_read_back_equal(root: Inode, stream: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ext4-prop-"))
    try:
        image = workdir / "fs.ext4"
        build(root, image, stream=stream)
        assert_reads_back(root, image, workdir)
    finally:
        shutil.rmtree(workdir)
