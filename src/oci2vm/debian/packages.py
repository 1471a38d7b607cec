"""A suite's Packages index: the records of the packages asked for, found in one streaming
pass over the (decompressed) index, and the metapackage rule that leads from a name such as
Debian's kernel metapackage to the package that holds the files."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from oci2vm.debian.control import Relation, compare_versions, parse_fields, parse_relations
from oci2vm.errors import Oci2vmError
from oci2vm.layers.tarstream import Source

SCAN_CHUNK = 1 << 20
MAX_PARAGRAPH = 1 << 20  # one package's record; the longest in Debian are a few kB
MAX_METAPACKAGE_DEPTH = 8
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Package:
    """One package's record in the index: enough to fetch, verify and resolve it."""

    name: str
    version: str
    architecture: str
    source: str  # the source package's name (the package's own when not given)
    filename: str  # its path under the mirror's root (pool/...)
    size: int
    sha256: str  # hex
    depends: tuple[tuple[Relation, ...], ...] = ()
    provides: tuple[Relation, ...] = ()
    installed_size_kib: int | None = None

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def parse_package(fields: dict[str, str], what: str) -> Package:
    """A Package from one index paragraph; a record missing what the chain needs is refused."""
    name = fields.get("Package", "")
    where = f"{what}: {name or 'a record'}"
    sha256, size = fields.get("SHA256", ""), fields.get("Size", "")
    if not (name and fields.get("Version") and fields.get("Filename")):
        raise Oci2vmError(f"{where}: lacks Package, Version or Filename: check --mirror")
    if not _SHA256.match(sha256) or not size.isdigit():
        raise Oci2vmError(f"{where}: lacks a valid SHA256 or Size: check --mirror")
    installed = fields.get("Installed-Size", "")
    return Package(
        name=name,
        version=fields["Version"],
        architecture=fields.get("Architecture", ""),
        source=fields.get("Source", name).split(" ", 1)[0],
        filename=fields["Filename"],
        size=int(size),
        sha256=sha256,
        depends=tuple(
            tuple(clause)
            for field in ("Pre-Depends", "Depends")
            for clause in parse_relations(fields.get(field, ""), where)
        ),
        provides=tuple(c[0] for c in parse_relations(fields.get("Provides", ""), where)),
        installed_size_kib=int(installed) if installed.isdigit() else None,
    )


def paragraphs(stream: Source, what: str, containing: tuple[bytes, ...] = ()) -> Iterator[bytes]:
    """The paragraphs of a control file streamed from `stream`, one at a time; with
    `containing`, only those in which one of these byte strings occurs (a pass over a
    suite's index for a few names then looks at the few pieces that hold them, not at
    each of its ~60,000 records)."""
    buffer = b""
    while True:
        chunk = bytes(stream.view(SCAN_CHUNK))
        if not chunk:
            break
        data = buffer + chunk
        parts = data.split(b"\n\n")
        buffer = parts.pop()
        whole = len(data) - len(buffer)
        if not containing or any(data.find(c, 0, whole) >= 0 for c in containing):
            yield from (p for p in parts if p.strip() and _holds(p, containing))
        if len(buffer) > MAX_PARAGRAPH:
            raise Oci2vmError(f"{what}: a record longer than {MAX_PARAGRAPH} bytes: check --mirror")
    if buffer.strip() and _holds(buffer, containing):
        yield buffer


def _holds(paragraph: bytes, containing: tuple[bytes, ...]) -> bool:
    return not containing or any(c in paragraph for c in containing)


def _provided(paragraph: bytes) -> set[str]:
    start = paragraph.find(b"\nProvides:")
    if start < 0:
        return set()
    line = paragraph[start + 10 :].split(b"\n", 1)[0].decode("utf-8", "replace")
    return {part.split("(")[0].strip() for part in line.split(",")}


def _heads(names: set[str]) -> tuple[bytes, ...]:
    """How the records of packages of these names start."""
    return tuple(f"Package: {n}\n".encode() for n in names)


OpenIndex = Callable[[], AbstractContextManager[Source]]


class PackageIndex:
    """The packages of one index (a component and architecture of a suite). `open_index`
    opens its decompressed, verified stream; each lookup of names not seen yet is one pass,
    unless expect() named them beforehand."""

    def __init__(self, open_index: OpenIndex, what: str) -> None:
        self._open = open_index
        self.what = what
        self._found: dict[str, Package] = {}  # by name: the highest version of each
        self._providers: dict[str, list[Package]] = {}
        self._looked_up: set[str] = set()
        self._expected: set[str] = set()  # prefixes for the next pass to keep records of
        self._covered: set[str] = set()  # prefixes whose every record is in _kept
        self._kept: list[bytes] = []

    def expect(self, *prefixes: str) -> None:
        """Names that start with one of `prefixes` will be looked up (a metapackage and the
        package it pins, say): the next pass keeps every record that mentions one, so that
        their lookups take no pass of their own (a pass inflates the whole index)."""
        self._expected.update(p for p in prefixes if p and p not in self._covered)

    def _scan(self, names: set[str]) -> None:
        expected = self._expected
        kept = tuple(p.encode() for p in expected)
        heads = _heads(names)
        needles = tuple(n.encode() for n in names) + kept  # in every record that names one
        with self._open() as stream:
            for paragraph in paragraphs(stream, self.what, needles):
                self._take(paragraph, names, heads)
                if any(p in paragraph for p in kept):
                    self._kept.append(paragraph)
        self._looked_up |= names
        self._covered |= expected
        self._expected = set()

    def _take(self, paragraph: bytes, names: set[str], heads: tuple[bytes, ...]) -> None:
        """Record `paragraph`'s package if it is one of `names` (its record starts with
        one of `heads`) or provides one."""
        provided = _provided(paragraph) & names
        if not (paragraph.startswith(heads) or provided):
            return
        package = parse_package(parse_fields(paragraph, self.what), self.what)
        if package.name in names:
            self._keep(package)
        for virtual in provided:
            self._providers.setdefault(virtual, []).append(package)

    def _keep(self, package: Package) -> None:
        old = self._found.get(package.name)
        if old is None or compare_versions(package.version, old.version) > 0:
            self._found[package.name] = package

    def lookup(self, names: Iterable[str]) -> dict[str, Package]:
        """The packages of these names that the index holds (its highest version of each)."""
        wanted = set(names)
        new = wanted - self._looked_up
        covered = {n for n in new if n.startswith(tuple(self._covered))}
        if covered:  # every record that names them was kept by an earlier pass
            heads = _heads(covered)
            for paragraph in self._kept:
                self._take(paragraph, covered, heads)
            self._looked_up |= covered
        if new - covered:
            self._scan(new - covered)
        return {n: self._found[n] for n in wanted if n in self._found}

    def providers(self, name: str) -> list[Package]:
        """The packages that Provide the virtual package `name`."""
        self.lookup([name])
        return list(self._providers.get(name, []))

    def names(self, prefix: str) -> list[str]:
        """The names of the index's packages that start with `prefix`, sorted (one pass)."""
        key = f"Package: {prefix}".encode()
        with self._open() as stream:
            found = {
                p.split(b"\n", 1)[0][9:].decode("utf-8", "replace")
                for p in paragraphs(stream, self.what, (key,))
                if p.startswith(key)
            }
        return sorted(found)

    def get(self, name: str) -> Package:
        found = self.lookup([name]).get(name)
        if found is None:
            raise Oci2vmError(
                f"no package {name!r} in {self.what}: check the name "
                "(packages.debian.org lists each suite's packages)"
            )
        return found

    def resolve(self, name: str) -> Package:
        """The package that holds the files behind `name`. A metapackage (Debian's kernel
        metapackages, for one) depends on exactly one version of a package built from the
        same source; that one is followed, as often as the chain goes. Any other package
        resolves to itself."""
        package = self.get(name)
        for _ in range(MAX_METAPACKAGE_DEPTH):
            target = self._pinned_sibling(package)
            if target is None:
                return package
            package = target
        raise Oci2vmError(f"{self.what}: {name} depends on itself in a loop: check --mirror")

    def _pinned_sibling(self, package: Package) -> Package | None:
        """The pinned dependency of the same source; of several, the one whose name shares
        most with the package's (sid's kernel metapackage linux-image-FLAVOUR pins the
        metapackage linux-base-FLAVOUR first, then linux-image-VERSION-FLAVOUR, which holds
        the kernel)."""
        pinned = [c[0] for c in package.depends if len(c) == 1 and c[0].op == "="]
        found = self.lookup(r.name for r in pinned)
        name = package.name
        pinned.sort(key=lambda r: -_shared_prefix(name, r.name))  # (stable)
        for relation in pinned:
            target = found.get(relation.name)
            if (
                target is not None
                and target.source == package.source
                and relation.satisfied_by(target.version)
            ):
                return target
        return None


def _shared_prefix(a: str, b: str) -> int:
    """How many leading characters `a` and `b` share."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
