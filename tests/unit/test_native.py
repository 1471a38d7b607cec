"""The compiled hot path (setup.py, oci2vm/native.py): taken only while every compiled
module matches its source, all or none, and the same bytes either way."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from pathlib import Path

import pytest

from oci2vm import native

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, extension: bool = True) -> Path:
    """A package `pkg` with two modules built 'compiled' (an extension file beside each
    source) and a manifest naming them; native reads this one instead of oci2vm's."""
    package = tmp_path / "pkg"
    package.mkdir()
    built = {}
    for name in ("a", "b"):
        source = package / f"{name}.py"
        source.write_text(f"WHO = {name!r}\n")
        if extension:
            source.with_suffix(SUFFIX).write_bytes(b"")
        built[f"pkg.{name}"] = hashlib.sha256(source.read_bytes()).hexdigest()
    (tmp_path / f"pkg__mypyc{SUFFIX}").write_bytes(b"")
    manifest = tmp_path / "native.json"
    manifest.write_text(json.dumps({"library": "pkg__mypyc", "modules": built}))
    monkeypatch.setattr(native, "MANIFEST", manifest)
    monkeypatch.setattr(native, "PACKAGE_ROOT", tmp_path)
    monkeypatch.delenv("OCI2VM_PURE_PYTHON", raising=False)
    return package


def test_modules_built_from_the_sources_as_they_are_run_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_build(tmp_path, monkeypatch)
    assert native._decide() == native.NativeState(True, ("pkg.a", "pkg.b"), "")


def test_one_edited_source_sends_every_module_back_to_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = fake_build(tmp_path, monkeypatch)
    (package / "b.py").write_text("WHO = 'edited'\n")
    state = native._decide()
    assert state == native.NativeState(
        False, ("pkg.a", "pkg.b"), "pkg.b's source changed since the build"
    )
    finder = native._SourceFirst(state.modules)
    for name in ("a", "b"):  # both, though a did not change: they call each other in C
        spec = finder.find_spec(f"pkg.{name}", None)
        assert spec is not None and spec.origin == str(package / f"{name}.py")
        assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert finder.find_spec("pkg.other", None) is None


def test_a_missing_extension_or_the_environment_chooses_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_build(tmp_path, monkeypatch, extension=False)
    assert native._decide().why == "pkg.a's source not compiled by the build"
    (tmp_path / "again").mkdir()
    fake_build(tmp_path / "again", monkeypatch)
    monkeypatch.setenv("OCI2VM_PURE_PYTHON", "1")
    assert native._decide() == native.NativeState(
        False, ("pkg.a", "pkg.b"), "OCI2VM_PURE_PYTHON is set"
    )


def test_a_missing_shared_library_chooses_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the package without the library beside it (as a copied site dir had)."""
    fake_build(tmp_path, monkeypatch)
    (tmp_path / f"pkg__mypyc{SUFFIX}").unlink()
    assert native._decide().why == "their shared library pkg__mypyc is missing"


def test_a_pure_python_build_has_no_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native, "MANIFEST", tmp_path / "native.json")
    assert native._decide() == native.NativeState(False, (), "a pure-Python build")


def test_ci_runs_the_compiled_modules() -> None:
    """The README's install compiles the hot path (gcc, python3-dev): CI tests what users
    run. A checkout edited since its install runs the sources, which is fine off CI."""
    if not os.environ.get("CI") and not native.STATE.compiled:
        pytest.skip(f"the hot path runs as Python here ({native.STATE.why})")
    assert native.STATE.compiled, native.STATE.why
    for module in native.STATE.modules:
        origin = sys.modules[module].__file__ if module in sys.modules else None
        if origin is None:
            __import__(module)
            origin = sys.modules[module].__file__
        assert origin is not None and origin.endswith(SUFFIX), (module, origin)
