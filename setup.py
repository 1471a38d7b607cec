"""Build hook: the per-entry hot path compiled to C with mypyc, when it can be.

Everything else about the package is in pyproject.toml. The modules listed in NATIVE run
once or more per tar member or per inode (tar parsing, flattening, the tree's columns, the
ext4 writer); mypyc compiles their strictly typed Python into C extensions, the way black
and mypy ship. The .py sources stay beside the extensions and are the reference: the
package loads the compiled modules only while every one of them was built from the
sources as they are now (see oci2vm/native.py), so an edited checkout never runs stale
code. OCI2VM_COMPILE=0 builds pure Python; without a C compiler or Python's headers the
build says so and falls back to pure Python (the same outputs, slower), unless
OCI2VM_COMPILE=1 asks for the compiled modules (then it fails).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

NATIVE = [
    "oci2vm/layers/tarstream.py",
    "oci2vm/layers/flatten.py",
    "oci2vm/layers/decompress.py",
    "oci2vm/tree/columns.py",
    "oci2vm/fs/blockio.py",
    "oci2vm/fs/ext4/dirs.py",
    "oci2vm/fs/ext4/groups.py",
    "oci2vm/fs/ext4/inode.py",
    "oci2vm/fs/ext4/layout.py",
    "oci2vm/fs/ext4/numbering.py",
    "oci2vm/fs/ext4/placements.py",
    "oci2vm/fs/ext4/writer.py",
    "oci2vm/fs/ext4/xattr.py",
]
MANIFEST = "native.json"  # written beside oci2vm/__init__ of the build: module -> source hash
GROUP = "oci2vm"  # the compiled modules share one library, GROUP__mypyc, beside the package


class BuildNative(build_ext):
    """build_ext that records which sources the extensions were compiled from, and falls
    back to pure Python where they cannot be compiled (no C compiler, no Python.h)."""

    def run(self) -> None:
        if not self.extensions:
            return
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, PlatformError) as e:
            if os.environ.get("OCI2VM_COMPILE") == "1":
                raise
            print(
                f"oci2vm: cannot compile the native modules ({e}): building pure Python "
                "(apt install gcc python3-dev for the compiled ones)",
                file=sys.stderr,
            )
            self.extensions = []
            return
        anchor = Path(self.get_ext_fullpath("oci2vm.tree.columns")).parent.parent
        sources = {
            path.removesuffix(".py").replace("/", "."): hashlib.sha256(
                (Path("src") / path).read_bytes()
            ).hexdigest()
            for path in NATIVE
        }
        manifest = {"library": f"{GROUP}__mypyc", "modules": sources}
        (anchor / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def native_extensions() -> list[object]:
    if os.environ.get("OCI2VM_COMPILE") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("oci2vm: mypyc is missing: building pure Python", file=sys.stderr)
        return []
    # mypy names each module by the packages above its path: src/oci2vm/... is oci2vm....
    return list(mypycify([f"src/{path}" for path in NATIVE], opt_level="3", group_name=GROUP))


setup(ext_modules=native_extensions(), cmdclass={"build_ext": BuildNative})
