"""Flattening: the layers of an image merged into one tree, as a container runtime sees it.

Layers are read top-down, newest first, each decompressed once. An entry seen in an
upper layer shadows the same path below; a whiteout (.wh.NAME) hides NAME and all below
it in the layers below its own; an opaque marker (.wh..wh..opq, at the root too) hides
everything the layers below put in its directory; a non-directory hides everything the
layers below put beneath its path, even when a higher layer makes it a directory again.
Within a layer, entries apply in order, as a runtime applies them: the last entry at a
path wins (the root's own entry too), a hardlink shares what is at its target when it is
read, and whiteouts only touch the layers below. Read that way, the first visible entry
for a path is final, so file data can go straight to its destination (a FileSink) as the
stream passes, and data that a later layer replaces is never written. The tree keeps,
for each file, where its bytes are (layer, offset), never the bytes themselves; once a
sink has a dense file's bytes, only their size (StreamedData, one object per size).

Entries below a symlink go where it leads, as a runtime writes them: at once for a symlink
of the same layer; for a lower layer's, when that layer is read (what upper layers wrote
below the directory they left implicit moves, merged by layer order). Where an upper layer
deleted or replaced that path, what a layer below it wrote there waits in a limbo until a
lower layer says what the path was for it: a symlink moves it too (its data is read again
then, a cost only that case pays), anything else and it is gone. Whiteouts and opaque
markers below a symlink delete where it leads, the same way: when the symlink's layer is
read, what it and the layers between put there goes, and the layers below lose it. Two
orders no tar writer makes are refused, as no runtime would unpack them the same: a layer
that writes below a lower layer's non-directory it never makes a directory (ENOTDIR), and
one that writes below a lower layer's symlink and then lists or deletes that path itself.

Hardlinks name a path in the same layer or a lower one. One that points down is left as
a placeholder until the lower entry arrives; one whose target an upper layer hid is
served by reading its layer a second time, which only that rare case pays for. A
self-link, a cycle of links and a link to a directory are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from oci2vm.errors import EntryError, Oci2vmError
from oci2vm.image.blobs import BlobStore, ProgressFn, short
from oci2vm.image.model import Image, Layer
from oci2vm.layers import acl, tarstream
from oci2vm.layers.decompress import LayerStream, decompressed
from oci2vm.layers.pathtable import PathDict
from oci2vm.layers.tarstream import Member, TarReader
from oci2vm.tree.columns import Store
from oci2vm.tree.model import (
    NO_ID,
    NO_XATTRS,
    BytesReader,
    DataReader,
    FileSink,
    Inode,
    Kind,
    LayerData,
    StreamedData,
    Tree,
    new_dir,
)
from oci2vm.util.gcpause import cycle_collection_paused
from oci2vm.util.text import shown

log = logging.getLogger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CAPTURE_LIMIT = 256 << 10

# Small files read into memory during the pass, for inspection and OS preparation.
CaptureFn = Callable[[str], bool]


def default_capture(path: str) -> bool:
    # /usr/etc: where an image whose /etc links to usr/etc keeps it (files that escape the
    # capture are read back from the filesystem by a build, but `inspect` has none).
    return path.startswith(("/etc/", "/usr/etc/")) or path in (
        "/usr/lib/os-release",
        "/lib/os-release",
    )


# Linux's PATH_MAX, the terminating NUL included: no runtime can unpack (or a program open)
# a longer path, and a bound on a path's depth bounds the work per entry.
PATH_MAX = 4096


def split_path(name: str, what: str, entry: str | None = None) -> list[str]:
    """Normalize a tar member name to path components, rejecting any that would
    leave the root ('..' climbing above it) or be longer than PATH_MAX. Leading '/' and
    './' are ignored, as Docker and containerd do. `entry`: the member's own name when
    `name` is its hardlink target."""
    parts = _walk([], name, clamp=False)
    if parts is None:
        if entry is not None:
            raise Oci2vmError(
                f"{what}: hardlink {entry!r} points to {name!r}, which escapes the image root"
            )
        raise Oci2vmError(f"{what}: entry {name!r} escapes the image root")
    if len(name) >= PATH_MAX // 4:  # (the bytes of a long one, only)
        length = sum(len(part.encode("utf-8", "surrogateescape")) + 1 for part in parts)
        if length >= PATH_MAX:
            raise Oci2vmError(
                f"{what}: entry {shown(repr(name), 80)} has a path of {length} bytes; Linux's "
                f"PATH_MAX allows {PATH_MAX - 1}, and no container runtime unpacks it"
            )
    return parts


def _walk(parts: list[str], name: str, clamp: bool) -> list[str] | None:
    """`parts` followed by the components of the path `name` ('.' and empty ones
    skipped, '..' going up): None when '..' climbs above the root, unless `clamp`
    keeps it there (as a symlink inside the root is resolved)."""
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
        elif parts:
            parts.pop()
        elif not clamp:
            return None
    return parts


def _expand(stored: bytes, regions: tuple[tuple[int, int], ...], size: int) -> bytes:
    """A sparse file's content: its stored bytes (the regions back to back) in place."""
    content = bytearray(size)
    at = 0
    for offset, length in regions:
        content[offset : offset + length] = stored[at : at + length]
        at += length
    return bytes(content)


def _what(index: int, layer: Layer) -> str:
    """A layer as messages name it; a root filesystem tarball (tar:), by its file."""
    if layer.rootfs:
        return str(layer.blob.path)
    return f"layer {index + 1}" + (f" ({short(layer.digest)})" if layer.digest else "")


def _join(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def _under(base: str, name: str) -> str:
    """The path of `name` in the directory at `base` (the root is '/')."""
    return f"{base.rstrip('/')}/{name}"


def _limbo_entries(node: Inode, path: str) -> Iterator[tuple[str, Inode]]:
    """The entries a layer listed below the limbo directory `node` (at `path`), with their
    paths: not the directories made for them. (Trees may be deep: no recursion here, nor
    in the other walks of this module.)"""
    stack = [(path, iter((node.children or {}).items()))]
    while stack:
        base, items = stack[-1]
        for name, child in items:
            at = _under(base, name)
            if child.layer >= 0:
                yield at, child
            if child.children is not None:
                stack.append((at, iter(child.children.items())))
                break
        else:
            stack.pop()


def _rebased(path: str, old: str, new: str) -> str | None:
    """`path`, strictly below directory `old`, as the same place below `new`; else None."""
    base = old.rstrip("/") + "/"
    return _under(new, path[len(base) :]) if path.startswith(base) else None


def _own_link(path: str, p: _Pass, hidden: bool = True) -> Inode | None:
    """A symlink this layer wrote at `path` that is not in the tree: upper layers'
    directory holds its place until the layer ends, or (with `hidden`, for this layer's
    own entries) an upper layer's entry hides it."""
    link = p.symlinked.get(path) if p.symlinked else None
    if link is None and hidden and p.hidden:
        link = p.hidden.get(path)
    return link if link is not None and link.kind is Kind.SYMLINK else None


def _through_below(parts: list[str], depth: int, ancestor: str, p: _Pass) -> None:
    """Where upper layers hide `ancestor` (parts[:depth]), a symlink this layer wrote
    deeper on the path still leads the entry elsewhere, as it did when a runtime unpacked
    the layer: _Through at the first one."""
    if not (p.symlinked or p.hidden):
        return
    for deeper in range(depth + 1, len(parts)):
        ancestor = f"{ancestor}/{parts[deeper - 1]}"
        link = _own_link(ancestor, p)
        if link is not None:
            raise _Through(deeper, link)


NO_CLAIM = 1 << 62  # an oldest claim where there is none


def _rank(claim: int | None) -> int:
    """A claim as a layer order: an unclaimed (implicit) directory is below every layer."""
    return -1 if claim is None else claim


# Entries a path can go on through: a directory, or a symlink (which _settle weighs).
_PASSABLE = frozenset({Kind.DIR, Kind.SYMLINK})
_USER_XATTR_KINDS = frozenset({Kind.FILE, Kind.DIR})


def _before(claim: int, node: Inode, placeholder: Inode) -> bool:
    """Whether an entry of layer `claim`, `node`, was written before the hardlink that
    `placeholder` stands for: in an older layer, or earlier in the link's own (rows are
    made in the order a layer's entries are read)."""
    return claim < placeholder.layer or (claim == placeholder.layer and node.row < placeholder.row)


def _inode_for(member: Member, layer: int, store: Store | None = None) -> Inode:
    """The metadata of a member as an Inode (without data), in `store`."""
    kind = member.type
    mode, size = member.mode, 0
    target: bytes | None = None
    data: LayerData | None = None
    children: dict[str, Inode] | None = None
    rdev = (0, 0)
    if member.isdir():
        node_kind, children = Kind.DIR, {}
    elif kind == tarstream.SYMLINK:
        node_kind = Kind.SYMLINK
        mode = 0o777  # as the kernel gives every symlink, whatever the header says
        target = member.linkname.encode("utf-8", "surrogateescape")
        size = len(target)
    elif kind in (tarstream.CHAR, tarstream.BLOCKDEV):
        node_kind = Kind.CHAR if kind == tarstream.CHAR else Kind.BLOCK
        rdev = (member.devmajor, member.devminor)
    elif kind == tarstream.FIFO:
        node_kind = Kind.FIFO
    elif member.isfile():
        node_kind, size = Kind.FILE, member.size
        sparse = None
        if member.sparse is not None:
            sparse = tuple((o, n) for o, n in member.sparse if n)
            if sum(n for _o, n in sparse) != member.stored:
                raise Oci2vmError(f"{member.name!r}: sparse map does not match its data")
        if member.stored:
            data = LayerData(layer, member.offset_data, member.stored, sparse)
    else:
        raise Oci2vmError(f"unsupported tar entry type {member.type!r} for {member.name!r}")
    xattrs = _xattrs_kept(member, node_kind, mode) if member.xattrs else NO_XATTRS
    return Inode(
        node_kind,
        mode=mode,
        uid=_owner(member.uid),
        gid=_owner(member.gid),
        mtime_ns=member.mtime_ns,
        atime_ns=member.atime_ns,
        ctime_ns=member.ctime_ns,
        size=size,
        xattrs=xattrs,
        target=target,
        rdev_major=rdev[0],
        rdev_minor=rdev[1],
        data=data,
        children=children,
        layer=layer,
        store=store,
    )


def _xattrs_kept(member: Member, kind: Kind, mode: int) -> Mapping[str, bytes]:
    """A member's xattrs (it has some) as Linux keeps them on an entry of `kind` and
    `mode`."""
    xattrs: Mapping[str, bytes] = member.xattrs
    if kind not in _USER_XATTR_KINDS:
        # Linux keeps user.* attributes on files and directories only (xattr(7)); on
        # anything else containerd ignores them when it unpacks a layer, and so do we.
        xattrs = {k: v for k, v in xattrs.items() if not k.startswith("user.")} or NO_XATTRS
    if acl.ACCESS in xattrs or acl.DEFAULT in xattrs:
        settled = dict(xattrs)
        if kind is Kind.SYMLINK:  # (no ACLs on a symlink: containerd goes on without)
            settled.pop(acl.ACCESS, None)
            settled.pop(acl.DEFAULT, None)
        else:
            acl.settle(settled, mode, directory=kind is Kind.DIR, what=repr(member.name))
        xattrs = settled or NO_XATTRS
    return xattrs


def _owner(number: int) -> int:
    """An owner id as a runtime unpacking as root leaves it: (uid_t)-1 is chown(2)'s
    "no change", so such a file stays root's."""
    return 0 if number == NO_ID else number


def _adopt(target: Inode, source: Inode) -> None:
    """Copy an entry's metadata onto an existing directory inode (keeping children)."""
    target.mode, target.uid, target.gid = source.mode, source.uid, source.gid
    target.mtime_ns, target.atime_ns, target.ctime_ns = (
        source.mtime_ns,
        source.atime_ns,
        source.ctime_ns,
    )
    target.xattrs = source.xattrs
    target.layer = source.layer


class _Slice:
    """A DataReader over the next `size` bytes of a layer stream."""

    def __init__(self, stream: LayerStream, size: int) -> None:
        self._stream = stream
        self._left = size

    def view(self, size: int) -> memoryview:
        size = min(size, self._left)
        if size <= 0:
            return memoryview(b"")
        piece = self._stream.view(size)
        if not piece:
            raise Oci2vmError("layer ended early while reading it again")
        self._left -= len(piece)
        return piece


@dataclass(slots=True)
class _Pass:
    """The reading of one layer: what it needs beyond the tree, and what it leaves for the
    layers below it."""

    index: int
    what: str
    # This layer's entries that are not in the tree (hidden by upper layers), for this
    # layer's hardlinks that name them; visible ones are found in the tree.
    hidden: dict[str, Inode] = field(default_factory=dict)
    # ... its directories, for _Flattener.dir_listed (directories upper layers listed
    # that newer ones hide, by path, with the oldest such layer: what replaced a lower
    # layer's symlink there first, see _hidden_after).
    hidden_dirs: set[str] = field(default_factory=set)
    # Paths whose whole subtree the layers below lose: whiteouts, and non-directories
    # that are not in the tree (an upper layer's directory or this layer's own later
    # directory replaced them; a visible non-directory blocks what is below it by itself).
    masks: set[str] = field(default_factory=set)
    opaques: set[str] = field(default_factory=set)  # the directories they empty
    # Its whiteouts' and opaque markers' directories, with which of the directories on
    # their way it had listed when it wrote them (None: a non-directory, so they reach
    # nothing below).
    markers: list[tuple[list[str], tuple[bool, ...] | None]] = field(default_factory=list)
    # Hardlinks to a path this layer had not listed before them: the layers below
    # provide the target (as a runtime links to what is there when it reaches the link).
    forward: dict[str, Inode] = field(default_factory=dict)
    # Entries at paths upper layers' hardlinks wait for: the last one is the target.
    arrived: PathDict[str, Inode] = field(default_factory=PathDict)
    # Inodes are kept, not their id()s, which a dropped inode would hand on to a new one.
    implicit: set[Inode] = field(default_factory=set)  # directories made for it
    adopted: set[Inode] = field(default_factory=set)  # upper ones its entries gave metadata
    # Its last entries at paths upper whiteouts pass (with their rank in the layer), and
    # the rank of its last non-directory at each path (kept while whiteouts pass any).
    settling: dict[str, tuple[int, Inode]] = field(default_factory=dict)
    settling_late: dict[str, Inode] = field(default_factory=dict)  # (see _settle_late)
    cleared: dict[str, int] = field(default_factory=dict)
    rank: int = 0
    # Upper layers' directories that this layer's last entry there makes a symlink: what
    # upper layers wrote below goes where the symlink leads (see _Flattener._relocate).
    symlinked: dict[str, Inode] = field(default_factory=dict)
    # Those its last entry there makes another non-directory: a runtime applying the upper
    # layers' entries below fails (not a directory), and so does the build.
    filed: dict[str, Inode] = field(default_factory=dict)
    # Its last entries at paths an upper layer listed after writing below them (see
    # _Flattener.relisted): what each was for that layer.
    relisted: dict[str, Inode] = field(default_factory=dict)
    # The directories on the way to the lower targets of its hardlinks (as they are for
    # its entries below a path: see _Flattener.relisted).
    below_links: set[str] = field(default_factory=set)
    # Its symlinks that upper layers' whiteouts reached through, with the oldest layer
    # whose whiteouts no longer did (see _Flattener._settle).
    reaching: dict[str, tuple[Inode, int]] = field(default_factory=dict)
    # The symlinks it wrote last at their paths, with their ranks, and the rank of its
    # first entry below each directory it left implicit (in the tree or a limbo): kept
    # by the flattener for the layers below when it left any (see _Flattener._own_path).
    link_ranks: dict[str, tuple[int, Inode]] = field(default_factory=dict)
    implicit_ranks: dict[str, int] = field(default_factory=dict)


class _Through(Exception):  # noqa: N818 (a signal to follow a symlink, not an error)
    """An entry's path passes through a symlink this layer wrote (internal)."""

    def __init__(self, depth: int, link: Inode) -> None:
        self.depth = depth  # the symlink is parts[depth - 1]
        self.link = link


MAX_SYMLINKS = 40  # as the kernel's path walk (ELOOP)


def follow(parts: list[str], depth: int, target: bytes | None, what: str) -> list[str]:
    """The path `parts` with its first `depth` components, a symlink, replaced by where
    the symlink leads: inside the root, as a runtime resolves it when it unpacks a layer
    (an absolute target starts at the image root, '..' stops there)."""
    text = (target or b"").decode("utf-8", "surrogateescape")
    if not text:
        raise Oci2vmError(f"{what}: symlink {_join(parts[:depth])!r} has an empty target")
    resolved = _walk([] if text.startswith("/") else parts[: depth - 1], text, clamp=True)
    assert resolved is not None
    return resolved + parts[depth:]


@dataclass(slots=True)
class _Waiting:
    """A placeholder inode that stands for a hardlink target not read yet."""

    target: str
    link: str  # the first hardlink that named it, for messages
    what: str  # its layer, for messages
    paths: list[str] = field(default_factory=list)  # where it stands in the tree


class _Flattener:
    def __init__(
        self,
        image: Image,
        sink: FileSink | None,
        capture: CaptureFn,
        progress: Callable[[int, Layer], ProgressFn | None] | None,
        store: BlobStore | None,
        implicit_mtime_ns: int,
    ) -> None:
        self.image = image
        self.store = store
        self.implicit_mtime_ns = implicit_mtime_ns
        self.sink, self.capture, self.progress = sink, capture, progress
        self.rows = Store()  # the tree's (tree/columns.py)
        self.tree = Tree(new_dir(mtime_ns=implicit_mtime_ns, store=self.rows))
        self.root_layer: int | None = None  # the layer whose entry for '/' applies
        # A path is claimed by the layer whose entry is there: the inode's own `layer`
        # (an implicit directory, layer -1, is unclaimed: a lower layer's entry may still
        # set its metadata). Kept on the inodes, not in a dict of paths, as the tree holds
        # every entry. The exception: a hardlink whose target a lower layer provides holds
        # that layer's inode; its path is claimed by the link's layer, noted here.
        self.link_claims: PathDict[str, int] = PathDict()
        # What upper layers hide from lower ones, with the lowest layer that hides it:
        # subtrees (whiteouts, replaced non-directories) and opaque directories' contents.
        self.hidden: PathDict[str, int] = PathDict()
        self.opaque: PathDict[str, int] = PathDict()
        # ... and the newest layer that hides it (entries moved through a symlink are hidden
        # by a newer one only: see _relocate).
        self.hidden_newest: PathDict[str, int] = PathDict()
        self.opaque_newest: PathDict[str, int] = PathDict()
        # Directories that an upper layer's whiteout reaches through, not yet settled by
        # a lower entry: path -> (the oldest such layer, its name).
        self.open: dict[str, tuple[int, str]] = {}
        self.open_late: dict[str, tuple[int, str]] = {}  # ... listed after (see _open)
        # The _Pass.link_ranks and implicit_ranks of the layers that left a directory
        # implicit, by (path, layer): whether a layer wrote a symlink before what it wrote
        # below a lower layer's symlink that leads through it (see _own_path), whatever
        # newer layers did with the symlink since.
        self.link_ranks: dict[tuple[str, int], tuple[int, Inode]] = {}
        self.implicit_ranks: dict[tuple[str, int], int] = {}
        # Hardlink targets that upper layers wait for: target path -> placeholder.
        self.pending: PathDict[str, Inode] = PathDict()
        self.waiting: dict[Inode, _Waiting] = {}  # placeholder -> what it stands for
        self.standing: PathDict[str, set[Inode]] = PathDict()  # path -> those there
        # Placeholders whose target a layer deleted: only an entry of that layer or a newer
        # one may still come to that path (moved there through a lower layer's symlink);
        # one from below it is an error: (the deleting layer, the message).
        self.doomed: dict[Inode, tuple[int, str]] = {}
        # Links to lower files once resolved: target path -> (their placeholder, their
        # paths, the file). A layer's entry that a lower symlink moves onto the target
        # later, written before the links, is what they met (see _merge).
        self.resolved: dict[str, list[tuple[Inode, list[str], Inode]]] = {}
        # Non-directories that an upper layer's entry hid, or a later entry of their own
        # layer replaced, while hardlinks waited: a lower layer's symlink may yet take
        # their path to a link's target, which then is the newest of them written before
        # the link (see _arrived_in): path -> [(the entry's layer, the entry)].
        self.lost: PathDict[str, list[tuple[int, Inode]]] = PathDict()
        # Sparse files whose data reached the sink (the inodes, not their id()s: one that a
        # layer's later entry replaced may be dropped, and its id() reused); a dense one's
        # data is StreamedData once delivered (see _deliver).
        self.delivered: set[Inode] = set()
        self.deferred: list[Inode] = []  # this layer: data needed after it streamed by
        # Entries written below a path that upper layers replaced or deleted, where the
        # writing layer had not said what the path was: a layer below says (see _limbo_depth).
        # (path, the writing layer) -> a directory standing for the path in its view.
        self.limbo: PathDict[tuple[str, int], Inode] = PathDict()
        # Placeholders of links to lower files that limbos hold (put there unresolved: the
        # tree's paths a resolved link is put at are not in a limbo).
        self.limbo_links: set[Inode] = set()
        self.rereads: dict[int, list[Inode]] = {}  # files moved out of it: data to read
        # Directories upper layers listed, below which layers wrote without listing them
        # (what they were for those, a layer below says): path -> those layers.
        self.below_listed: dict[str, set[int]] = {}
        # The directories _parent() found last, by path: a layer lists a directory's
        # entries together. Emptied with each layer and whenever an entry is replaced or
        # removed (a directory on a cached path may have gone with it).
        self.parents: dict[str, Inode] = {}
        self.dir_listed: dict[str, int] = {}  # hidden upper dirs -> the oldest layer's
        self.relisted: dict[str, tuple[int, str]] = {}  # see _check_relisted

    # --- the tree ------------------------------------------------------------------

    def _parent(self, parts: list[str], path: str, p: _Pass) -> Inode | int:
        """The directory that holds parts[-1] (whose path is `path`), creating implicit
        parents. Where an upper layer hides the entry's directory: how many components of
        the path name what it deleted or replaced (see _limbo_key)."""
        where = path[: path.rfind("/")]
        cached = self.parents.get(where)
        if cached is not None:
            return cached
        node = self.tree.root
        opaque_root = "/" in self.opaque  # (this layer's symlinks are followed all the same)
        masks = self.hidden or self.opaque  # empty for the top layer
        ancestor = ""
        for depth, part in enumerate(parts[:-1], 1):
            ancestor = f"{ancestor}/{part}"
            if p.symlinked or p.hidden:  # (followed whatever upper layers hide)
                link = _own_link(ancestor, p)
                if link is not None:
                    raise _Through(depth, link)
            if opaque_root:
                continue
            kids = node.children
            assert kids is not None
            child = kids.get(part)
            if masks and (ancestor in self.hidden or ancestor in self.opaque):
                if (
                    child is not None
                    and child.kind is Kind.SYMLINK
                    and self._claim(child, ancestor) == p.index
                ):  # this layer's own symlink, where an upper layer's marker goes through
                    raise _Through(depth, child)
                _through_below(parts, depth, ancestor, p)
                return depth if ancestor in self.hidden else depth + 1
            if child is None:
                child = new_dir(mtime_ns=self.implicit_mtime_ns, store=self.rows)
                kids[part] = child
                p.implicit.add(child)
                p.implicit_ranks.setdefault(ancestor, p.rank + 1)  # (the entry's)
            elif child.kind is not Kind.DIR:
                claim = self._claim(child, ancestor)
                if claim == p.index and child.kind is Kind.SYMLINK:
                    raise _Through(depth, child)
                if claim is None or claim == p.index:
                    raise Oci2vmError(
                        f"{p.what}: entry {path!r} passes through {child.kind} {ancestor!r}"
                    )
                _through_below(parts, depth, ancestor, p)
                return depth  # an upper layer replaced the directory with a non-directory
            elif child.layer > p.index and ancestor not in p.hidden:
                self.below_listed.setdefault(ancestor, set()).add(p.index)  # (see below)
            node = child
        if opaque_root:
            return 1  # (what is in it: the entry's own directory there)
        if len(self.parents) >= 64:
            self.parents.clear()
        self.parents[where] = node
        return node

    def _claim(self, node: Inode | None, path: str) -> int | None:
        """The layer that claimed `path`, where `node` is; None if nothing did."""
        if self.link_claims:
            claim = self.link_claims.get(path)
            if claim is not None:
                return claim
        return None if node is None or node.layer < 0 else node.layer

    def _visible(self, existing: Inode | None, path: str, layer: int) -> bool:
        """Whether upper layers leave `path`, where `existing` is, to `layer`."""
        if path in self.hidden:
            return False
        claim = self._claim(existing, path)
        return claim is None or claim == layer

    def _place(
        self, parent: Inode, name: str, path: str, inode: Inode, existing: Inode | None, p: _Pass
    ) -> bool:
        """Put inode at path, named `name` in `parent` where `existing` is (the entry is
        visible); say whether the path holds it now (a directory merged into one there
        does not)."""
        kids = parent.children
        assert kids is not None
        if p.symlinked and inode.kind is not Kind.SYMLINK:
            p.symlinked.pop(path, None)
        if p.filed:
            p.filed.pop(path, None)
        if existing is not None and existing.kind is Kind.DIR:
            # Made for an upper layer's entries (a directory made for this layer's own is
            # replaced, as a runtime replaces the directory it has just written in), and
            # maybe given its metadata by an entry of this layer listed before.
            upper = existing in p.adopted or (existing.layer < 0 and existing not in p.implicit)
            if inode.kind is Kind.DIR:
                if upper:
                    p.adopted.add(existing)
                _adopt(existing, inode)  # merge: lower or implicit children stay
                return False
            if upper and inode.kind is Kind.SYMLINK:
                # An upper layer wrote below this path, so here it must be a directory
                # when this layer ends (a later entry of it may make it one again), and
                # this layer's entries below it from now on go where the symlink leads.
                p.symlinked[path] = inode
                self.parents.clear()
            if upper and inode.kind is not Kind.SYMLINK:
                p.filed[path] = inode
            if upper:  # an upper layer's directory hides a lower non-directory
                if existing in p.adopted:  # and this layer's directory entry before it
                    p.adopted.discard(existing)
                    _adopt(existing, new_dir(mtime_ns=self.implicit_mtime_ns))
                return False
        elif existing is not None and inode.kind is Kind.DIR:
            p.masks.add(path)  # this layer's own non-directory, listed before, hides below
        if existing is not None:
            self.parents.clear()  # a directory there may be gone
            self._lose(path, self._claim(existing, path), existing, p)
        kids[name] = inode
        return True

    def _at(self, parts: list[str]) -> Inode | None:
        node: Inode | None = self.tree.root
        for part in parts:
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node

    def _same_layer(self, parts: list[str], path: str, p: _Pass) -> Inode | None:
        """The entry this layer has listed so far at `path`, if any."""
        node = self._at(parts)
        if node is not None and self._claim(node, path) == p.index:
            return node
        return p.hidden.get(path)

    def _deleted(self, parts: list[str], p: _Pass) -> bool:
        """Whether what this layer has read so far deletes the path (for what is below)."""
        if "/" in p.opaques:
            return True
        node: Inode | None = self.tree.root
        ancestor = ""
        for i, part in enumerate(parts):
            ancestor = f"{ancestor}/{part}"
            if ancestor in p.masks or (i < len(parts) - 1 and ancestor in p.opaques):
                return True
            if node is not None and node.children is not None:
                node = node.children.get(part)
                if (
                    i < len(parts) - 1
                    and node is not None
                    and node.kind is not Kind.DIR
                    and self._claim(node, ancestor) == p.index
                ):
                    return True  # this layer made a parent a non-directory
        return False

    # --- layers ----------------------------------------------------------------------

    def run(self) -> Tree:
        layers = self.image.layers
        for index in reversed(range(len(layers))):
            self._layer(index, layers[index])
        if self.pending:
            self._missing(*next(iter(self.pending.items())))
        self.tree.diff_ids.reverse()
        self.tree.layer_digests.reverse()
        return self.tree

    def _layer(self, index: int, layer: Layer) -> None:
        what = _what(index, layer)
        progress = self.progress(index, layer) if self.progress else None
        if layer.diff_id is not None and not layer.diff_id.startswith("sha256:"):
            raise Oci2vmError(f"{what}: only sha256 diff_ids are supported")
        # A blob that an earlier run saw inflate to this very diff_id need not be hashed.
        known = (
            layer.diff_id is not None
            and layer.digest is not None
            and self.store is not None
            and self.store.uncompressed_digest(layer.digest) == layer.diff_id
        )
        compressed = layer.blob.open(progress)
        try:
            stream = decompressed(
                compressed,
                layer.media_type,
                what,
                layer.diff_id,
                hash_stream=not known,
                rootfs=layer.rootfs,
            )
        except BaseException:  # an unsupported compression: the reader goes (and its thread)
            compressed.abort()
            raise
        self.deferred = []
        self.parents.clear()  # what hides what changed with the layer above
        p = _Pass(index, what)
        try:
            tar = TarReader(stream, what)
            for member in tar:
                self._member(tar, member, p)
            stream.finish()
        except BaseException:
            stream.abort()
            raise
        if tar.text_acls:
            self.tree.notes.append(
                f"{what}: POSIX ACLs as text (SCHILY.acl.*, tar --acls) on {tar.text_acls} "
                "entries left out, as docker, podman and umoci leave them"
            )
        if tar.unstorable_xattrs:
            names = sorted(tar.unstorable_xattrs)
            listed = ", ".join(shown(n, 60) for n in names[:3])
            listed += f" and {len(names) - 3} more" if len(names) > 3 else ""
            self.tree.notes.append(
                f"{what}: extended attributes Linux does not store ({listed}) on "
                f"{tar.unstorable_entries} entries left out, as umoci and tar "
                "leave them"
            )
        self.tree.diff_ids.append(stream.digest)
        self.tree.layer_digests.append(layer.digest or compressed.computed_digest)
        if not known and self.store is not None and layer.digest and layer.diff_id:
            self.store.remember_uncompressed(layer.digest, stream.digest)
        self._leave(p)
        if self.deferred:
            self._reread(index, self.deferred)
        for earlier in sorted(self.rereads):
            self._reread(earlier, self.rereads.pop(earlier))

    def _leave(self, p: _Pass) -> None:
        """Hand what this layer hides and the links it waits for to the layers below."""
        if self.relisted:
            self._check_relisted(p)
        if p.filed:
            path = min(p.filed)
            raise Oci2vmError(
                f"{p.what}: upper layers write below {path!r}, which is a {p.filed[path].kind} "
                "here that they never make a directory (a runtime fails on them: not a "
                "directory)"
            )
        for path in self._relocations(p):
            self._relocate(path, p)
        for path, (rank, entry) in p.settling.items():  # (a newer directory may have
            self._settle(path, rank, entry, p)  # moved onto a symlink: _relocate)
        if p.reaching:
            self._whiteouts_through(p)
        for path, entry in p.settling_late.items():
            self._settle_late(path, entry, p)
        if self.limbo:
            self._decide_limbo(p)
        if self.below_listed:
            self._check_below_listed(p)
        if self.pending:
            self._repoint(p)
        for target, inode in p.arrived.items():
            placeholder = self.pending.pop(target)
            doom = self.doomed.pop(placeholder, None)
            if doom is not None and inode.layer < doom[0]:
                raise Oci2vmError(doom[1])
            if inode.kind is Kind.DIR:
                link = self.waiting[placeholder].link
                raise Oci2vmError(f"{p.what}: hardlink {link!r} points to directory {target!r}")
            self._resolve(placeholder, inode)
        for target, placeholder in self.pending.items():
            if placeholder not in self.doomed and self._deleted(split_path(target, p.what), p):
                link = self.waiting[placeholder].link
                self.doomed[placeholder] = (
                    p.index,
                    f"hardlink {link!r} points to {target!r}, which {p.what} deletes",
                )
        for target, placeholder in p.forward.items():
            upper = self.pending.get(target)
            if upper is None:
                self.pending[target] = placeholder
            else:  # an upper layer's link waits for the same file
                self._resolve(placeholder, upper)
        if not self.pending:
            self.lost.clear()
        for parents, seen in p.markers:
            self._open(parents, seen, p)
        for path in p.masks:
            self.hidden[path] = p.index
            self.hidden_newest.setdefault(path, p.index)
        for path in p.opaques:
            self.opaque[path] = p.index
            self.opaque_newest.setdefault(path, p.index)
        for path in p.hidden_dirs:  # (layers come newest first: the oldest stays)
            self.dir_listed[path] = p.index
        if p.implicit_ranks:  # (else no lower layer asks for this layer's ranks)
            self.implicit_ranks.update(((k, p.index), r) for k, r in p.implicit_ranks.items())
            self.link_ranks.update(((k, p.index), v) for k, v in p.link_ranks.items())

    def _check_relisted(self, p: _Pass) -> None:
        """What this layer says of the paths in self.relisted (path -> the layer's index
        and name), which a layer listed or deleted after writing or linking below them
        while they were implicit in it; this one says what such a path is when it lists
        it (its last entry there) or deletes it. A runtime wrote the upper layer's entries
        below such a path (and found its hardlinks' targets) through whatever the layers
        below had there, and a symlink would have taken them elsewhere before the entry at
        the path replaced it: the nearest lower layer that says what the path was decides,
        a symlink refused (not supported), anything else leaving the tree as it is."""
        for path, entry in p.relisted.items():
            _index, upper = self.relisted.pop(path)
            if entry.kind is Kind.SYMLINK:
                raise Oci2vmError(
                    f"{upper} writes or links below {path!r} before it lists or deletes that path, "
                    f"where {p.what} has a symlink: entries written through a symlink that "
                    "their own layer replaces afterwards are not supported"
                )
        for path, (index, _upper) in list(self.relisted.items()):
            if index != p.index and self._deleted(split_path(path, p.what), p):
                del self.relisted[path]

    # --- what upper layers wrote below this layer's symlinks ------------------------------

    @staticmethod
    def _relocations(p: _Pass) -> list[str]:
        """The paths of p.symlinked in the order they are relocated: a directory before
        what is below it, and a symlink before those at or below where it leads (upper
        layers' entries that move there may replace them: a newer layer's directory
        where this layer wrote a symlink; a loop of such symlinks keeps path order)."""
        paths = sorted(p.symlinked)
        if len(paths) < 2:
            return paths
        groups: dict[str, list[str]] = {}  # where symlinks lead -> they, in path order
        for path in paths:
            parts = path[1:].split("/")
            target = p.symlinked[path].target
            if target:  # (an empty one fails where it is relocated)
                there = _join(follow(parts, len(parts), target, p.what)).rstrip("/")
                groups.setdefault(there, []).append(path)
        state: dict[str, bool] = {}  # False: being visited; True: placed

        def before(path: str) -> list[str]:
            """The symlinks that lead at or above `path`, but itself and those above or
            below it, in path order; found by the places `path` is at or below (placed
            ones are dropped from their group: each is met once)."""
            found = []
            parts = path.split("/")
            for depth in range(1, len(parts) + 1):
                group = groups.get("/".join(parts[:depth]))
                if not group:
                    continue
                group[:] = [link for link in group if state.get(link) is not True]
                for link in group:  # (one above or below `path` is relocated with it)
                    above = _rebased(path, link, link) is not None
                    if link != path and not above and _rebased(link, path, path) is None:
                        found.append(link)
            return sorted(found)

        order: list[str] = []
        for first in paths:  # a depth-first walk, by a stack of its own (chains are long)
            if first in state:
                continue
            state[first] = False
            stack = [(first, iter(before(first)))]
            while stack:
                path, links = stack[-1]
                for link in links:
                    if link not in state:
                        state[link] = False
                        stack.append((link, iter(before(link))))
                        break
                else:
                    stack.pop()
                    state[path] = True
                    order.append(path)
        return order

    def _relocate(self, path: str, p: _Pass) -> None:
        """This layer's last entry at `path` is a symlink, where upper layers wrote below a
        directory they left implicit. A runtime applying them over this layer writes their
        entries where the symlink leads: they move there, merged with what is there by
        layer order (the newer entry wins, directories merge), and the symlink takes
        `path`. What this layer itself listed below `path` before the symlink is gone."""
        link = p.symlinked.get(path)
        parts = path[1:].split("/")
        holder = self._at(parts[:-1])
        if link is None or holder is None or holder.children is None:
            return  # went with a symlink relocated before (this layer's own entry)
        for limbo in self.limbo.below(path):
            if limbo[1] == p.index:  # this layer's own, written before its symlink: gone
                del self.limbo[limbo]
                continue
            raise Oci2vmError(
                f"{p.what}: upper layers write below {path!r}, which this layer makes a "
                "symlink, and below a path there that other upper layers replace: not supported"
            )
        upper = holder.children.get(parts[-1])
        if upper is None or upper.kind is not Kind.DIR:
            return
        lister = self._claim(upper, path)
        newer = NO_CLAIM  # the layers from this one on keep their entries at `path`
        if lister is not None and lister != p.index:
            # A newer layer's directory moved here (a symlink relocated before) replaced
            # the symlink and what this layer and the layers below put at `path`; the
            # entries of the layers between went where the symlink leads.
            self._two_places(path, lister, p)
            p.symlinked.pop(path)
            p.hidden[path] = link
            p.masks.add(path)
            self._prune(upper, path, p)
            older = self._older_part(upper, path, lister)
            if older is None:
                return
            upper, newer = older, lister
        oldest, newest = self._claims(upper, path)
        after = self.implicit_ranks.get((path, oldest)) if oldest == newest else None
        target = self._leads(path, link, oldest, p, after, newest)
        new = _join(target)
        if newer == NO_CLAIM:
            holder.children[parts[-1]] = link  # (an entry moved onto it may replace it yet)
            p.symlinked.pop(path)
        self.parents.clear()
        if self._move(upper, path, target, oldest, newest, path, p, newer) is None:
            self._forget(path, newer)
        self._rebase(path, new, newer, p)

    def _rebase(self, path: str, new: str, newer: int, p: _Pass) -> None:
        """_relocate(): what the tables note below `path`, for layers older than `newer`,
        is noted below `new`, where the symlink at `path` leads."""
        tables = [(self.hidden, min), (self.opaque, min), (self.link_claims, min)]
        tables += [(self.hidden_newest, max), (self.opaque_newest, max)]
        for table, keep in tables:
            for key in table.below(path):  # (in the table's order, as a scan of it)
                moved = _rebased(key, path, new)
                if moved is not None and table[key] < newer:
                    layer = table.pop(key)
                    table[moved] = keep(layer, table.get(moved, layer))
        for key in p.arrived.below(path):
            del p.arrived[key]  # this layer's own entry, gone with the symlink
        for key in self.lost.below(path):
            moved = _rebased(key, path, new)
            if moved is not None:
                stay = [(k, n) for k, n in self.lost[key] if k >= newer]
                self.lost.setdefault(moved, []).extend(e for e in self.lost[key] if e[0] < newer)
                if stay:
                    self.lost[key] = stay
                else:
                    del self.lost[key]
        standing = {node: None for at in self.standing.below(path) for node in self.standing[at]}
        for placeholder in standing:  # (each one's paths apart: their order is of no matter)
            if placeholder.layer < newer:
                waiting = self.waiting[placeholder]
                self._stand(placeholder, waiting.paths, False)
                waiting.paths = [_rebased(q, path, new) or q for q in waiting.paths]
                self._stand(placeholder, waiting.paths)

    def _stand(self, placeholder: Inode, paths: list[str], there: bool = True) -> None:
        """Note in self.standing that `placeholder` stands at `paths` (all of its
        _Waiting.paths when not `there`: it leaves them)."""
        for path in paths:
            if there:
                self.standing.setdefault(path, set()).add(placeholder)
            elif (nodes := self.standing.get(path)) is not None:
                nodes.discard(placeholder)
                if not nodes:
                    del self.standing[path]

    def _two_places(self, path: str, newer: int, p: _Pass) -> None:
        """Refuse where a layer older than `newer` wrote below `path` through this
        layer's symlink there (a non-directory, which a lower layer's entries at its
        path do not see) and a layer from `newer` on wrote the same path below the
        directory that replaced the symlink: the tree kept only the newer entry."""
        for key in self.hidden.below(path):
            low = self.hidden[key]
            if low >= newer:
                continue
            node = self._at(key[1:].split("/"))
            if node is not None and _rank(self._claim(node, key)) >= newer:
                raise Oci2vmError(
                    f"{p.what}: layer {low + 1} writes {key!r} through this layer's "
                    f"symlink {path!r}, which layer {newer + 1} makes a directory, and a "
                    "newer layer writes it there: not supported"
                )

    def _older_part(self, node: Inode, path: str, newer: int) -> Inode | None:
        """Take out of directory `node` (at `path`) the entries that layers older than
        `newer` claim, in an implicit directory (with those on their way); None if none
        does. A directory such a layer listed goes with its metadata, leaving an implicit
        one for newer entries below it."""
        assert node.children is not None
        # Frames of a depth-first walk: [directory, its path, its entries to come, the
        # part taken out of it so far, the entry whose own part is being taken].
        frames: list[list[Any]] = [[node, path, iter(list(node.children.items())), None, None]]
        done: Inode | None = None  # the part of the frame that ended last
        while frames:
            frame = frames[-1]
            directory, base, items, _, waiting = frame
            if waiting is not None:  # (its newer entries below stay)
                name, child, older = waiting
                moved = done
                if older:
                    moved = moved or new_dir(mtime_ns=self.implicit_mtime_ns, store=self.rows)
                    _adopt(moved, child)
                    _adopt(child, new_dir(mtime_ns=self.implicit_mtime_ns))
                frame[3], frame[4] = self._with_part(frame[3], name, moved), None
            for name, child in items:
                at = _under(base, name)
                claim = self._claim(child, at)
                older = claim is not None and claim < newer
                oldest, newest = self._claims(child, at) if child.children else (NO_CLAIM, -1)
                if newest >= newer:
                    frame[4] = (name, child, older)
                    frames.append([child, at, iter(list(child.children.items())), None, None])
                    break
                if older or oldest < newer:
                    del directory.children[name]
                    frame[3] = self._with_part(frame[3], name, child)
            else:
                done = frames.pop()[3]
        return done

    def _with_part(self, part: Inode | None, name: str, moved: Inode | None) -> Inode | None:
        """_older_part(): `part` with `moved` in it as `name` (made if need be)."""
        if moved is None:
            return part
        if part is None:
            part = new_dir(mtime_ns=self.implicit_mtime_ns, store=self.rows)
        assert part.children is not None
        part.children[name] = moved
        return part

    def _leads(
        self,
        path: str,
        link: Inode,
        oldest: int,
        p: _Pass,
        after: int | None = None,
        newest: int | None = None,
    ) -> list[str]:
        """Where the symlink `link` at `path` leads, for upper layers' entries, the oldest
        from layer `oldest` (`after`: the rank of the first in it, if it is the only), the
        newest from `newest` (if known)."""
        parts = path[1:].split("/")
        target = follow(parts, len(parts), link.target, p.what)
        return self._own_path(target, False, p, upper=oldest, after=after, newest=newest)

    def _move(
        self,
        source: Inode,
        old: str,
        target: list[str],
        oldest: int,
        newest: int,
        path: str,
        p: _Pass,
        newer: int = NO_CLAIM,
    ) -> Inode | None:
        """Move the entries of directory `source` (at `old`), which upper layers from
        `oldest` to `newest` wrote below `path`, to `target`, where this layer's symlink
        at `path` leads; return the directory they went into. None: a newer layer deleted
        or replaced a directory on the way there (a whiteout, a non-directory), so what
        the layers older than it wrote is gone. Layers from `newer` on replaced the
        symlink: what they deleted below `old` stays there."""
        new = _join(target)
        hides, ancestor = self._way_hidden(target, oldest, newest)
        cut = self._way_cut(target) if hides is None else None
        if hides is None and (cut is None or not oldest < cut < newest):
            raise Oci2vmError(
                f"{p.what}: upper layers write below {path!r}, which this layer makes a "
                f"symlink to {new!r}, where {ancestor!r} is deleted or not a directory "
                "for some of them: not supported"
            )
        self._arrived_in(source, old, new, p)
        if hides:
            return None
        # What the layers older than the cut wrote there is gone:
        if cut is not None and (
            self._older_gone(source, old, cut) or self._claims(source, old)[0] == cut
        ):
            raise Oci2vmError(  # (the order of the cut's layer's own entries decides)
                f"{p.what}: layer {cut + 1} deletes on the way to {new!r} and writes below "
                f"{path!r}, which this layer makes a symlink there: not supported"
            )
        into = self.tree.root
        for part in target:
            kids = into.children
            assert kids is not None
            child = kids.get(part)
            if child is None:  # made for the upper layers' entries
                child = kids[part] = new_dir(mtime_ns=self.implicit_mtime_ns, store=self.rows)
            into = child
        # Upper layers' non-directories below `old` that newer ones hid there ended what
        # older layers had put where they now lead.
        for key in self.hidden_newest.below(old):
            now, hider = _rebased(key, old, new), self.hidden_newest[key]
            if now is not None and hider < newer:
                self._prune_older(now, hider)
        for key in self.opaque_newest.at_or_below(old):  # (an opaque `old` too)
            now = new if key == old else _rebased(key, old, new)
            hider = self.opaque_newest[key]
            if now is not None and hider < newer:
                self._prune_inside(now, hider)
        self._merge(source, into, old, new, p)
        self._arrived_below(new, p)
        self.parents.clear()
        return into

    def _merge(self, source: Inode, into: Inode, old: str, new: str, p: _Pass) -> None:
        """Move the entries of directory `source` (at `old`) into directory `into` (at
        `new`), where the newer of two entries at one path stays."""
        assert source.children is not None
        # A depth-first walk, by a stack of its own: (entries to come, the directory they
        # go into, their directory's path and its new one).
        stack = [(iter(list(source.children.items())), into, old, new)]
        while stack:
            items, into, old, new = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                continue
            name, entry = item
            kids = into.children
            assert kids is not None
            was, now = _under(old, name), _under(new, name)
            if entry in p.adopted:  # this layer's directory entry went with the symlink
                p.adopted.discard(entry)
                _adopt(entry, new_dir(mtime_ns=self.implicit_mtime_ns))
            elif entry in p.implicit or self._claim(entry, was) == p.index:
                self._forget(was)  # this layer's own entry, gone with the symlink
                continue
            mine = _rank(self._claim(entry, was))
            there = kids.get(name)
            theirs = -1 if there is None else _rank(self._claim(there, now))
            if self._deleted_there(entry, was, mine, there, now, theirs, p):
                continue
            if there is None:
                kids[name] = entry
                continue
            if entry.kind is Kind.DIR and there.kind is Kind.DIR:
                if mine > theirs:
                    _adopt(there, entry)
                assert entry.children is not None
                stack.append((iter(list(entry.children.items())), there, was, now))
                continue
            newer, older = (entry, there) if mine > theirs else (there, entry)
            newer_rank, older_at = max(mine, theirs), (now if mine > theirs else was)
            if mine == theirs or self._claims(older, older_at)[1] > newer_rank:
                raise Oci2vmError(
                    f"{p.what}: upper layers write both {was.replace(chr(0), '')!r} and "
                    f"{now!r}, which this layer's symlink makes one path: not supported"
                )
            self._forget(older_at)
            kids[name] = newer
            if newer is entry and now in self.resolved:
                self._repoint_resolved(now, there, entry, mine)
            if older.kind is not Kind.DIR:  # it ended what the layers below put there
                rank = min(mine, theirs)
                self.hidden[now] = min(rank, self.hidden.get(now, rank))
                self.hidden_newest[now] = max(rank, self.hidden_newest.get(now, rank))
                # This layer's entries there (written before its symlink moved these) too.
                self._prune_older(now, rank)

    def _repoint_resolved(self, path: str, old: Inode, new: Inode, rank: int) -> None:
        """Links written after `new` (of layer `rank`) that were given `old`, the entry
        at `path` then, share `new`, which a lower symlink moved there: a runtime applying
        their layer found it there."""
        records = self.resolved[path]
        for number, (placeholder, paths, inode) in enumerate(records):
            if inode == old and _before(rank, new, placeholder):
                for link in paths:
                    self._replace_at(link, old, new)
                records[number] = (placeholder, paths, new)

    def _replace_at(self, path: str, old: Inode, new: Inode) -> bool:
        """Put `new` at `path` where the tree has `old` there; say whether it did."""
        parts = path.strip("/").split("/")
        parent = self._at(parts[:-1])
        if parent is None or not parent.children or parent.children.get(parts[-1]) != old:
            return False
        parent.children[parts[-1]] = new
        self.parents.clear()
        return True

    def _prune_older(self, path: str, hider: int) -> None:
        """Take out of the tree what layers older than `hider` put at and below `path`
        (a directory that holds newer entries stays for them, as an implicit one)."""
        parts = path[1:].split("/")
        parent = self._at(parts[:-1])
        node = parent.children.get(parts[-1]) if parent and parent.children else None
        if parent is not None and node is not None and self._older_gone(node, path, hider):
            assert parent.children is not None
            del parent.children[parts[-1]]
            self.parents.clear()

    def _prune_inside(self, path: str, hider: int) -> None:
        """_prune_older() below the directory at `path`, which layer `hider` made opaque."""
        node = self._at(path[1:].split("/")) if path != "/" else self.tree.root
        for name in list(node.children or {}) if node is not None else []:
            self._prune_older(_under(path, name), hider)

    def _older_gone(self, node: Inode, path: str, hider: int) -> bool:
        """_prune_older() below `node` (at `path`); say whether `node` goes too."""
        found: list[tuple[Inode, str, Inode, str]] = []  # parents before children
        stack = [(node, path)]
        while stack:
            directory, base = stack.pop()
            for name, child in (directory.children or {}).items():
                at = _under(base, name)
                found.append((directory, name, child, at))
                if child.children:
                    stack.append((child, at))
        for directory, name, child, at in reversed(found):  # (children first)
            if self._gone(child, at, hider):
                assert directory.children is not None
                del directory.children[name]
        return self._gone(node, path, hider)

    def _gone(self, node: Inode, path: str, hider: int) -> bool:
        """Whether `node` (at `path`), older than layer `hider`, goes once what is below it
        was pruned: a directory that still holds newer entries stays, as an implicit one."""
        if _rank(self._claim(node, path)) >= hider:
            return False
        if node.children:
            _adopt(node, new_dir(mtime_ns=self.implicit_mtime_ns))
            return False
        self._forget(path)
        return True

    def _arrived_below(self, new: str, p: _Pass) -> None:
        """Upper layers' hardlinks that wait for a path below `new` get what moved there
        from a layer between this one and theirs (this layer's entry there is older)."""
        for target in self.pending.below(new):
            placeholder = self.pending[target]
            node = self._at(target[1:].split("/"))
            if node is not None and p.index < _rank(self._claim(node, target)) < placeholder.layer:
                p.arrived[target] = node

    def _deleted_there(
        self,
        entry: Inode,
        was: str,
        mine: int,
        there: Inode | None,
        now: str,
        theirs: int,
        p: _Pass,
    ) -> bool:
        """Whether a newer layer deleted or replaced `now` (where `there` is, of layer
        `theirs`), to which upper layers' `entry` (of layer `mine`) moves from `was`,
        before the entry's layer wrote it: then it is dropped; what
        is in it is when a newer opaque marker hid that. Refused when which of the
        entries below a deletion hid is not known."""
        hidden, opaque = self.hidden_newest.get(now), self.opaque_newest.get(now)
        if hidden is None and opaque is None:
            return False
        if hidden is not None:
            oldest, newest = self._claims(entry, was)
            if mine >= 0:
                oldest, newest = min(oldest, mine), max(newest, mine)
            cut = -1 if there is None or there.kind is Kind.DIR else theirs
            if newest < max(hidden, cut):
                self._forget(was)  # a newer layer deleted or replaced it
                return True
            # A whiteout leaves its own layer's entries (the oldest here): only a layer's
            # non-directory there, as new as them, leaves their order unknown.
            if hidden > oldest or (hidden == oldest and cut >= hidden):
                self._not_known(was, now, p)
        if opaque is not None and entry.children:
            oldest, newest = self._claims(entry, was)
            if newest < opaque:  # a newer layer's opaque marker hid what was in it
                for child in list(entry.children):
                    self._forget(_under(was, child))
                entry.children = {}
            elif opaque >= oldest:
                self._not_known(was, now, p)
        return False

    @staticmethod
    def _not_known(was: str, now: str, p: _Pass) -> None:
        raise Oci2vmError(
            f"{p.what}: an upper layer writes {was.replace(chr(0), '')!r} through this "
            f"layer's symlink, to {now!r}, which other upper layers delete: not supported"
        )

    def _claims(self, node: Inode, path: str) -> tuple[int, int]:
        """The oldest and the newest layer that claim an entry below `node` (at `path`):
        (NO_CLAIM, -1) if none does."""
        oldest, newest, stack = NO_CLAIM, -1, [(node, path)]
        while stack:
            directory, base = stack.pop()
            for name, child in (directory.children or {}).items():
                at = _under(base, name)
                claim = self._claim(child, at)
                if claim is not None:
                    oldest, newest = min(oldest, claim), max(newest, claim)
                if child.children:
                    stack.append((child, at))
        return oldest, newest

    def _way_hidden(self, target: list[str], oldest: int, newest: int) -> tuple[bool | None, str]:
        """_hides() for what upper layers from `oldest` to `newest` put below each
        directory on the way to `target`, the root first (an opaque root hides all): the
        first outcome that is not False, and the path it is at."""
        node: Inode | None = self.tree.root
        for depth in range(len(target) + 1):
            if depth:
                kids = node.children if node is not None else None
                node = kids.get(target[depth - 1]) if kids is not None else None
            ancestor = _join(target[:depth])
            hides = self._hides(ancestor, node, oldest, newest)
            if hides is not False:
                return hides, ancestor
        return False, _join(target)

    def _way_cut(self, target: list[str]) -> int | None:
        """The newest layer that deleted a directory on the way to `target` or what is in
        it (a whiteout, an opaque marker, a non-directory replaced): what older layers put
        below `target` is gone, what newer ones put there stays. None where a
        non-directory is on the way (whether it came before or after them is not known)."""
        node: Inode | None = self.tree.root
        cut = None
        for depth in range(len(target) + 1):
            if depth:
                kids = node.children if node is not None else None
                node = kids.get(target[depth - 1]) if kids is not None else None
                if node is not None and node.kind is not Kind.DIR:
                    return None
            ancestor = _join(target[:depth])
            for mark in (self.hidden_newest.get(ancestor), self.opaque_newest.get(ancestor)):
                if mark is not None and (cut is None or mark > cut):
                    cut = mark
        return cut

    def _hides(self, path: str, node: Inode | None, oldest: int, newest: int) -> bool | None:
        """Whether what upper layers from `oldest` to `newest` put below `path` (where
        `node` is) is gone: True when a newer layer deleted it (a whiteout or opaque
        marker) or made `path` a non-directory (the same layer too: it can only have
        come after them); False when no layer as new as the oldest of them did; None
        when some of them are gone, or which is not known (one layer both deletes there
        and writes through the symlink: their order decides)."""
        replaced = node is not None and node.kind is not Kind.DIR
        if node is not None and replaced:
            claim = _rank(self._claim(node, path))
            if newest < claim:
                return True
            if newest == claim:
                # The newest of them made `path` a non-directory: after them, unless it is
                # a symlink, which that layer may have written first and then followed.
                return None if node.kind is Kind.SYMLINK else True
        marks = (self.hidden_newest.get(path), self.opaque_newest.get(path))
        hider = max((m for m in marks if m is not None), default=-1)
        if hider > newest:
            return True
        if replaced or oldest <= hider:
            return None
        return False

    def _forget(self, path: str, newer: int = NO_CLAIM) -> None:
        """Drop the claims of hardlinks at and below `path`, whose entries are gone (of
        layers older than `newer`)."""
        if self.link_claims:
            for key in self.link_claims.at_or_below(path):
                if self.link_claims[key] < newer:
                    del self.link_claims[key]

    def _own_path(
        self,
        parts: list[str],
        keep_last: bool,
        p: _Pass,
        upper: int | None = None,
        after: int | None = None,
        newest: int | None = None,
    ) -> list[str]:
        """`parts` with the symlinks this layer wrote along it followed (but the last
        component's when `keep_last`): where a runtime applying this layer reaches, or
        with `upper`, where upper layers from `upper` up reach: they meet none that an
        upper layer hides (but, where the newest of them is `newest`, one that only a
        layer newer than it hides: all met it), and also follow the tree's symlinks of
        the layers between (older than `upper`: each of them found such a symlink there),
        and those of layer `upper` itself ranked before `after` (it wrote them before
        its entries)."""
        for _ in range(MAX_SYMLINKS):
            node: Inode | None = self.tree.root
            for depth in range(1, len(parts) + (0 if keep_last else 1)):
                ancestor = _join(parts[:depth])
                link = _own_link(ancestor, p, hidden=upper is None)
                if link is None and upper is not None and newest is not None:
                    link = self._hidden_after(ancestor, upper, newest, p)
                if link is None and upper is not None and after is not None:
                    own = self.link_ranks.get((ancestor, upper))
                    link = own[1] if own is not None and own[0] < after else None
                if link is None:
                    kids = node.children if node is not None else None
                    node = kids.get(parts[depth - 1]) if kids is not None else None
                    if node is None or node.kind is not Kind.SYMLINK:
                        continue
                    claim = self._claim(node, ancestor)
                    between = upper is not None and claim is not None and claim < upper
                    if claim != p.index and not between:
                        continue
                    link = node
                parts = follow(parts, depth, link.target, p.what)
                break
            else:
                return parts
        raise Oci2vmError(f"{p.what}: too many levels of symbolic links in {_join(parts)!r}")

    def _hidden_after(self, path: str, oldest: int, newest: int, p: _Pass) -> Inode | None:
        """This layer's symlink at `path` that upper layers hide, if only layers newer
        than `newest` do (replace it, list a directory there, delete it or a directory
        above it): the layers from `oldest` to `newest` found it there. One that a layer
        between them hides is refused (some of them met it, the others did not)."""
        link = p.hidden.get(path)
        if link is None or link.kind is not Kind.SYMLINK:
            return None
        parts = path[1:].split("/")
        hiders = [self.dir_listed.get(path), self.hidden.get(path)]
        node = self._at(parts)
        hiders.append(None if node is None else self._claim(node, path))
        for depth in range(1, len(parts)):
            ancestor = _join(parts[:depth])
            hiders += [self.hidden.get(ancestor), self.opaque.get(ancestor)]
        found = [hider for hider in hiders if hider is not None and hider > p.index]
        if not found or min(found) <= oldest:
            return None
        if min(found) <= newest:
            raise Oci2vmError(
                f"{p.what}: upper layers write through {path!r}, this layer's symlink, which "
                f"layer {min(found) + 1} replaces or deletes between them: not supported"
            )
        return link

    def _repoint(self, p: _Pass) -> None:
        """Hardlinks of upper layers whose target's path passes through a symlink of this
        layer name the file where the symlink leads (which this layer may hold)."""
        for target in list(self.pending):
            parts = split_path(target, p.what)
            resolved = _join(self._own_path(parts, True, p, upper=p.index + 1))
            if resolved == target:
                continue
            placeholder = self.pending.pop(target)
            self.waiting[placeholder].target = resolved
            p.arrived.pop(target, None)
            other = self.pending.get(resolved)
            if other is not None:  # another upper link waits for the same file
                self._resolve(placeholder, other)
                continue
            self.pending[resolved] = placeholder
            node = self._same_layer(split_path(resolved, p.what), resolved, p)
            if node is not None:
                p.arrived[resolved] = node

    # --- what layers wrote below a path that upper layers replaced or deleted ---------

    def _limbo_depth(self, parts: list[str], depth: int, p: _Pass) -> int | None:
        """Whether an entry whose directory upper layers hide, where parts[:depth] names
        what they deleted or replaced (from _parent), waits in a limbo, and at which
        depth. A runtime applying this layer wrote below what was there then: a lower
        layer's symlink took the entry where it leads, which an upper layer deleting or
        replacing the symlink does not undo (docker and umoci keep it). So where this
        layer neither listed nor deleted that path, the entry waits until a lower layer
        says what the path was (_decide_limbo); where it listed a directory there, the
        same holds for the first path below that it did not list (a symlink there may
        lead out of what upper layers hide); else the entry is hidden, whatever the
        layers below hold."""
        for at in range(depth, len(parts)):
            if self._deleted(parts[:at], p):
                return None
            own = p.hidden.get(_join(parts[:at]))
            if own is None:
                return at
            if own.kind is not Kind.DIR:
                return None
        return None

    def _limbo_dir(
        self, key: tuple[str, int], depth: int, parts: list[str], path: str, p: _Pass
    ) -> Inode:
        """The directory of limbo `key` (its path is parts[:depth]) that holds an entry
        at `path`, made with its parents if need be; this layer's symlinks in it are
        followed (_Through), as in the tree."""
        node = self.limbo.get(key)
        if node is None:
            node = self.limbo[key] = new_dir(mtime_ns=self.implicit_mtime_ns, store=self.rows)
            p.implicit_ranks.setdefault(key[0], p.rank + 1)
        for at in range(depth, len(parts) - 1):
            kids = node.children
            assert kids is not None
            child = kids.get(parts[at])
            if child is None:
                child = kids[parts[at]] = new_dir(mtime_ns=self.implicit_mtime_ns, store=self.rows)
                p.implicit_ranks.setdefault(_join(parts[: at + 1]), p.rank + 1)
            elif child.kind is Kind.SYMLINK:
                raise _Through(at + 1, child)
            elif child.kind is not Kind.DIR:
                raise Oci2vmError(
                    f"{p.what}: entry {path!r} passes through {child.kind} "
                    f"{_join(parts[: at + 1])!r}"
                )
            node = child
        return node

    @staticmethod
    def _put_limbo(parent: Inode, parts: list[str], path: str, inode: Inode, p: _Pass) -> None:
        """Put an entry in a limbo directory (the last at a path wins; a directory over a
        directory merges). It is not visible: its data waits too."""
        kids = parent.children
        assert kids is not None
        existing = kids.get(parts[-1])
        if existing is not None and existing.kind is Kind.DIR and inode.kind is Kind.DIR:
            _adopt(existing, inode)
            inode = existing
        else:
            kids[parts[-1]] = inode
        p.hidden[path] = inode  # (for this layer's links and symlinks, as a hidden entry)

    def _says(self, parts: list[str], p: _Pass) -> tuple[bool, Inode | None]:
        """Whether this layer says what a path that upper layers hide was for the layers
        above it, and its last entry there (None: it deleted the path)."""
        entry = p.hidden.get(_join(parts))
        return entry is not None or self._deleted(parts, p), entry

    def _check_below_listed(self, p: _Pass) -> None:
        """Refuse what oci2vm would get wrong: a layer wrote below a path without listing
        it, an upper layer lists a directory there, and this layer's last entry at the
        path is a symlink (a runtime wrote those entries where it leads; the tree holds
        them in the upper layer's directory). A lower layer's entry or deletion there
        otherwise settles it. (This layer's own entries there wait for the layers below
        it: whatever it lists at the path after them does not change where they went.)"""
        for path, layers in list(self.below_listed.items()):
            upper = {layer for layer in layers if layer > p.index}
            if not upper:
                continue
            says, entry = self._says(path[1:].split("/"), p)
            if not says:
                continue
            layers -= upper
            if not layers:
                del self.below_listed[path]
            if entry is not None and entry.kind is Kind.SYMLINK:
                raise Oci2vmError(
                    f"layer {max(upper) + 1} writes below {path!r}, which {p.what} makes a "
                    "symlink and an upper layer lists as a directory: not supported"
                )

    def _decide_limbo(self, p: _Pass) -> None:
        """This layer's last entry at a limbo's path is what upper layers' entries there
        met: a symlink takes them where it leads; a directory leaves them below the path
        (gone with it), but a symlink deeper in it may still take them elsewhere; anything
        else, or the path deleted by this layer, and they are gone."""
        todo = sorted((key for key in self.limbo if key[1] > p.index), reverse=True)
        # What each layer wrote in its limbos (the sources are popped as they are decided):
        # a layer between a limbo's layer and this one may have put there what it met.
        written: dict[str, list[tuple[int, Inode]]] = {}
        for path, layer in todo:
            for at, listed in _limbo_entries(self.limbo[(path, layer)], path):
                written.setdefault(at, []).append((layer, listed))
        while todo:
            key = todo.pop()
            path, layer = key
            parts = path[1:].split("/")
            if self._own_path(parts, True, p) != parts:
                raise Oci2vmError(
                    f"{p.what}: upper layers write below {path!r}, which other upper layers "
                    "replace, and this layer makes a directory above it a symlink: not supported"
                )
            says, entry = self._says(parts, p)
            if not says:
                continue  # a layer below says
            source = self.limbo.pop(key)
            if entry is None:
                continue
            if entry.kind is Kind.SYMLINK:
                self._limbo_through(path, source, entry, layer, p)
            elif entry.kind is Kind.DIR:
                self._limbo_below(path, source, layer, written, todo, p)

    def _limbo_below(
        self,
        path: str,
        source: Inode,
        layer: int,
        written: dict[str, list[tuple[int, Inode]]],
        todo: list[tuple[str, int]],
        p: _Pass,
    ) -> None:
        """Upper `layer`'s limbo `source` at `path` met a directory there: its entries
        are gone with it, but where it went on below without listing a directory, what
        it met there is the newest entry a layer between it and this one wrote in its own
        limbo (a symlink takes them where it leads, a directory leaves them below), else
        what this layer or a lower one says (a limbo again, decided in turn)."""
        assert source.children is not None
        stack = [(path, iter(source.children.items()))]  # (a depth-first walk)
        while stack:
            base, items = stack[-1]
            for name, child in items:
                if child.kind is not Kind.DIR or child.layer >= 0:
                    continue  # the layer's own entry, gone with the path
                at = _under(base, name)
                met = max(
                    ((by, e) for by, e in written.get(at, ()) if p.index < by < layer),
                    key=lambda found: found[0],
                    default=None,
                )
                if met is None:
                    below = (at, layer)
                    self.limbo[below] = child
                    todo.append(below)
                elif met[1].kind is Kind.SYMLINK:
                    self._limbo_through(at, child, met[1], layer, p)
                elif met[1].kind is Kind.DIR:
                    assert child.children is not None
                    stack.append((at, iter(child.children.items())))
                    break
            else:
                stack.pop()

    def _limbo_through(self, path: str, source: Inode, link: Inode, layer: int, p: _Pass) -> None:
        """Upper `layer`'s limbo `source` at `path` met the symlink `link` there."""
        if self.limbo_links and self._holds_links(source):
            raise Oci2vmError(
                f"{p.what}: an upper layer's hardlink to a lower file below {path!r} "
                "goes where a symlink there leads: not supported"
            )
        self._relocate_limbo(path, source, link, layer, p)

    def _holds_links(self, directory: Inode) -> bool:
        """Whether a limbo's hardlink to a lower file is below `directory`."""
        stack = [directory]
        while stack:
            for child in (stack.pop().children or {}).values():
                if child in self.limbo_links:
                    return True
                if child.children:
                    stack.append(child)
        return False

    def _relocate_limbo(self, path: str, source: Inode, link: Inode, layer: int, p: _Pass) -> None:
        """Move what `layer` wrote below `path` (the limbo directory `source`) where the
        symlink `link` at `path` (this layer's, or a layer's between) leads, merged with
        what is there by layer order (see _relocate); unless a newer layer deleted or
        replaced the way there."""
        # (the limbo's own path, marked: no claim of the tree's entries there applies)
        after = self.implicit_ranks.get((path, layer))
        target = self._leads(path, link, layer, p, after, layer)
        into = self._move(source, path + "\0", target, layer, layer, path, p)
        stack = [into] if into is not None else []
        while stack:
            directory = stack.pop()
            for child in (directory.children or {}).values():
                if child.children is not None:
                    stack.append(child)
                else:
                    self._want_data(child)

    def _lose(self, path: str, claim: int | None, inode: Inode, p: _Pass) -> None:
        """Keep in self.lost a non-directory that leaves `path` (see there)."""
        if (self.pending or p.forward) and claim is not None and inode.kind is not Kind.DIR:
            self.lost.setdefault(path, []).append((claim, inode))

    def _want_data(self, inode: Inode) -> None:
        """A file made visible after its layer streamed by: its data is read again."""
        if self._undelivered(inode):
            assert isinstance(inode.data, LayerData)
            self.rereads.setdefault(inode.data.layer, []).append(inode)

    def _arrived_in(self, source: Inode | None, old: str, new: str, p: _Pass) -> None:
        """Upper layers' hardlinks that wait for a path below `new` get what a layer
        between theirs and this one wrote there through this layer's symlink (the
        directory `source`, at `old`; None: what markers that went through it hid), even
        where a newer layer hid it: it is what a runtime found when it reached the link
        (a newer entry there, older than the link, takes its place after the merge:
        _arrived_below)."""
        for target in self.pending.below(new):
            placeholder, below = self.pending[target], _rebased(target, new, old)
            assert below is not None
            node: Inode | None = source
            for part in below[len(old) + 1 :].split("/"):
                kids = node.children if node is not None else None
                node = kids.get(part) if kids is not None else None
            found = [] if node is None else [(_rank(self._claim(node, below)), node)]
            found += self.lost.get(below, [])  # (older than `node`, hidden or replaced)
            found = [(k, n) for k, n in found if p.index < k and _before(k, n, placeholder)]
            current = p.arrived.get(target)  # (this layer's own, or found here before)
            if current is not None:
                found.append((_rank(self._claim(current, target)), current))
            if found:
                node = max(found, key=lambda found: (found[0], found[1].row))[1]
                if node != current:
                    p.arrived[target] = node
                    self._want_data(node)

    def _seen(self, parents: list[str], p: _Pass) -> tuple[bool, ...] | None:
        """Which directories on the way to `parents` this layer has listed so far; None
        if it made one a file (or device, fifo, socket) or deleted one: a marker below
        reaches nothing, the lower layers' entries there are gone, whatever they were."""
        found = [self._same_layer(parents[:depth], _join(parents[:depth]), p)
                 for depth in range(1, len(parents) + 1)]  # fmt: skip
        if any(node is not None and node.kind not in _PASSABLE for node in found):
            return None
        for depth, node in enumerate(found, 1):  # deleted by a marker before, not listed since
            if node is None and (
                _join(parents[:depth]) in p.masks or _join(parents[: depth - 1]) in p.opaques
            ):
                return None
        return tuple(node is not None for node in found)

    def _open(
        self, parents: list[str], seen: tuple[bool, ...] | None, p: _Pass, layer: int = -1
    ) -> None:
        """Note the directories a marker of this layer (or of upper `layer`, which its
        symlink took below `parents`) reaches through, those this layer had not listed
        when the marker was written (`seen`, see _seen): what a layer below says they
        were decides (see _settle; the oldest marker's layer is kept). One it listed after
        the marker is noted apart: if a lower layer's symlink was there, the marker went
        through it before this layer replaced it (refused, see _settle_late)."""
        if seen is None:
            return
        layer = p.index if layer < 0 else layer
        for depth in range(len(parents), 0, -1):
            if not seen[depth - 1]:
                path = _join(parents[:depth])
                if self._same_layer(parents[:depth], path, p) is not None:
                    self.open_late[path] = (layer, p.what)
                elif path not in self.open or self.open[path][0] > layer:
                    self.open[path] = (layer, p.what)

    def _settle_late(self, path: str, inode: Inode, p: _Pass) -> None:
        """This layer's last entry at `path`, which an upper layer listed after writing a
        marker below it: a symlink here took the marker elsewhere first."""
        above, what = self.open_late.pop(path)
        # (the marker's layer's own later entry there cuts the way at `above`: a layer
        # between that cut it first left the marker nothing to pass)
        if inode.kind is Kind.SYMLINK and self._passable_until(split_path(path, what), p) >= above:
            raise Oci2vmError(
                f"{what}: a whiteout or opaque marker reaches through {p.what}'s symlink "
                f"{path!r}, which the marker's layer then replaces: not supported"
            )

    def _settle(self, path: str, rank: int, inode: Inode, p: _Pass) -> None:
        """A layer's last entry at `path` decides what an upper whiteout below it reached
        through: a symlink here took it where it leads, unless a later entry of the layer
        replaced a parent, or a layer between the two hid this path (from that layer on,
        whiteouts do not pass it)."""
        above, what = self.open.pop(path)
        if inode.kind is not Kind.SYMLINK:
            return
        parts = split_path(path, what)
        if any(p.cleared.get(_join(parts[:depth]), -1) > rank for depth in range(1, len(parts))):
            return
        cut = self._passable_until(parts, p)
        if cut > above:
            p.reaching[path] = (inode, cut)

    def _passable_until(self, parts: list[str], p: _Pass) -> int:
        """The oldest layer above this one that deleted or replaced a directory on the
        way to `parts` or what is at it (from that layer on, markers do not pass this
        layer's entry there); NO_CLAIM if none did."""
        cut = NO_CLAIM
        for depth in range(len(parts) + 1):
            ancestor = _join(parts[:depth])
            hidden = self.hidden.get(ancestor) if depth else None
            opaque = self.opaque.get(ancestor) if depth < len(parts) else None
            for mark in (hidden, opaque):
                cut = cut if mark is None else min(cut, mark)
            # A layer between made a directory on the way a non-directory, in sight, or
            # the symlink a directory again:
            node = self._at(parts[:depth]) if depth else None
            if node is not None and (node.kind is not Kind.DIR or depth == len(parts)):
                claim = _rank(self._claim(node, ancestor))
                if claim > p.index:
                    cut = min(cut, claim)
        return cut

    def _whiteouts_through(self, p: _Pass) -> None:
        """Upper layers' whiteouts below the paths of p.reaching, and opaque markers at or
        below them, that this layer's symlinks there take where they lead (those of
        layers older than each one's cut): they delete there what this layer and the
        layers between wrote, and what the layers below write, as at their own place.
        One pass over the markers, each matched by its ancestors."""
        moves: dict[str, list[tuple[bool, str, int, int]]] = {}  # symlink's path -> ...
        tables = ((False, self.hidden, self.hidden_newest), (True, self.opaque, self.opaque_newest))
        for opaque, table, newest_table in tables:
            for key, oldest in table.items():
                if oldest <= p.index:
                    continue
                parts = key[1:].split("/")
                for depth in range(1, len(parts) + (1 if opaque else 0)):
                    path = _join(parts[:depth])  # (the first symlink on the way)
                    if path in p.reaching:
                        cut = p.reaching[path][1]
                        if oldest < cut:
                            newest = newest_table.get(key, oldest)
                            newest = newest if newest < cut else oldest
                            moves.setdefault(path, []).append((opaque, key, oldest, newest))
                        break
        for path, marks in sorted(moves.items()):
            link = p.reaching[path][0]
            oldest, newest = min(mark[2] for mark in marks), max(mark[3] for mark in marks)
            target = _join(self._leads(path, link, oldest, p, None, newest))
            if self.pending and self.lost:  # (links made before the markers hid their file)
                self._arrived_in(None, path, target, p)
            for opaque, key, oldest, newest in marks:
                new = target if key == path else _rebased(key, path, target)
                assert new is not None
                table, newest_table = (self.opaque, self.opaque_newest) if opaque else (
                    self.hidden, self.hidden_newest)  # fmt: skip
                table[new] = min(oldest, table.get(new, oldest))
                newest_table[new] = max(newest, newest_table.get(new, newest))
                parts = split_path(new, p.what)
                if opaque:
                    self._prune_inside(new, newest)
                else:
                    self._prune_older(new, newest)
                dirs = parts if opaque else parts[:-1]
                self._open(dirs, self._seen(dirs, p), p, oldest)  # (the new way, from here)

    def _member(self, tar: TarReader, member: Member, p: _Pass) -> None:
        parts = split_path(member.name, p.what)
        if not parts:
            self._root_entry(member, p)
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            self._whiteout(member, parts, p)
            return
        path = _join(parts)
        parent, parts, path, limbo = self._parent_through(parts, path, p)
        is_link = member.type == tarstream.HARDLINK
        inode = (
            self._hardlink(member, path, p) if is_link else _inode_for(member, p.index, self.rows)
        )
        p.rank += 1
        if (p.implicit_ranks and path in p.implicit_ranks) or path in p.below_links:
            self.relisted[path] = (p.index, p.what)
        elif self.relisted and path in self.relisted:
            p.relisted[path] = inode
        if inode.kind is Kind.SYMLINK:
            p.link_ranks[path] = (p.rank, inode)
        elif p.link_ranks:
            p.link_ranks.pop(path, None)  # (no longer a symlink in its layer)
        if self.open_late and path in self.open_late:
            p.settling_late[path] = inode
        if self.open:
            if path in self.open:
                p.settling[path] = (p.rank, inode)
            if inode.kind is not Kind.DIR:
                p.cleared[path] = p.rank
        wanted = path in self.pending
        if wanted:
            p.arrived[path] = inode  # the layer's last entry at the path is the target
        if limbo is None:
            visible = self._put(parent, parts, path, inode, p)
        else:
            assert parent is not None
            self._put_limbo(parent, parts, path, inode, p)
            visible = False
            if is_link and inode in self.waiting:
                self.limbo_links.add(inode)
        if inode.kind is not Kind.FILE or not (visible or wanted):
            return
        if not is_link:
            try:
                self._data(tar, inode, path if visible else None)
            except EntryError as error:  # (the sink's: a size ext4 cannot hold)
                raise Oci2vmError(f"{p.what}: {path}: {error}") from None
            return
        if self._undelivered(inode) and inode not in self.deferred:
            # A link to a file of this layer that was hidden when its data streamed by.
            self.deferred.append(inode)

    def _parent_through(
        self, parts: list[str], path: str, p: _Pass
    ) -> tuple[Inode | None, list[str], str, tuple[str, int] | None]:
        """_parent() of an entry, its path followed through the symlinks this layer wrote
        before it (a runtime writes below a symlink where it leads): (the parent, the
        path's components, the path, and the limbo it waits in, if it does: then the
        parent is a directory of that limbo)."""
        for _ in range(MAX_SYMLINKS):
            try:
                parent = self._parent(parts, path, p)
                if not isinstance(parent, int):
                    return parent, parts, path, None
                depth = self._limbo_depth(parts, parent, p)
                if depth is None:
                    return None, parts, path, None
                key = (_join(parts[:depth]), p.index)
                return self._limbo_dir(key, depth, parts, path, p), parts, path, key
            except _Through as through:
                parts = follow(parts, through.depth, through.link.target, p.what)
                path = _join(parts)
        raise Oci2vmError(f"{p.what}: too many levels of symbolic links in {path!r}")

    def _put(
        self, parent: Inode | None, parts: list[str], path: str, inode: Inode, p: _Pass
    ) -> bool:
        """Place an entry (in `parent`, from _parent()) in the tree if upper layers leave it
        visible; say whether they did."""
        existing = None
        if parent is not None:
            kids = parent.children
            assert kids is not None
            existing = kids.get(parts[-1])
        visible = parent is not None and self._visible(existing, path, p.index)
        if parent is not None and visible:
            placed = self._place(parent, parts[-1], path, inode, existing, p)
            visible = placed or inode.kind is Kind.DIR
        if visible:
            p.hidden.pop(path, None)
            return True
        p.hidden[path] = inode
        if inode.kind is Kind.DIR:  # (a hidden non-directory is in p.masks, then hidden)
            p.hidden_dirs.add(path)
        self._lose(path, p.index, inode, p)
        if inode.kind is Kind.SYMLINK:
            self.parents.clear()  # this layer's entries below it go where it leads
        if inode.kind is not Kind.DIR:
            if p.index:
                p.masks.add(path)  # a non-directory, shadowed or not, ends what is below
            siblings = parent.children if parent is not None else None
            shadow = siblings.get(parts[-1]) if siblings is not None else None
            if shadow is not None and shadow.children is not None:
                self._prune(shadow, path, p)
        return False

    def _prune(self, directory: Inode, path: str, p: _Pass) -> None:
        """Take out of an upper layer's directory what this layer wrote in it before
        replacing it with a non-directory (which that directory shadows)."""
        found: list[tuple[Inode, str, Inode, str]] = []  # parents before children
        stack = [(directory, path)]
        while stack:
            node, base = stack.pop()
            assert node.children is not None
            for name, child in node.children.items():
                found.append((node, name, child, f"{base}/{name}"))
                if child.children is not None:
                    stack.append((child, f"{base}/{name}"))
        for node, name, child, child_path in reversed(found):
            ours = self._claim(child, child_path) == p.index or child in p.implicit
            if ours and not child.children:  # (an upper layer's entries may be in it)
                assert node.children is not None
                del node.children[name]
                self.parents.clear()

    def _root_entry(self, member: Member, p: _Pass) -> None:
        """The root directory's own entry: its metadata, the newest layer's winning."""
        if not member.isdir():
            kind = "hardlink" if member.type == tarstream.HARDLINK else None
            kind = kind or _inode_for(member, p.index).kind.value
            raise Oci2vmError(
                f"{p.what}: entry {member.name!r} would make the root directory a {kind}"
            )
        if self.root_layer is None or self.root_layer == p.index:
            _adopt(self.tree.root, _inode_for(member, p.index))
            self.root_layer = p.index

    def _whiteout(self, member: Member, parts: list[str], p: _Pass) -> None:
        base = parts[-1]
        if base.startswith(WHITEOUT + WHITEOUT) and base != OPAQUE:  # aufs metadata
            return
        # A symlink this layer wrote before on the way takes the whiteout where it leads,
        # as it takes entries (a runtime resolves the whiteout's directory then).
        parents = self._own_path(parts[:-1], False, p) if p.link_ranks else parts[:-1]
        if base == OPAQUE:
            p.opaques.add(_join(parents))
            p.markers.append((parents, self._seen(parents, p)))
            return
        name = base[len(WHITEOUT) :]
        if name in ("", ".", ".."):
            raise Oci2vmError(f"{p.what}: whiteout {member.name!r} names no entry")
        path = _join([*parents, name])
        p.masks.add(path)
        p.markers.append((parents, self._seen(parents, p)))
        if (p.implicit_ranks and path in p.implicit_ranks) or path in p.below_links:
            self.relisted[path] = (p.index, p.what)

    # --- hardlinks ---------------------------------------------------------------------

    def _hardlink(self, member: Member, path: str, p: _Pass) -> Inode:
        """The inode a hardlink entry at `path` shares: the target as this layer's
        entries so far leave it, or a placeholder for a lower layer's entry."""
        parts = self._own_path(split_path(member.linkname, p.what, member.name), True, p)
        target = _join(parts)
        if target == path:
            raise Oci2vmError(f"{p.what}: hardlink {path!r} points to itself")
        node = self._same_layer(parts, target, p)
        if node is not None:
            if node.kind is Kind.DIR:
                raise Oci2vmError(f"{p.what}: hardlink {path!r} points to directory {target!r}")
            waiting = self.waiting.get(node)
            if waiting is not None:
                waiting.paths.append(path)
                self._stand(node, [path])
            return node
        if self._deleted(parts, p):
            raise Oci2vmError(f"hardlink {path!r} points to {target!r}, which {p.what} deletes")
        placeholder = p.forward.get(target)
        if placeholder is None:
            placeholder = Inode(Kind.FILE, layer=p.index, store=self.rows)
            p.forward[target] = placeholder
            self.waiting[placeholder] = _Waiting(target, path, p.what)
            p.below_links.update(_join(parts[:depth]) for depth in range(1, len(parts)))
        self.waiting[placeholder].paths.append(path)
        self._stand(placeholder, [path])
        return placeholder

    def _missing(self, target: str, placeholder: Inode) -> None:
        """Refuse a hardlink whose target no layer holds, naming a cycle of links as one
        (links that lead, through one another, back to where they started)."""
        if placeholder in self.doomed:
            raise Oci2vmError(self.doomed[placeholder][1])
        waiting = self.waiting[placeholder]
        standing = {path: node for node, w in self.waiting.items() for path in w.paths}
        chain: list[str] = []
        node = placeholder
        while (w := self.waiting.get(node)) is not None and w.link not in chain:
            chain += [w.link, *w.paths]
            if w.target == waiting.link or w.target in waiting.paths:
                names = ", ".join(repr(n) for n in sorted(set(chain)))
                raise Oci2vmError(
                    f"{w.what}: hardlinks {names} form a cycle, and no layer below holds "
                    "a file for them"
                )
            node = standing.get(w.target, placeholder)
        raise Oci2vmError(f"hardlink {waiting.link!r} points to {target!r}, which does not exist")

    def _resolve(self, placeholder: Inode, inode: Inode) -> None:
        """The target a placeholder stood for has arrived: put it where the links are."""
        waiting = self.waiting.pop(placeholder)
        self._stand(placeholder, waiting.paths, False)
        self.resolved.setdefault(waiting.target, []).append((placeholder, waiting.paths, inode))
        for path in waiting.paths:
            claim = self._claim(placeholder, path)
            if self._replace_at(path, placeholder, inode) and claim is not None:
                self.link_claims[path] = claim
        further = self.waiting.get(inode)
        if further is not None:  # the target is itself a link to a lower file
            further.paths.extend(waiting.paths)
            self._stand(inode, waiting.paths)

    # --- data ------------------------------------------------------------------------

    def _data(self, tar: TarReader, inode: Inode, path: str | None) -> None:
        """The member's stored data is next in the stream: capture and/or sink it."""
        data = inode.data
        if data is None:
            return
        if path is not None and self.capture(path) and data.stored_size <= CAPTURE_LIMIT:
            content = tar.read_data(data.stored_size)
            # What a reader of the file would read: the stored bytes of a dense file; a
            # sparse one's regions at their offsets, holes as zeros (if that is small).
            if len(content) == inode.size:  # no holes
                self.tree.captured[inode] = content
            elif inode.size <= CAPTURE_LIMIT:
                self.tree.captured[inode] = _expand(content, data.regions, inode.size)
            if self.sink is not None:
                self._deliver(inode, BytesReader(content))
            return
        if self.sink is not None:
            self._deliver(inode, tar)  # the member's data, read in place

    def _deliver(self, inode: Inode, data: DataReader) -> None:
        """Hand a file's data to the sink. A dense file's data becomes StreamedData then,
        which the tree keeps as a flag (the size is the file's): where the bytes were in
        the layer is of no more use. A sparse file keeps its map (the tree's readers may
        want it) and is noted as delivered."""
        assert self.sink is not None
        self.sink(inode, data)
        stored = inode.data
        if not isinstance(stored, LayerData) or stored.sparse is not None:
            self.delivered.add(inode)
            return
        inode.data = StreamedData(stored.stored_size)

    def _undelivered(self, inode: Inode) -> bool:
        """Whether a file has layer data that has not reached the sink."""
        return isinstance(inode.data, LayerData) and inode not in self.delivered

    def _reread(self, index: int, inodes: list[Inode]) -> None:
        """Serve files made visible after their data had streamed by (by a later hardlink
        in the same layer, or moved where a lower layer's symlink leads): read the layer
        again, up to the last of them."""
        todo = sorted(
            (i for i in set(inodes) if self._undelivered(i)),
            key=lambda i: i.data.offset if isinstance(i.data, LayerData) else 0,
        )
        if not todo or self.sink is None:
            return
        layer = self.image.layers[index]
        what = _what(index, layer)
        log.debug("%s: reading again for %d files", what, len(todo))
        with decompressed(
            layer.blob.open(), layer.media_type, what, hash_stream=False, rootfs=layer.rootfs
        ) as stream:
            position = 0
            for inode in todo:
                data = inode.data
                assert isinstance(data, LayerData)
                if stream.skip(data.offset - position) < data.offset - position:
                    raise Oci2vmError("layer ended early while reading it again")
                self._deliver(inode, _Slice(stream, data.stored_size))
                position = data.offset + data.stored_size


def flatten(
    image: Image,
    *,
    sink: FileSink | None = None,
    capture: CaptureFn = default_capture,
    progress: Callable[[int, Layer], ProgressFn | None] | None = None,
    store: BlobStore | None = None,
    implicit_mtime_ns: int = 0,
) -> Tree:
    """Merge the image's layers into one tree, verifying every layer on the way.

    With a sink, each regular file's data is handed to it exactly once, as its layer
    streams by (hardlinked files once per inode). Small files that `capture` selects
    are also kept in Tree.captured. A `store` (the blob cache) remembers which blobs were
    verified to inflate to their diff_id, so that later runs need not hash them again.
    Directories that no layer lists (the root, in most images, and parents a layer
    leaves implicit) get `implicit_mtime_ns` as their time, and mode 0755, owner root.
    """
    with cycle_collection_paused():
        return _Flattener(image, sink, capture, progress, store, implicit_mtime_ns).run()
