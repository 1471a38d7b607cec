"""depmod in Python: the modules of a kernel (their ModInfo, handed over one at a time),
the load-order closure of a set of modules, and the files depmod writes into
/lib/modules/VERSION, byte for byte as kmod's depmod (tools/depmod.c, kmod 30) writes
them, so that the booted system's libkmod and udev find and load modules.

depmod cannot run here (nothing of the image is extracted to the host), and no library
does its job. Its rules, followed here:
- a module's name is its file name up to the first '.', '-' read as '_'; of two files of
  one name the first found is kept (depmod's default, without depmod.d search lines);
- modules are in modules.order's order (those it does not list after, in the order of
  depmod's name hash, as are all when there is no modules.order), and a module's place
  in that order is its priority in the .bin indexes;
- a module depends on the modules that export the symbols it needs (not on .modinfo's
  depends=, which modpost writes from the same symbols); of two exporters the later in
  the order wins;
- a topological sort (depmod_calculate_dependencies) numbers the modules, and each line
  of modules.dep lists every module needed directly or not in that numbering: the ones
  loaded last first. modprobe loads such a list from its end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from oci2vm.errors import Oci2vmError
from oci2vm.kernel.kmodindex import IndexBuilder, hash_order, superfast_hash
from oci2vm.kernel.modinfo import ModInfo, module_name

MODULES_BY_NAME_BUCKETS = 512  # depmod's hash_new(512) for modules_by_name
SYMBOL_BUCKETS = 2048  # and hash_new(2048) for its symbols
PATH_MAX = 4096
ALIAS_HEADER = b"# Aliases extracted from modules themselves.\n"
SOFTDEP_HEADER = b"# Soft dependencies extracted from modules themselves.\n"
WEAKDEP_HEADER = b"# Weak dependencies extracted from modules themselves.\n"
SYMBOL_HEADER = b"# Aliases for symbols, used by symbol_request().\n"
DEVNAME_HEADER = b"# Device nodes to trigger on-demand module loading.\n"
DEVICE_ALIAS = re.compile(r"(char|block)-major-\s*([+-]?\d+)-\s*([+-]?\d+)")


@dataclass(frozen=True, slots=True)
class _Module:
    """What the indexes need of one module."""

    name: str
    relpath: str
    aliases: tuple[str, ...]
    softdeps: tuple[str, ...]
    weakdeps: tuple[str, ...]
    exports: tuple[str, ...]
    needs: tuple[str, ...]

    def unversioned(self) -> str:
        """depmod's uncrelpath, matched against modules.order: the path cut after the
        name and ".ko" (so "a/b.ko.xz" gives "a/b.ko")."""
        raw = self.relpath.encode("utf-8", "surrogateescape")
        cut = raw.rfind(b"/") + 1 + len(self.name.encode("utf-8", "surrogateescape")) + 3
        return raw[:cut].decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class _Graph:
    """The modules in depmod's order, each one's direct dependencies (indexes into
    `modules`, sorted by `rank`), `rank` the topological numbering (dependents before
    what they depend on), and each exported symbol's owner."""

    modules: tuple[_Module, ...]
    deps: tuple[tuple[int, ...], ...]
    rank: tuple[int, ...]
    owners: dict[str, int]

    def all_deps(self, index: int) -> list[int]:
        """Every module `index` needs, directly or not, ordered as modules.dep lists them."""
        seen: set[int] = set()
        todo = list(self.deps[index])
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(self.deps[dep])
        return sorted(seen, key=self.rank.__getitem__)


class ModuleDb:
    """The modules of one kernel. add() each module (relpath relative to
    /lib/modules/VERSION), set_order() and set_builtin() with the package's files of those
    names, then ask closure() or indices()."""

    def __init__(self) -> None:
        self._modules: dict[str, _Module] = {}
        self._order: bytes | None = None
        self._builtin = b""
        self._builtin_modinfo = b""
        self._has_builtin = False
        self._graph: _Graph | None = None

    def __len__(self) -> int:
        return len(self._modules)

    def __contains__(self, name: str) -> bool:
        return _normal(name) in self._modules

    def add(self, relpath: str, info: ModInfo) -> None:
        """Adds a module; a second file of a name already added is passed over, as depmod
        keeps the first it finds."""
        name = module_name(relpath)
        if not name or name in self._modules:
            return
        self._modules[name] = _Module(
            name, relpath, info.aliases, info.softdeps, info.weakdeps, info.exports, info.needs
        )
        self._graph = None

    def set_order(self, modules_order: bytes) -> None:
        """modules.order: the kernel build's module order, which depmod keeps."""
        self._order = modules_order
        self._graph = None

    def set_builtin(self, modules_builtin: bytes, builtin_modinfo: bytes) -> None:
        """modules.builtin and modules.builtin.modinfo: the modules built into the kernel."""
        self._builtin, self._builtin_modinfo = modules_builtin, builtin_modinfo
        self._has_builtin = True

    def builtin(self) -> frozenset[str]:
        """The names of the modules built into the kernel."""
        return frozenset(name for name in _builtin_names(self._builtin) if name)

    def missing(self, names: Iterable[str]) -> list[str]:
        """Those of `names` that are neither a module nor built in (normalized)."""
        builtin = self.builtin()
        normal = dict.fromkeys(_normal(n) for n in names)
        return [n for n in normal if n not in self._modules and n not in builtin]

    def closure(self, names: Iterable[str]) -> list[str]:
        """The relpaths of the modules `names` and all they need, each after what it
        needs (the order modprobe would load them in), deterministic. A built-in name
        needs nothing loaded; a name that is neither raises Oci2vmError (missing() tells
        them beforehand). Soft dependencies are not followed."""
        names = list(names)
        if unknown := self.missing(names):
            raise Oci2vmError(
                f"kernel module{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                f"neither built in nor among the kernel's {len(self._modules)} modules"
            )
        graph = self._graph_now()
        where = {m.name: i for i, m in enumerate(graph.modules)}
        wanted: set[int] = set()
        for name in names:
            if (index := where.get(_normal(name))) is not None:
                wanted.add(index)
                wanted.update(graph.all_deps(index))
        ordered = sorted(wanted, key=graph.rank.__getitem__, reverse=True)
        return [graph.modules[i].relpath for i in ordered]

    def indices(self, version: str, *, weakdep: bool = True) -> dict[str, bytes]:
        """The files depmod writes into /lib/modules/`version`, by name; modules.weakdep
        (kmod 33 on; older kmod passes it over) unless `weakdep` is False."""
        graph = self._graph_now()
        what = f"/lib/modules/{version}"
        files = {
            "modules.dep": _deps_text(graph),
            "modules.dep.bin": _deps_bin(graph, f"{what}/modules.dep.bin"),
            "modules.alias": _aliases_text(graph),
            "modules.alias.bin": _aliases_bin(graph, f"{what}/modules.alias.bin"),
            "modules.softdep": _keyed_text(graph, SOFTDEP_HEADER, "softdep"),
            "modules.symbols": _symbols_text(graph),
            "modules.symbols.bin": _symbols_bin(graph, f"{what}/modules.symbols.bin"),
            "modules.builtin.bin": b"",
            "modules.builtin.alias.bin": b"",
            "modules.devname": _devname(graph),
        }
        if weakdep:
            files["modules.weakdep"] = _keyed_text(graph, WEAKDEP_HEADER, "weakdep")
        if self._has_builtin:  # depmod leaves them empty without their sources
            files["modules.builtin.bin"] = _builtin_bin(self._builtin, what)
            files["modules.builtin.alias.bin"] = _builtin_alias_bin(self._builtin_modinfo, what)
        return dict(sorted(files.items()))

    def _graph_now(self) -> _Graph:
        if self._graph is None:
            self._graph = _build_graph(self._ordered())
        return self._graph

    def _ordered(self) -> list[_Module]:
        """depmod_modules_sort: modules.order's order, the rest after in hash order."""
        by_hash = sorted(
            self._modules.values(),
            key=lambda m: (
                superfast_hash(m.name.encode()) & (MODULES_BY_NAME_BUCKETS - 1),
                m.name.encode(),
            ),
        )
        order = self._order
        if order is None or (order and not order.endswith(b"\n")):
            return by_hash  # no modules.order, or one depmod calls corrupt: no sorting
        lines = order.split(b"\n")[:-1]
        by_path = {m.unversioned(): m.name for m in by_hash}
        place: dict[str, int] = {}
        for number, line in enumerate(lines):
            if (name := by_path.get(line.decode("utf-8", "surrogateescape"))) is not None:
                place[name] = number
        return sorted(by_hash, key=lambda m: place.get(m.name, len(lines)))


def _normal(name: str) -> str:
    return name.replace("-", "_")


def _build_graph(modules: list[_Module]) -> _Graph:
    """depmod_load_dependencies and depmod_calculate_dependencies."""
    owners: dict[str, int] = {}
    for index, module in enumerate(modules):
        for symbol in module.exports:
            owners[symbol] = index
    deps: list[list[int]] = []
    users = [0] * len(modules)
    for module in modules:
        mine: dict[int, None] = {}
        for symbol in module.needs:
            owner = owners.get(symbol[1:] if symbol.startswith(".") else symbol)
            if owner is not None and owner not in mine:
                mine[owner] = None
                users[owner] += 1
        deps.append(list(mine))
    rank = _topological(modules, deps, users)
    return _Graph(
        tuple(modules),
        tuple(tuple(sorted(d, key=rank.__getitem__)) for d in deps),
        tuple(rank),
        owners,
    )


def _topological(modules: list[_Module], deps: list[list[int]], users: list[int]) -> list[int]:
    """depmod's numbering: modules nobody needs first, taken from a stack that starts
    with them in order, each one's dependencies pushed as their last user is taken."""
    rank = [-1] * len(modules)
    roots = [i for i, count in enumerate(users) if count == 0]
    taken = 0
    while roots:
        source = roots.pop()
        rank[source] = taken
        taken += 1
        for dep in deps[source]:
            users[dep] -= 1
            if users[dep] == 0:
                roots.append(dep)
    if taken < len(modules):
        cycle = sorted(modules[i].name for i in range(len(modules)) if rank[i] < 0)
        raise Oci2vmError(
            f"kernel modules depend on each other in a cycle (depmod refuses them too): "
            f"{', '.join(cycle[:10])}{' ...' if len(cycle) > 10 else ''}"
        )
    return rank


def _dep_line(graph: _Graph, index: int) -> str:
    paths = "".join(f" {graph.modules[d].relpath}" for d in graph.all_deps(index))
    return f"{graph.modules[index].relpath}:{paths}"


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _deps_text(graph: _Graph) -> bytes:
    return b"".join(_encode(_dep_line(graph, i)) + b"\n" for i in range(len(graph.modules)))


def _deps_bin(graph: _Graph, what: str) -> bytes:
    index = IndexBuilder(what)
    for i, module in enumerate(graph.modules):
        index.insert(module.name, _dep_line(graph, i), i)
    return index.build()


def _aliases_text(graph: _Graph) -> bytes:
    lines = (f"alias {a} {m.name}\n" for m in graph.modules for a in m.aliases)
    return ALIAS_HEADER + _encode("".join(lines))


def _aliases_bin(graph: _Graph, what: str) -> bytes:
    index = IndexBuilder(what)
    for i, module in enumerate(graph.modules):
        for alias in module.aliases:
            if (normal := alias_normalize(alias)) is not None:
                index.insert(normal, module.name, i)
    return index.build()


def _keyed_text(graph: _Graph, header: bytes, key: str) -> bytes:
    """modules.softdep or modules.weakdep: "KEY MODULE VALUE" per .modinfo line."""
    field = "softdeps" if key == "softdep" else "weakdeps"
    lines = (f"{key} {m.name} {v}\n" for m in graph.modules for v in getattr(m, field))
    return header + _encode("".join(lines))


def _symbols_text(graph: _Graph) -> bytes:
    names = hash_order(list(graph.owners), SYMBOL_BUCKETS)
    lines = (f"alias symbol:{s} {graph.modules[graph.owners[s]].name}\n" for s in names)
    return SYMBOL_HEADER + _encode("".join(lines))


def _symbols_bin(graph: _Graph, what: str) -> bytes:
    index = IndexBuilder(what)
    for symbol in hash_order(list(graph.owners), SYMBOL_BUCKETS):
        owner = graph.owners[symbol]
        index.insert(f"symbol:{symbol}", graph.modules[owner].name, owner)
    return index.build()


def _devname(graph: _Graph) -> bytes:
    """modules.devname: modules with a "devname:NAME" alias and a char-/block-major one
    (output_devname; scanf's %u wraps a negative number)."""
    out = []
    for module in graph.modules:
        devname: str | None = None
        device = ""
        for alias in module.aliases:
            if alias.startswith("devname:"):
                devname = alias.removeprefix("devname:")
            elif match := DEVICE_ALIAS.match(alias):
                major, minor = (int(n) & 0xFFFFFFFF for n in match.group(2, 3))
                device = f"{match.group(1)[0]}{major}:{minor}"
            if device and devname is not None:
                break
        if devname is not None and device:
            out.append(f"{module.name} {devname} {device}\n")
    return DEVNAME_HEADER + _encode("".join(out)) if out else b""


def alias_normalize(alias: str) -> str | None:
    """kmod's alias_normalize: '-' read as '_' outside [...] ranges; None for an
    unmatched bracket (depmod leaves such an alias out of modules.alias.bin)."""
    out = []
    i = 0
    while i < len(alias) and i < PATH_MAX - 1:
        char = alias[i]
        if char == "]":
            return None
        if char == "[":
            end = alias.find("]", i)
            if end < 0:
                return None
            out.append(alias[i : end + 1])
            i = end + 1
            continue
        out.append("_" if char == "-" else char)
        i += 1
    return "".join(out)


def _builtin_names(modules_builtin: bytes) -> list[str]:
    """output_builtin_bin's reading of modules.builtin: per line starting with a letter,
    the file name up to its first '.', '-' read as '_' (the newline kept when there is
    no '.'); lines whose file name is empty are passed over."""
    names = []
    for line in modules_builtin.splitlines(keepends=True):
        if not line[:1].isalpha():
            continue
        base = line.rsplit(b"/", 1)[-1]
        if base:
            names.append(base.split(b".", 1)[0].replace(b"-", b"_").decode("utf-8", "replace"))
    return names


def _builtin_bin(modules_builtin: bytes, what: str) -> bytes:
    index = IndexBuilder(f"{what}/modules.builtin.bin")
    for name in _builtin_names(modules_builtin):
        index.insert(name, "", 0)
    return index.build()


def _builtin_alias_bin(builtin_modinfo: bytes, what: str) -> bytes:
    """output_builtin_alias_bin: "module.alias=VALUE" entries of modules.builtin.modinfo,
    read as its stream parser reads them."""
    index = IndexBuilder(f"{what}/modules.builtin.alias.bin")
    data, pos = builtin_modinfo, 0
    while pos < len(data):
        module, found, pos = _take(data, pos, 0x2E)  # '.'
        if not found or not module:
            continue
        key, found, pos = _take(data, pos, 0x3D)  # '='
        if not found or key != b"alias":
            end = data.find(b"\0", pos)  # flush_stream: on past the next NUL
            pos = len(data) if end < 0 else end + 1
            continue
        value, found, pos = _take(data, pos, 0)
        if found and value and (alias := alias_normalize(_text(value))) is not None:
            index.insert(alias, _text(module), 0)
    return index.build()


def _take(data: bytes, pos: int, stop: int) -> tuple[bytes, bool, int]:
    """flush_stream_to: the bytes up to `stop` or NUL, whether `stop` ended them, and
    the position after the byte that did."""
    ends = [e for e in (data.find(bytes([stop]), pos), data.find(b"\0", pos)) if e >= 0]
    if not ends:
        return data[pos:], False, len(data)
    end = min(ends)
    return data[pos:end], data[end] == stop, end + 1


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
