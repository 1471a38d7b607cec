"""The fixture image builder: FIXTURES (name -> recipe version, builder) and ensure_fixture,
over a package that shares no code with oci2vm (stdlib + zstandard only), as the yardstick
for its readers must not. scripts/build_fixtures.py runs it; tests/fixture_images.py loads it."""

from __future__ import annotations

from pathlib import Path

from .busybox import BUSYBOX_VERSION, CASES, build_busybox
from .busybox_app import APP_APPLETS, BUSYBOX_APP_VERSION, INDEX_HTML, build_busybox_app
from .busybox_init import BUSYBOX_INIT_VERSION, INIT_APPLETS, build_busybox_init
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
from .debian_systems import (
    DEBIAN_CLOUDINIT_VERSION,
    DEBIAN_OPENRC_VERSION,
    DEBIAN_RUNIT_VERSION,
    DEBIAN_SYSVINIT_VERSION,
    DEBIAN_TRIXIE_VERSION,
    build_debian_cloudinit,
    build_debian_openrc,
    build_debian_runit,
    build_debian_sysvinit,
    build_debian_trixie,
)

__all__ = [
    "APP_APPLETS",
    "BUSYBOX_VERSION",
    "CASES",
    "DEBIAN_STAGE_VERSION",
    "DEBIAN_VERSION",
    "FIXTURES",
    "INDEX_HTML",
    "INIT_APPLETS",
    "Builder",
    "default_cache",
    "ensure",
    "ensure_fixture",
    "fixture_dir",
]

FIXTURES: dict[str, tuple[int, Builder]] = {
    "busybox": (BUSYBOX_VERSION, build_busybox),
    "busybox-app": (BUSYBOX_APP_VERSION, build_busybox_app),
    "busybox-init": (BUSYBOX_INIT_VERSION, build_busybox_init),
    "debian": (DEBIAN_VERSION, build_debian),
    "debian-minbase": (DEBIAN_MINBASE_VERSION, build_debian_minbase),
    "debian-systemd": (DEBIAN_SYSTEMD_VERSION, build_debian_systemd),
    "debian-sysvinit": (DEBIAN_SYSVINIT_VERSION, build_debian_sysvinit),
    "debian-openrc": (DEBIAN_OPENRC_VERSION, build_debian_openrc),
    "debian-runit": (DEBIAN_RUNIT_VERSION, build_debian_runit),
    "debian-trixie": (DEBIAN_TRIXIE_VERSION, build_debian_trixie),
    "debian-cloudinit": (DEBIAN_CLOUDINIT_VERSION, build_debian_cloudinit),
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
