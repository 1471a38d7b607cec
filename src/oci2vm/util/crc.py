"""CRC-32C (Castagnoli), from the crc32c package's extension module.

The package's __init__ imports importlib.metadata to set its __version__, about 30 ms of
every start-up (a seventh of a build's); the extension module it wraps needs none of it,
so it is loaded from the package's folder directly. Any surprise in that folder falls back
to the plain import.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _extension() -> Any:
    spec = importlib.util.find_spec("crc32c")  # finds the package without running it
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_crc32c{suffix}"
            if not path.is_file():
                continue
            loader = importlib.machinery.ExtensionFileLoader("crc32c._crc32c", str(path))
            found = importlib.util.spec_from_file_location("crc32c._crc32c", path, loader=loader)
            if found is None:
                continue
            module = importlib.util.module_from_spec(found)
            loader.exec_module(module)
            if callable(getattr(module, "crc32c", None)):
                return module
    import crc32c

    return crc32c


# crc32c(data, value): the running CRC-32C of `data` continuing from `value` (0 to begin),
# with the standard pre- and post-inversion.
crc32c: Callable[[bytes | bytearray | memoryview, int], int] = _extension().crc32c
