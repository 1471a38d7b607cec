"""The Debian images of the boot matrix, one per init system and release, none with a kernel
(oci2vm brings Debian's): minbase (layer 1) + the packages (layer 2, the diff), as debian.py.
  debian-sysvinit  bookworm + sysvinit-core, ifupdown, isc-dhcp-client, openssh-server (its
                   postinst generates host keys: the image ships them baked in)
  debian-openrc    bookworm + sysvinit-core + openrc (Debian's openrc runs under sysvinit's
                   init), ifupdown, isc-dhcp-client
  debian-runit     bookworm + runit-init, ifupdown, isc-dhcp-client, less Debian's getty-run
  debian-trixie    trixie minbase + systemd-sysv (merged /usr; networkd is part of systemd)
  debian-cloudinit bookworm + systemd-sysv + cloud-init (it finds its datasource at boot)
The bookworm ones share layer 1 with debian; every apt stage is cached under its own name."""

from __future__ import annotations

from pathlib import Path

from .debian import TRIXIE, build_on_minbase

# Bump a version whenever its recipe changes: the cache is keyed by it, so the fixture rebuilds.
DEBIAN_SYSVINIT_VERSION = 1
DEBIAN_OPENRC_VERSION = 1
DEBIAN_RUNIT_VERSION = 2  # v1 kept getty-run's leftover /etc/sv/getty-* directories
DEBIAN_TRIXIE_VERSION = 1
DEBIAN_CLOUDINIT_VERSION = 1

IFUPDOWN = ("ifupdown", "isc-dhcp-client")
SYSVINIT_INSTALL = ("sysvinit-core", *IFUPDOWN, "openssh-server")
# openrc satisfies sysvinit-core's "sysv-rc | file-rc | openrc" and conflicts with sysv-rc.
OPENRC_INSTALL = ("sysvinit-core", "openrc", *IFUPDOWN)
RUNIT_INSTALL = ("runit-init", *IFUPDOWN)
# bookworm's runit-init 2.1.2-54 Depends on getty-run (gettys on tty1-6, ttyS0, hvc0...): the
# image is to have no getty service of Debian's, so it goes again, its dependents
# notwithstanding, with the getty-* service directories its postinst made (each holding only
# a `supervise` link into /run, which its postrm leaves behind).
RUNIT_THEN = "dpkg --purge --force-depends getty-run && rm -rf /etc/sv/getty-*"
TRIXIE_INSTALL = ("systemd-sysv",)
CLOUDINIT_INSTALL = ("systemd-sysv", "cloud-init")


def build_debian_sysvinit(out: Path, cache: Path) -> dict[str, object]:
    facts = build_on_minbase(out, cache, "debian-sysvinit", "debian-sysvinit-full",
                             SYSVINIT_INSTALL)  # fmt: skip
    facts["installed"] = list(SYSVINIT_INSTALL)
    return facts


def build_debian_openrc(out: Path, cache: Path) -> dict[str, object]:
    facts = build_on_minbase(out, cache, "debian-openrc", "debian-openrc-full", OPENRC_INSTALL)
    facts["installed"] = list(OPENRC_INSTALL)
    return facts


def build_debian_runit(out: Path, cache: Path) -> dict[str, object]:
    facts = build_on_minbase(out, cache, "debian-runit", "debian-runit-nogetty-full",
                             RUNIT_INSTALL, then=RUNIT_THEN)  # fmt: skip
    facts.update(installed=list(RUNIT_INSTALL), then=RUNIT_THEN)
    return facts


def build_debian_trixie(out: Path, cache: Path) -> dict[str, object]:
    facts = build_on_minbase(out, cache, "debian-trixie", "debian-trixie-systemd-full",
                             TRIXIE_INSTALL, suite=TRIXIE)  # fmt: skip
    facts.update(installed=list(TRIXIE_INSTALL), suite=TRIXIE.codename)
    return facts


def build_debian_cloudinit(out: Path, cache: Path) -> dict[str, object]:
    facts = build_on_minbase(out, cache, "debian-cloudinit", "debian-cloudinit-full",
                             CLOUDINIT_INSTALL)  # fmt: skip
    facts["installed"] = list(CLOUDINIT_INSTALL)
    return facts
