"""Which of oci2vm's modules run compiled, and the guard that keeps stale ones out.

setup.py compiles the per-entry hot path with mypyc and writes native.json beside this
module: each compiled module's name and the sha256 of the source it was built from, and
the name of the library they share (beside the package, as mypyc places it). The
compiled modules call one another directly in C, so they are taken all together or not
at all: if any listed source changed since the build (an edited checkout), or
OCI2VM_PURE_PYTHON is set, a finder placed ahead of the standard ones loads every listed
module from its .py instead. The sources are the reference either way; the outputs are
the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MANIFEST = Path(__file__).with_name("native.json")
PACKAGE_ROOT = Path(__file__).parent.parent


@dataclass(frozen=True)
class NativeState:
    """compiled: the listed modules load from their extensions. modules: those listed by
    the build (empty for a pure-Python build). why: why they do not, when they do not."""

    compiled: bool
    modules: tuple[str, ...]
    why: str


def _source(module: str) -> Path:
    return PACKAGE_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def _decide() -> NativeState:
    try:
        manifest = json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return NativeState(False, (), "a pure-Python build")
    built: dict[str, str] = manifest["modules"]
    modules = tuple(sorted(built))
    if os.environ.get("OCI2VM_PURE_PYTHON"):
        return NativeState(False, modules, "OCI2VM_PURE_PYTHON is set")
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    library = manifest["library"]
    if not any(PACKAGE_ROOT.joinpath(library + suffix).exists() for suffix in suffixes):
        return NativeState(False, modules, f"their shared library {library} is missing")
    for module, digest in built.items():
        try:
            now = hashlib.sha256(_source(module).read_bytes()).hexdigest()
        except OSError:
            now = ""
        extension = any(_source(module).with_suffix(s).exists() for s in suffixes)
        if now != digest or not extension:
            what = "changed since" if extension else "not compiled by"
            return NativeState(False, modules, f"{module}'s source {what} the build")
    return NativeState(True, modules, "")


class _SourceFirst:
    """Loads the listed modules from their .py files, ahead of their extensions (a meta
    path finder; not derived from importlib.abc's, whose import costs 30 ms at start-up)."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


STATE = _decide()
if STATE.modules and not STATE.compiled:
    sys.meta_path.insert(0, _SourceFirst(STATE.modules))
