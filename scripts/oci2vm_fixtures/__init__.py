"""The fixture image builder: FIXTURES (name -> recipe version, builder) and ensure_fixture,
over a package that shares no code with oci2vm (stdlib + zstandard only), as the yardstick
for its readers must not. scripts/build_fixtures.py runs it; tests/fixture_images.py loads it."""

from __future__ import annotations

from pathlib import Path

from .busybox import BUSYBOX_VERSION, CASES, build_busybox
from .busybox_app import APP_APPLETS, BUSYBOX_APP_VERSION, INDEX_HTML, build_busybox_app
from .cache import Builder, default_cache, ensure
from .debian import (
    DEBIAN_MINBASE_VERSION,
    DEBIAN_STAGE_VERSION,
    DEBIAN_SYSTEMD_VERSION,
    DEBIAN_VERSION,
    build_debian,
    build_debian_minbase,
    build_debian_systemd,
)

__all__ = [
    "APP_APPLETS",
    "BUSYBOX_VERSION",
    "CASES",
    "DEBIAN_STAGE_VERSION",
    "DEBIAN_VERSION",
    "FIXTURES",
    "INDEX_HTML",
    "Builder",
    "default_cache",
    "ensure",
    "ensure_fixture",
    "fixture_dir",
]

FIXTURES: dict[str, tuple[int, Builder]] = {
    "busybox": (BUSYBOX_VERSION, build_busybox),
    "busybox-app": (BUSYBOX_APP_VERSION, build_busybox_app),
    "debian": (DEBIAN_VERSION, build_debian),
    "debian-minbase": (DEBIAN_MINBASE_VERSION, build_debian_minbase),
    "debian-systemd": (DEBIAN_SYSTEMD_VERSION, build_debian_systemd),
}
# A fixture's cache directory is <stem>-v<version>, the stem its name unless a build stage
# already holds that name: "debian-minbase" is the debootstrap stage the Debian images share.
CACHE_STEMS = {"debian-minbase": "debian-minbase-image"}


def fixture_dir(name: str, cache: Path | None = None) -> Path:
    """Where fixture `name` at its current recipe version lives (or will, once built)."""
    return (cache or default_cache()) / f"{CACHE_STEMS.get(name, name)}-v{FIXTURES[name][0]}"


def ensure_fixture(name: str, cache: Path | None = None) -> Path:
    version, build = FIXTURES[name]
    return ensure(cache or default_cache(), CACHE_STEMS.get(name, name), version, build)
