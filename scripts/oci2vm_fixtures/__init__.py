"""The fixture image builder: FIXTURES (name -> recipe version, builder) and ensure_fixture,
over a package that shares no code with oci2vm (stdlib + zstandard only), as the yardstick
for its readers must not. scripts/build_fixtures.py runs it; tests/fixture_images.py loads it."""

from __future__ import annotations

from pathlib import Path

from .busybox import BUSYBOX_VERSION, CASES, build_busybox
from .cache import Builder, default_cache, ensure
from .debian import DEBIAN_STAGE_VERSION, DEBIAN_VERSION, build_debian

__all__ = [
    "BUSYBOX_VERSION",
    "CASES",
    "DEBIAN_STAGE_VERSION",
    "DEBIAN_VERSION",
    "FIXTURES",
    "Builder",
    "default_cache",
    "ensure",
    "ensure_fixture",
]

FIXTURES: dict[str, tuple[int, Builder]] = {
    "busybox": (BUSYBOX_VERSION, build_busybox),
    "debian": (DEBIAN_VERSION, build_debian),
}


def ensure_fixture(name: str, cache: Path | None = None) -> Path:
    version, build = FIXTURES[name]
    return ensure(cache or default_cache(), name, version, build)
