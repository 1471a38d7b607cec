"""Random stacks of layers for the differential test of flattening (hypothesis), and the
other side of the comparison: `umoci raw unpack --rootless` of the same layout.

Layers are drawn as a runtime would apply them: each entry is chosen against the state
the entries before it leave (a small simulated filesystem), so that stacks stay in the
space where container tools agree on the result. What that leaves out, on purpose:
- hardlink targets below a symlink, and entries below one that leads nowhere (umoci
  makes the missing directories with the unpacking's time) or into a loop; entries,
  whiteouts and opaque markers below a symlink that leads to a directory are drawn
  ("through", "marker through"), the symlink in the same layer or a lower one, but not
  where the same layer writes too (and no marker that deletes a symlink on its way),
  nor where an upper layer lists a directory (oci2vm takes the entries as its), nor
  below a symlink written through one or onto a symlink passed on the way (a -> ., a/a),
  nor through a lower layer's symlink in a directory its layer left implicit where a newer
  layer then replaces or deletes a directory above it (oci2vm refuses);
- hardlinks to a path not yet there, or forming a cycle (oci2vm refuses; umoci links to
  what it finds, or fails);
- directories no entry lists (their time is the unpacking's in umoci);
- a whiteout of a directory that the same layer left implicit while writing below it
  (umoci keeps it with its old metadata, containerd deletes what the layer wrote), or
  that the same layer listed before, or above such a directory, opaque markers too
  (umoci leaves on it the time it removed lower entries, not the entry's);
- a whiteout or opaque marker above a directory the same layer left implicit (umoci and
  containerd give that directory the metadata of the one they hide; oci2vm gives it an
  implicit directory's);
- device nodes (rootless umoci makes them empty files);
- empty xattr values (Go's archive/tar reads an empty pax value as no value).
Paths come from a small pool of names so that layers collide often: type changes across
layers, at the root too, whiteouts and opaque directories that hide something.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from oci2vm.image.model import Image
from oci2vm.layers.flatten import flatten
from oci2vm.tree.model import DataReader, Inode
from support.layouts import Member, directory, file, hardlink, symlink
from support.treecompare import Record, directory_records, logical_hash, tree_records

NAMES = ("a", "b", "c")
FILE_MODES = (0o644, 0o600, 0o755, 0o4755, 0o2711, 0o1777, 0o000)
DIR_MODES = (0o755, 0o700, 0o1777, 0o2775, 0o555)
OWNERS = (0, 1, 1000, 65534)
TARGETS = ("a", "../b", "/c/a", "nowhere", "a/b/c", ".")
CONTENTS = (b"", b"x", b"hello\n", b"secret", bytes(range(200)))
OPS = ("file", "file", "dir", "dir", "symlink", "hardlink", "hardlink", "fifo")
OPS += ("whiteout", "whiteout", "opaque", "root", "through", "through")
OPS += ("marker through",) * 3


@dataclass
class Stack:
    """Layers (bottom first) and whether any layer lists the root directory itself."""

    layers: list[list[Member]]
    root_listed: bool

    def describe(self) -> str:
        lines = []
        for number, layer in enumerate(self.layers, 1):
            names = [f"{m.info.name}{_suffix(m)}" for m in layer]
            lines.append(f"layer {number}: " + ", ".join(names))
        return "\n".join(lines)


def _suffix(member: Member) -> str:
    kind = {b"0": "", b"5": "/", b"2": " ->", b"1": " =>", b"6": " (fifo)"}[member.info.type]
    return f"{kind} {member.info.linkname}" if member.info.linkname else kind


@dataclass
class _Layer:
    """The simulated filesystem while one layer is drawn (paths without a leading '/';
    '' is the root), with the paths this layer wrote and their ancestors (umoci's
    upperPaths: a whiteout in the same layer leaves them)."""

    state: dict[str, str]
    links: dict[str, str]  # symlink targets, by path
    members: list[Member] = field(default_factory=list)
    upper: set[str] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)
    through: str | None = None  # the symlink it wrote below (then no markers after it)
    cut: set[str] = field(default_factory=set)  # paths it made non-directories or deleted
    over: set[str] = field(default_factory=set)  # non-directories it made directories
    dirs: set[str] = field(default_factory=set)  # directories it listed

    def below(self, path: str) -> list[str]:
        prefix = path + "/" if path else ""
        return [p for p in self.state if p == path or p.startswith(prefix)]

    def through_symlink(self, path: str) -> bool:
        parts = path.split("/")
        return any(self.state.get("/".join(parts[:i])) == "symlink" for i in range(1, len(parts)))

    def put(self, path: str, kind: str, member: Member) -> None:
        """An entry replaces what is at its path (a directory over a directory merges)."""
        if kind == "dir" and self.state.get(path) not in (None, "dir"):
            self.over.add(path)
        if kind == "dir":
            self.dirs.add(path)
        if not (kind == "dir" and self.state.get(path) == "dir"):
            for gone in self.below(path):
                del self.state[gone]
        self.state[path] = kind
        if kind != "dir":
            self.cut.add(path)
        self.links.pop(path, None)
        if member.info.type == b"2":  # (not a hardlink to one: oci2vm follows no such link)
            self.links[path] = member.info.linkname
        self.members.append(member)
        self.listed.add(path)
        parts = path.split("/")
        self.upper.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))

    def implicit_below(self, path: str) -> bool:
        """Whether this layer wrote below `path` through a directory it did not list."""
        prefix = path + "/" if path else ""
        return any(p.startswith(prefix) and p not in self.listed for p in self.upper)

    def listed_dir_below(self, path: str) -> bool:
        """Whether this layer listed a directory strictly below `path`."""
        prefix = path + "/" if path else ""
        return any(
            p.startswith(prefix) and p != path and self.state.get(p) == "dir" for p in self.listed
        )

    def delete(self, path: str, keep_self: bool) -> None:
        """A whiteout (or opaque marker) removes what this layer did not write."""
        self.cut.add(path)
        for gone in self.below(path):
            if gone not in self.upper and not (keep_self and gone == path):
                del self.state[gone]


def _mtime(draw: Any) -> dict[str, object]:
    seconds = draw(st.integers(0, 2_000_000_000))
    if draw(st.booleans()):
        return {"mtime": seconds}
    nanos = draw(st.integers(1, 999_999_999))
    return {"mtime": seconds, "pax": {"mtime": f"{seconds}.{nanos:09d}"}}


def _meta(draw: Any, modes: tuple[int, ...], xattr: bool = True) -> dict[str, object]:
    meta: dict[str, object] = {
        "mode": draw(st.sampled_from(modes)),
        "uid": draw(st.sampled_from(OWNERS)),
        "gid": draw(st.sampled_from(OWNERS)),
        **_mtime(draw),
    }
    if xattr and draw(st.integers(0, 3)) == 0:
        pax = dict(meta.get("pax") or {})  # type: ignore[call-overload]
        pax["SCHILY.xattr.user.k"] = draw(st.sampled_from(["v", "w"]))
        meta["pax"] = pax
    return meta


def _path(draw: Any) -> str:
    depth = draw(st.sampled_from((1, 1, 2, 2, 3)))
    return "/".join(draw(st.sampled_from(NAMES)) for _ in range(depth))


def _parents(draw: Any, layer: _Layer, path: str) -> None:
    """List every parent that is not a directory now, as layer tools do."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if layer.state.get(parent) != "dir":
            layer.put(parent, "dir", directory(parent, **_meta(draw, DIR_MODES)))


def _entry(draw: Any, layer: _Layer, op: str) -> None:
    path = _path(draw)
    if op == "hardlink":
        targets = sorted(
            p
            for p, kind in layer.state.items()
            if kind != "dir" and p and not layer.through_symlink(p)
        )
        if not targets:
            return
        target = draw(st.sampled_from(targets))
        if path == target or target.startswith(path + "/") or path.startswith(target + "/"):
            return
        _parents(draw, layer, path)
        if layer.state.get(target) is None:  # a parent listed just now replaced it
            return
        layer.put(path, layer.state[target], hardlink(path, target))
        return
    _parents(draw, layer, path)
    layer.put(path, op, _drawn(draw, op, path))


KINDS = ("dir", "fifo", "file", "symlink")  # as _Layer.state names them


def _drawn(draw: Any, kind: str, name: str) -> Member:
    """A member of `kind` (one of KINDS) named `name`, its metadata drawn."""
    if kind == "file":
        return file(name, draw(st.sampled_from(CONTENTS)), **_meta(draw, FILE_MODES))
    if kind == "dir":
        return directory(name, **_meta(draw, DIR_MODES))
    if kind == "fifo":
        member = file(name, **_meta(draw, FILE_MODES, xattr=False))
        member.info.type = b"6"
        return member
    owner = {"uid": draw(st.sampled_from(OWNERS)), **_mtime(draw)}
    member = symlink(name, draw(st.sampled_from(TARGETS)), **owner)
    member.info.mode = draw(st.sampled_from((0o777, 0o644, 0o4755)))
    return member


def _resolve(layer: _Layer, parts: list[str]) -> list[str] | None:
    """Where a runtime reaches by `parts` (every component followed, inside the root);
    None when that is not an existing directory, or the symlinks loop."""
    for _ in range(40):
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            kind = layer.state.get(key)
            if kind == "symlink":
                target = layer.links.get(key)
                if target is None:
                    return None
                resolved = [] if target.startswith("/") else parts[: depth - 1]
                for part in target.split("/"):
                    if part == "..":
                        resolved = resolved[:-1]
                    elif part not in ("", "."):
                        resolved.append(part)
                parts = resolved + parts[depth:]
                break
            if kind != "dir":
                return None
        else:
            return parts
    return None


def _through(draw: Any, layer: _Layer) -> None:
    """An entry written below a symlink (this layer's or a lower one's) without listing
    it, as a build tool's layer over a merged-/usr base writes lib/...: a runtime puts
    it where the symlink leads."""
    links = sorted(p for p, kind in layer.state.items() if kind == "symlink" and p in layer.links)
    if not links:
        return
    link = draw(st.sampled_from(links))
    where = _resolve(layer, link.split("/"))
    if where is None:
        return
    name = draw(st.sampled_from(NAMES))
    path = "/".join([*where, name])
    if path in layer.upper or any(p.startswith(path + "/") for p in layer.upper):
        return  # the layer wrote there directly too: which came first decides (oci2vm refuses)
    if any("/".join(where[:i]) in layer.cut for i in range(len(where) + 1)):
        return  # ... or deleted or replaced a directory on the way, as umoci would have
    if any(p == path or p.startswith(path + "/") for p in layer.links):
        return  # the entry would replace a symlink it went through (a -> . and a/a)
    kind = draw(st.sampled_from(KINDS))
    layer.put(path, kind, _drawn(draw, kind, f"{link}/{name}"))
    layer.links.pop(path, None)  # (no entry goes through a symlink written through one)
    layer.through = link


def _marker(draw: Any, layer: _Layer, op: str) -> None:
    """A whiteout or an opaque marker, where a runtime would not reach through a symlink."""
    if layer.through is not None:
        return
    if op == "whiteout":
        path = _path(draw)
        if layer.through_symlink(path) or layer.implicit_below(path):
            return
        if path in layer.upper and path not in layer.listed:
            return
        if (path in layer.listed and layer.state.get(path) == "dir") or layer.listed_dir_below(
            path
        ):
            return  # umoci would leave the time of removing lower entries on it
        head, _, base = path.rpartition("/")
        layer.members.append(file(f"{head}/.wh.{base}" if head else f".wh.{base}", mode=0o600))
        layer.delete(path, keep_self=False)
        return
    dirs = sorted(p for p, kind in layer.state.items() if kind == "dir")
    path = draw(st.sampled_from(dirs))  # the root is always there
    if layer.through_symlink(path + "/x") or layer.implicit_below(path):
        return
    if layer.listed_dir_below(path):
        return  # as for whiteouts
    layer.members.append(file(f"{path}/.wh..wh..opq" if path else ".wh..wh..opq", mode=0o600))
    layer.delete(path, keep_self=True)


def _marker_through(draw: Any, layer: _Layer) -> bool:
    """A whiteout or an opaque marker below a symlink (this layer's or a lower one's): a
    runtime deletes where the symlink leads. Say whether one was drawn."""
    if layer.through is not None:
        return False
    links = sorted(p for p, kind in layer.state.items() if kind == "symlink" and p in layer.links)
    if not links:
        return False
    link = draw(st.sampled_from(links))
    where = _resolve(layer, link.split("/"))
    if where is None:
        return False
    directory = "/".join(where)
    children = sorted(p for p in layer.below(directory) if p and p.rpartition("/")[0] == directory)
    opaque = not children or draw(st.booleans())
    path = directory if opaque else draw(st.sampled_from(children))
    prefix = path + "/" if path else ""
    if path in layer.upper or any(p.startswith(prefix) for p in layer.upper):
        return False  # the layer wrote there too (umoci keeps it, whatever the order)
    if any(p == path or p.startswith(prefix) for p in layer.links if path):
        return False  # it would delete a symlink on its own way (an opaque root: all of them)
    if opaque:
        layer.members.append(file(f"{link}/.wh..wh..opq", mode=0o600))
    else:
        layer.members.append(file(f"{link}/.wh.{path.rpartition('/')[2]}", mode=0o600))
    layer.delete(path, keep_self=opaque)
    return True


@st.composite
def layer_stacks(draw: Any, min_layers: int = 3, max_layers: int = 5) -> Stack:
    """A stack of layers, bottom first, every entry valid where the runtime meets it."""
    state: dict[str, str] = {"": "dir"}
    links: dict[str, str] = {}
    throughs: list[str] = []
    layers: list[list[Member]] = []
    root_listed = False
    for number in range(draw(st.integers(min_layers, max_layers))):
        layer = _Layer(state, links)
        if number == 0 and draw(st.integers(0, 3)) == 0:
            # A base with a directory symlink, as merged /usr (lib -> usr/lib) is: gives
            # the upper layers' entries and markers below symlinks a way to go.
            target, link = draw(st.permutations(NAMES))[:2]
            layer.put(target, "dir", directory(target, **_meta(draw, DIR_MODES)))
            layer.put(link, "symlink", symlink(link, target, **_mtime(draw)))
        for _ in range(draw(st.integers(1, 7))):
            op = draw(st.sampled_from(OPS))
            if op == "root":
                name = draw(st.sampled_from(("./", ".", "/")))
                layer.members.append(directory(name, **_meta(draw, DIR_MODES)))
                root_listed = True
            elif op in ("whiteout", "opaque"):
                _marker(draw, layer, op)
            elif op == "marker through":
                if _marker_through(draw, layer):
                    break  # (what the layer writes after it may replace its way: refused)
            elif op == "through":
                _through(draw, layer)
                if layer.through is not None:
                    break  # (nothing more at that path from this layer: see _through)
            else:
                _entry(draw, layer, op)
        # An upper layer that lists a directory where a lower layer wrote through a symlink
        # (or makes a non-directory above it one): oci2vm, reading the upper layer first,
        # takes what lower layers put below that path as that directory's (a whiteout
        # there, or a non-directory, leaves it waiting until a lower layer says what the
        # path was).
        assume(
            not any(
                ln in layer.dirs or any(t == ln or ln.startswith(t + "/") for t in layer.over)
                for ln in throughs
            )
        )
        if layer.through is not None:
            throughs.append(layer.through)
        layers.append(layer.members)
    return Stack(layers, root_listed)


def oci2vm_records(image: Image) -> dict[str, Record]:
    """Records of oci2vm's flattened tree. The sink keeps every inode it is handed: a
    file a layer lists twice is dropped from the tree, and a dropped inode's id() (the
    records' key for content) may be a new inode's."""
    hashes: dict[Inode, str] = {}
    kept: list[Inode] = []

    def sink(inode: Inode, data: DataReader) -> None:
        kept.append(inode)
        hashes[inode] = logical_hash(inode, data)

    return tree_records(flatten(image, sink=sink), hashes)


# --- the other side: umoci ---------------------------------------------------------------


def umoci_unpack(image: str, rootfs: Path) -> dict[str, Record] | str:
    """Records of `umoci raw unpack --rootless` of `image` (PATH:TAG), owners read back
    from its user.rootlesscontainers xattr; or umoci's error."""
    done = subprocess.run(
        ["umoci", "raw", "unpack", "--rootless", "--image", image, str(rootfs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return done.stderr.strip() or f"umoci exited with {done.returncode}"
    records = directory_records(rootfs)
    for record in records.values():
        owner = record["xattrs"].pop("user.rootlesscontainers", None)
        record["uid"], record["gid"] = _rootless_owner(bytes.fromhex(owner or ""))
    return records


def _rootless_owner(payload: bytes) -> tuple[int, int]:
    """uid and gid of a rootlesscontainers.Resource protobuf: fields 1 and 2 (varints);
    absent is 0 and NoopID (2**32 - 1) means the unpacking user, the container's root."""
    ids = {1: 0, 2: 0}
    pos = 0
    while pos < len(payload):
        key, pos = _varint(payload, pos)
        value, pos = _varint(payload, pos)
        ids[key >> 3] = 0 if value == 0xFFFFFFFF else value
    return ids[1], ids[2]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def comparable(records: dict[str, Record], root_listed: bool) -> dict[str, Record]:
    """What both sides can state: no owner for symlinks and FIFOs (rootless umoci keeps
    owners in a user.* xattr, which Linux allows on files and directories only), no time
    for a root no layer lists (umoci's is the time it made the directory)."""
    out = {}
    for path, record in records.items():
        record = dict(record)
        if record["kind"] in ("symlink", "fifo"):
            del record["uid"], record["gid"]
        if path == "/" and not root_listed:
            del record["mtime_ns"]
        out[path] = record
    return out


def make_removable(root: Path) -> None:
    """Give the owner access to every directory below root (modes such as 0555 in a
    layer would stop an unprivileged rmtree)."""
    os.chmod(root, os.lstat(root).st_mode & 0o7777 | stat.S_IRWXU)
    for dirpath, dirnames, _files in os.walk(root):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, os.lstat(full).st_mode & 0o7777 | stat.S_IRWXU)
