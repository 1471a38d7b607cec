"""An independent flattener for the busybox layer model (for rootfs.tar and tree.json):
whiteouts apply to lower layers only, so each layer's whiteouts go before its entries."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .tarentry import TarEntry, enc

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass
class _Node:
    entry: TarEntry  # shared by every name of a hardlink group (identity = inode)
    children: dict[str, _Node] | None = None


class _Tree:
    """The merged tree so far: directories hold children by name."""

    def __init__(self) -> None:
        self.root = _Node(TarEntry("", "dir"), {})

    def lookup(self, path: str) -> _Node | None:
        node: _Node | None = self.root
        for part in [p for p in path.split("/") if p]:
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node

    def apply_whiteouts(self, entries: list[TarEntry]) -> None:
        for entry in entries:
            head, _, base = entry.path.rpartition("/")
            parent = self.lookup(head)
            if parent is None or parent.children is None or not base.startswith(WHITEOUT):
                continue
            if base == OPAQUE:
                parent.children.clear()
            else:
                parent.children.pop(base[len(WHITEOUT) :], None)

    def apply_entries(self, entries: list[TarEntry]) -> None:
        for entry in entries:
            head, _, base = entry.path.rpartition("/")
            if base.startswith(WHITEOUT):
                continue
            parent = self.lookup(head)
            if parent is None or parent.children is None:
                raise RuntimeError(f"fixture recipe bug: {entry.path} has no parent directory")
            existing = parent.children.get(base)
            if entry.kind == "hardlink":
                target = self.lookup(entry.linkname)
                if target is None or target.entry.kind != "file":
                    raise RuntimeError(f"fixture recipe bug: dangling hardlink {entry.path}")
                parent.children[base] = _Node(target.entry)
            elif entry.kind == "dir" and existing is not None and existing.children is not None:
                existing.entry = entry
            else:
                parent.children[base] = _Node(entry, {} if entry.kind == "dir" else None)


def _emit(node: _Node, path: str, out: list[TarEntry], first_name: dict[int, str]) -> None:
    """Append `node`'s subtree in walk order; a file's later names become hardlinks."""
    assert node.children is not None
    for name in sorted(node.children, key=enc):
        child = node.children[name]
        child_path = f"{path}/{name}" if path else name
        inode = id(child.entry)
        if inode in first_name:
            link = first_name[inode]
            out.append(
                replace(
                    child.entry,
                    path=child_path,
                    kind="hardlink",
                    linkname=link,
                    data=b"",
                    source=None,
                    size=0,
                    sparse=(),
                    group="",
                )
            )
        else:
            if child.entry.kind == "file":
                first_name[inode] = child_path
            out.append(replace(child.entry, path=child_path, group=""))
        if child.children is not None:
            _emit(child, child_path, out, first_name)


def flatten(layers: list[list[TarEntry]]) -> list[TarEntry]:
    """The tree `layers` (bottom first, each in walk order with links resolved) make."""
    tree = _Tree()
    for entries in layers:
        tree.apply_whiteouts(entries)
        tree.apply_entries(entries)
    out: list[TarEntry] = []
    _emit(tree.root, "", out, {})
    return out
