"""Flattening: the layers of an image merged into one tree, as a container runtime sees it.

Layers are read top-down, newest first, each decompressed once. An entry seen in an
upper layer shadows the same path below; a whiteout (.wh.NAME) hides NAME in the layers
below its own; an opaque marker (.wh..wh..opq) hides everything the layers below put in
its directory. Read that way, the first visible entry for a path is final, so file data
can go straight to its destination (a FileSink) as the stream passes, and data that a
later layer replaces is never written. The tree keeps, for each file, where its bytes
are (layer, offset), never the bytes themselves.

Hardlinks name a path in the same layer or a lower one. One that points down is left as
a placeholder until the lower entry arrives; one whose target an upper layer hid is
served by reading its layer a second time, which only that rare case pays for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore, ProgressFn, short
from oci2vm.image.model import Image, Layer
from oci2vm.layers import tarstream
from oci2vm.layers.decompress import LayerStream, decompressed
from oci2vm.layers.tarstream import Member, TarReader
from oci2vm.tree.model import (
    NO_XATTRS,
    BytesReader,
    FileSink,
    Inode,
    Kind,
    LayerData,
    Tree,
    new_dir,
)

log = logging.getLogger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CAPTURE_LIMIT = 256 << 10

# Small files read into memory during the pass, for inspection and OS preparation.
CaptureFn = Callable[[str], bool]


def default_capture(path: str) -> bool:
    return path.startswith("/etc/") or path in ("/usr/lib/os-release", "/lib/os-release")


def split_path(name: str, what: str) -> list[str]:
    """Normalize a tar member name to path components, rejecting any that would
    leave the root ('..' climbing above it). Leading '/' and './' are ignored, as
    Docker and containerd do."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise Oci2vmError(f"{what}: entry {name!r} escapes the image root")
            parts.pop()
            continue
        parts.append(part)
    return parts


def _join(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def _inode_for(member: Member, layer: int) -> Inode:
    """The metadata of a member as an Inode (without data)."""
    inode = Inode(
        Kind.FILE,
        mode=member.mode,
        uid=member.uid,
        gid=member.gid,
        mtime_ns=member.mtime_ns,
        atime_ns=member.atime_ns,
        ctime_ns=member.ctime_ns,
        xattrs=member.xattrs or NO_XATTRS,
        layer=layer,
    )
    kind = member.type
    if member.isdir():
        inode.kind = Kind.DIR
        inode.children = {}
    elif kind == tarstream.SYMLINK:
        inode.kind = Kind.SYMLINK
        inode.target = member.linkname.encode("utf-8", "surrogateescape")
        inode.size = len(inode.target)
    elif kind in (tarstream.CHAR, tarstream.BLOCKDEV):
        inode.kind = Kind.CHAR if kind == tarstream.CHAR else Kind.BLOCK
        inode.rdev_major, inode.rdev_minor = member.devmajor, member.devminor
    elif kind == tarstream.FIFO:
        inode.kind = Kind.FIFO
    elif member.isfile():
        inode.size = member.size
        sparse = None
        if member.sparse is not None:
            sparse = tuple((o, n) for o, n in member.sparse if n)
            if sum(n for _o, n in sparse) != member.stored:
                raise Oci2vmError(f"{member.name!r}: sparse map does not match its data")
        if member.stored:
            inode.data = LayerData(layer, member.offset_data, member.stored, sparse)
    else:
        raise Oci2vmError(f"unsupported tar entry type {member.type!r} for {member.name!r}")
    return inode


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
        self.sink = sink
        self.capture = capture
        self.progress = progress
        self.tree = Tree(new_dir(mtime_ns=implicit_mtime_ns))
        self.root_claimed = False
        # A path is claimed by the layer whose entry is there: the inode's own `layer`
        # (an implicit directory, layer -1, is unclaimed: a lower layer's entry may still
        # set its metadata). Kept on the inodes, not in a dict of paths, as the tree holds
        # every entry. The exception: a hardlink whose target a lower layer provides holds
        # that layer's inode; its path is claimed by the link's layer, noted here.
        self.link_claims: dict[str, int] = {}
        self.hidden: set[str] = set()  # whiteouts of upper layers
        self.opaque: set[str] = set()  # opaque directories of upper layers
        # Hardlink targets not seen yet: target path -> (placeholder, paths it stands at).
        self.pending: dict[str, tuple[Inode, list[str]]] = {}
        self.delivered: set[int] = set()  # id() of inodes whose data reached the sink
        self.deferred: list[Inode] = []  # this layer: data needed after it streamed by

    # --- the tree ------------------------------------------------------------------

    def _parent(self, parts: list[str], path: str, layer: int, what: str) -> Inode | None:
        """The directory that holds parts[-1] (whose path is `path`), creating implicit
        parents; None when an ancestor hides the entry."""
        node = self.tree.root
        masks = self.hidden or self.opaque  # empty for the top layer
        ancestor = ""
        for part in parts[:-1]:
            ancestor = f"{ancestor}/{part}"
            if masks and (ancestor in self.hidden or ancestor in self.opaque):
                return None
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                child = new_dir(mtime_ns=self.implicit_mtime_ns)
                node.children[part] = child
            elif child.kind is not Kind.DIR:
                claim = self._claim(child, ancestor)
                if claim is None or claim == layer:
                    raise Oci2vmError(
                        f"{what}: entry {path!r} passes through {child.kind} {ancestor!r}"
                    )
                return None  # an upper layer replaced the directory with a non-directory
            node = child
        return node

    def _claim(self, node: Inode | None, path: str) -> int | None:
        """The layer that claimed `path`, where `node` is; None if nothing did."""
        if self.link_claims:
            claim = self.link_claims.get(path)
            if claim is not None:
                return claim
        return None if node is None or node.layer < 0 else node.layer

    def _visible(self, parent: Inode, name: str, path: str, layer: int) -> bool:
        if path in self.hidden:
            return False
        assert parent.children is not None
        claim = self._claim(parent.children.get(name), path)
        return claim is None or claim == layer

    def _place(
        self, parent: Inode, name: str, path: str, inode: Inode, layer: int, what: str
    ) -> None:
        """Put inode at path, named `name` in `parent` (the entry is visible)."""
        assert parent.children is not None
        existing = parent.children.get(name)
        if existing is not None and existing.kind is Kind.DIR:
            implicit = existing.layer < 0
            if inode.kind is Kind.DIR:
                _adopt(existing, inode)  # merge: lower or implicit children stay
                return
            if implicit and inode.kind is Kind.SYMLINK:
                # An upper layer wrote below this path, so here it must be a directory.
                raise Oci2vmError(
                    f"{what}: upper layers write below {path!r}, which this layer makes a "
                    "symlink: paths through symlinks are not supported"
                )
            if implicit:
                return  # an upper layer's directory hides a lower non-directory
        parent.children[name] = inode

    # --- layers ----------------------------------------------------------------------

    def run(self) -> Tree:
        layers = self.image.layers
        for index in reversed(range(len(layers))):
            self._layer(index, layers[index])
        if self.pending:
            target, (_inode, paths) = next(iter(self.pending.items()))
            raise Oci2vmError(f"hardlink {paths[0]!r} points to {target!r}, which does not exist")
        self.tree.diff_ids.reverse()
        self.tree.layer_digests.reverse()
        return self.tree

    def _layer(self, index: int, layer: Layer) -> None:
        what = f"layer {index + 1}" + (f" ({short(layer.digest)})" if layer.digest else "")
        progress = self.progress(index, layer) if self.progress else None
        compressed = layer.blob.open(progress)
        if layer.diff_id is not None and not layer.diff_id.startswith("sha256:"):
            raise Oci2vmError(f"{what}: only sha256 diff_ids are supported")
        # A blob that an earlier run saw inflate to this very diff_id need not be hashed.
        known = (
            layer.diff_id is not None
            and layer.digest is not None
            and self.store is not None
            and self.store.uncompressed_digest(layer.digest) == layer.diff_id
        )
        stream = decompressed(
            compressed, layer.media_type, what, layer.diff_id, hash_stream=not known
        )
        self.deferred = []
        # This layer's entries that are not in the tree (hidden by upper layers), for
        # hardlinks of this layer that name them; visible ones are found in the tree.
        layer_hidden: dict[str, Inode] = {}
        whiteouts: set[str] = set()
        opaques: set[str] = set()
        try:
            tar = TarReader(stream, what)
            for member in tar:
                self._member(tar, member, index, what, layer_hidden, whiteouts, opaques)
            stream.finish()
        except BaseException:
            stream.abort()
            raise
        self.tree.diff_ids.append(stream.digest)
        self.tree.layer_digests.append(layer.digest or compressed.computed_digest)
        if not known and self.store is not None and layer.digest and layer.diff_id:
            self.store.remember_uncompressed(layer.digest, stream.digest)
        for target, (_inode, paths) in self.pending.items():
            parts = split_path(target, what)
            if target in whiteouts or any(
                _join(parts[:i]) in whiteouts | opaques for i in range(1, len(parts))
            ):
                raise Oci2vmError(
                    f"hardlink {paths[0]!r} points to {target!r}, which {what} deletes"
                )
        self.hidden |= whiteouts
        self.opaque |= opaques
        if self.deferred:
            self._reread(index, layer, what)

    def _member(
        self,
        tar: TarReader,
        member: Member,
        layer: int,
        what: str,
        layer_hidden: dict[str, Inode],
        whiteouts: set[str],
        opaques: set[str],
    ) -> None:
        parts = split_path(member.name, what)
        if not parts:  # the root directory itself
            if member.isdir() and not self.root_claimed:
                _adopt(self.tree.root, _inode_for(member, layer))
                self.root_claimed = True
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            if base == OPAQUE:
                opaques.add(_join(parts[:-1]))
            elif not base.startswith(WHITEOUT + WHITEOUT):  # .wh..wh.* is aufs metadata
                whiteouts.add(_join([*parts[:-1], base[len(WHITEOUT) :]]))
            return
        path = _join(parts)
        is_link = member.type == tarstream.HARDLINK
        if is_link:
            inode = self._hardlink(member, layer, what, layer_hidden)
        else:
            inode = _inode_for(member, layer)

        wanted = self.pending.pop(path, None)
        if wanted is not None:
            if inode.kind is Kind.DIR:
                raise Oci2vmError(f"{what}: hardlink {wanted[1][0]!r} points to directory {path!r}")
            for link_path in wanted[1]:
                self._repoint(link_path, wanted[0], inode)

        parent = self._parent(parts, path, layer, what)
        visible = parent is not None and self._visible(parent, base, path, layer)
        if parent is not None and visible:
            self._place(parent, base, path, inode, layer, what)
            assert parent.children is not None
            visible = parent.children.get(base) is inode or inode.kind is Kind.DIR
        if inode.kind is not Kind.DIR:
            if visible:
                layer_hidden.pop(path, None)
            else:
                layer_hidden[path] = inode

        if inode.kind is not Kind.FILE or not (visible or wanted):
            return
        if not is_link:
            self._data(tar, inode, path if visible else None)
            return
        if (
            inode.data is not None
            and id(inode) not in self.delivered
            and inode not in self.deferred
        ):
            # A link to a file of this layer that was hidden when its data streamed by.
            self.deferred.append(inode)

    def _at(self, parts: list[str]) -> Inode | None:
        node: Inode | None = self.tree.root
        for part in parts:
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node

    def _repoint(self, path: str, placeholder: Inode, inode: Inode) -> None:
        parts = path.strip("/").split("/")
        parent = self._at(parts[:-1])
        if parent is not None and parent.children and parent.children.get(parts[-1]) is placeholder:
            parent.children[parts[-1]] = inode
            self.link_claims[path] = placeholder.layer

    def _hardlink(
        self, member: Member, layer: int, what: str, layer_hidden: dict[str, Inode]
    ) -> Inode:
        parts = split_path(member.linkname, what)
        target = _join(parts)
        # The target is an earlier entry of this layer: in the tree, or hidden.
        node = self._at(parts)
        if node is not None and node.kind is not Kind.DIR and self._claim(node, target) == layer:
            return node
        same_layer = layer_hidden.get(target)
        if same_layer is not None:
            return same_layer
        pending = self.pending.get(target)
        if pending is None:
            placeholder = Inode(Kind.FILE, layer=layer)
            pending = (placeholder, [])
            self.pending[target] = pending
        pending[1].append(_join(split_path(member.name, what)))
        return pending[0]

    def _data(self, tar: TarReader, inode: Inode, path: str | None) -> None:
        """The member's stored data is next in the stream: capture and/or sink it."""
        data = inode.data
        if data is None:
            return
        if path is not None and self.capture(path) and data.stored_size <= CAPTURE_LIMIT:
            content = tar.read_data(data.stored_size)
            if inode.data is not None and len(inode.data.regions) <= 1:
                self.tree.captured[inode] = content
            if self.sink is not None:
                self.sink(inode, BytesReader(content))
                self.delivered.add(id(inode))
            return
        if self.sink is not None:
            self.sink(inode, tar)  # the member's data, read in place
            self.delivered.add(id(inode))

    def _reread(self, index: int, layer: Layer, what: str) -> None:
        """Serve files that a later hardlink in the same layer made visible after their
        data had streamed by: read the layer again, up to the last of them."""
        todo = sorted(
            (i for i in self.deferred if i.data is not None and id(i) not in self.delivered),
            key=lambda i: i.data.offset if isinstance(i.data, LayerData) else 0,
        )
        if not todo or self.sink is None:
            return
        log.debug("%s: reading again for %d hardlinked files", what, len(todo))
        with decompressed(layer.blob.open(), layer.media_type, what, hash_stream=False) as stream:
            position = 0
            for inode in todo:
                assert isinstance(inode.data, LayerData)
                if stream.skip(inode.data.offset - position) < inode.data.offset - position:
                    raise Oci2vmError("layer ended early while reading it again")
                self.sink(inode, _Slice(stream, inode.data.stored_size))
                self.delivered.add(id(inode))
                position = inode.data.offset + inode.data.stored_size


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
    return _Flattener(image, sink, capture, progress, store, implicit_mtime_ns).run()
