"""Debian's control-file syntax (deb822(5)): the fields of one paragraph, the relation
fields (Depends, Provides) and version comparison (deb-version(7)), for the Release file,
the Packages index and a package's control file.

Only what the archive chain needs is parsed, one paragraph at a time as an index streams
past (python-debian's deb822 would parse every field of all ~60,000 paragraphs of a
Packages index, for the few this reads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oci2vm.errors import Oci2vmError

_FIELD = re.compile(rb"^([!-9;-~][!-9;-~]*):[ \t]*(.*)$")  # deb822(5): a name, then a colon
_RELATION = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9.+-]*)(?::[a-z0-9-]+)?"
    r"(?:\s*\(\s*(?P<op><<|<=|=|>=|>>|<|>)\s*(?P<version>[^\s)]+)\s*\))?"
    r"(?:\s*\[[^\]]*\])?(?:\s*<[^>]*>)*$"
)


def parse_fields(data: bytes, what: str) -> dict[str, str]:
    """One paragraph's fields; a continuation line (starting with a space or tab) extends
    the field before it, joined by a newline, as deb822(5) folds multiline fields."""
    fields: dict[str, str] = {}
    last: str | None = None
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        if raw[:1] in (b" ", b"\t"):
            if last is None:
                raise Oci2vmError(f"{what}: malformed control data (continuation first)")
            fields[last] += "\n" + _text(raw.strip(), what)
            continue
        if raw.startswith(b"#"):
            continue
        match = _FIELD.match(raw)
        if match is None:
            raise Oci2vmError(f"{what}: malformed control data line {_text(raw[:60], what)!r}")
        last = _text(match[1], what)
        fields[last] = _text(match[2].strip(), what)
    return fields


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Oci2vmError(f"{what}: control data is not UTF-8") from None


@dataclass(frozen=True, slots=True)
class Relation:
    """One package named in a relation field, with its optional version constraint."""

    name: str
    op: str | None = None  # <<, <=, =, >=, >> (the obsolete < and > read as <= and >=)
    version: str | None = None

    def satisfied_by(self, version: str) -> bool:
        if self.op is None or self.version is None:
            return True
        order = compare_versions(version, self.version)
        return {
            "<<": order < 0, "<=": order <= 0, "=": order == 0, ">=": order >= 0, ">>": order > 0
        }[self.op]  # fmt: skip


def parse_relations(text: str, what: str) -> list[list[Relation]]:
    """A relation field: comma-separated clauses of '|'-separated alternatives."""
    clauses: list[list[Relation]] = []
    for clause in text.replace("\n", " ").split(","):
        if not clause.strip():
            continue
        alternatives = []
        for alternative in clause.split("|"):
            match = _RELATION.match(alternative.strip())
            if match is None:
                raise Oci2vmError(f"{what}: malformed relation {alternative.strip()!r}")
            op = {"<": "<=", ">": ">="}.get(match["op"], match["op"])
            alternatives.append(Relation(match["name"], op, match["version"]))
        clauses.append(alternatives)
    return clauses


def _order(char: str) -> int:
    """deb-version(7): '~' sorts before everything, even the end; letters before others."""
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """Compare an upstream version or revision: alternating non-digit and digit runs."""
    while a or b:
        a_text = re.match(r"[^0-9]*", a)[0]  # type: ignore[index]
        b_text = re.match(r"[^0-9]*", b)[0]  # type: ignore[index]
        for i in range(max(len(a_text), len(b_text))):
            ca = _order(a_text[i]) if i < len(a_text) else 0
            cb = _order(b_text[i]) if i < len(b_text) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(a_text) :], b[len(b_text) :]
        a_num = re.match(r"[0-9]*", a)[0]  # type: ignore[index]
        b_num = re.match(r"[0-9]*", b)[0]  # type: ignore[index]
        if int(a_num or 0) != int(b_num or 0):
            return -1 if int(a_num or 0) < int(b_num or 0) else 1
        a, b = a[len(a_num) :], b[len(b_num) :]
    return 0


def _split_version(version: str) -> tuple[int, str, str]:
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return (int(epoch) if epoch.isdigit() else 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version `a` sorts before, equal to or after `b` (dpkg's order)."""
    epoch_a, upstream_a, revision_a = _split_version(a)
    epoch_b, upstream_b, revision_b = _split_version(b)
    if epoch_a != epoch_b:
        return -1 if epoch_a < epoch_b else 1
    return _compare_part(upstream_a, upstream_b) or _compare_part(revision_a, revision_b)
