"""What a system-mode build would write for the network, the console and first boot, for
`inspect`: the steps themselves run over inspect's own tree (thrown away afterwards), and
the paths they add or change are what is reported, so the report cannot drift from what a
build does. Files that flattening did not keep in memory read as missing here (a unit's
[Install] section, say): the list can miss a link a build would add, never add one."""

from __future__ import annotations

from oci2vm.config import NetworkMode
from oci2vm.errors import Oci2vmError
from oci2vm.prepare import console, distro, firstboot, hostkeys, identity, network
from oci2vm.prepare.step import Step, Target
from oci2vm.tree.editor import TreeEditor
from oci2vm.tree.model import Kind, Tree, walk

# Steps whose writes are reported, each after those it depends on (first boot runs the
# fragments identity and hostkeys register).
PLANNED: tuple[tuple[str, tuple[Step, ...]], ...] = (
    ("identity", (identity.STEP, hostkeys.STEP, firstboot.STEP)),
    ("network", (network.STEP,)),
    ("console", (console.STEP,)),
)
_Snapshot = dict[str, tuple[int, object, int, bytes | None]]


def snapshot(tree: Tree) -> _Snapshot:
    """Every entry but directories, by path: what identifies its inode and content."""
    return {
        path: (inode.row, inode.data, inode.size, inode.target)
        for path, inode in walk(tree.root)
        if inode.kind is not Kind.DIR
    }


def differences(before: _Snapshot, after: _Snapshot) -> str:
    """`writes A, B; removes C` in words, or `writes nothing`."""
    written = sorted(path for path, facts in after.items() if before.get(path) != facts)
    removed = sorted(path for path in before if path not in after)
    words = [f"writes {', '.join(written)}"] if written else []
    words += [f"removes {', '.join(removed)}"] if removed else []
    return "; ".join(words) or "writes nothing"


def system_plan(tree: Tree, target: Target) -> tuple[str, dict[str, str]]:
    """The network stack the network step would use, and per concern, in words, what a
    build would write (the steps' notes included). Edits `tree`."""
    edit = TreeEditor(tree, 0)
    stack = network.detect(edit, target.os.init, target.os.openrc)
    row = distro.conventions(target.os.os_release)
    plan = {"distribution": row.name if row else distro.unsupported_note(target.os) or "unknown"}
    for concern, steps in PLANNED:
        before = snapshot(tree)
        notes: list[str] = []
        try:
            for step in steps:
                if step.applies(target):
                    notes.extend(step.apply(edit, target))
        except Oci2vmError as e:
            notes.append(f"a build would stop here: {e}")
        words = differences(before, snapshot(tree))
        if concern == "network":
            unchanged = target.config.network.mode is NetworkMode.NONE
            words = f"{stack.value}: " + (
                "left as the image has it (--network none)" if unchanged else words
            )
        plan[concern] = "; ".join([words, *notes])
    return stack.value, plan
