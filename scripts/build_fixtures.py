#!/usr/bin/env python3
"""Build the project-owned fixture images in every form oci2vm reads: "busybox" (every
flattening case), "busybox-app" (an app image), "debian" (minbase + kernel + systemd),
"debian-systemd" (minbase + systemd, no kernel), "debian-minbase" (no init, no kernel), and
the boot matrix's kernel-less systems: "debian-sysvinit" (+ ifupdown, openssh-server),
"debian-openrc", "debian-runit" (without getty-run), "debian-trixie" (systemd),
"debian-cloudinit" (systemd + cloud-init) and "busybox-init" (/sbin/init -> busybox, an
rcS, no inittab).

Deliberately independent of the oci2vm package (stdlib tarfile/hashlib/gzip/json + zstandard
only): the fixtures are the yardstick for our readers, so they must not share their code.
Layer tars are written header by header the way Go's archive/tar (Docker, containerd) writes
them: USTAR headers, a PAX 'x' header when a field does not fit, GNU sparse 1.0 by hand.

Forms per image, in <cache>/<name>-v<version>/ (debian-minbase: debian-minbase-image-v<N>/):
oci/ (OCI layout, tag "fixture"), oci-archive.tar (busybox, busybox-app), docker-archive.tar
(legacy `docker save`, <id>/layer.tar), docker-oci-archive.tar (Docker >= 25 `docker save`),
rootfs.tar (flattened, as `docker export`), tree.json (rootfs.tar as data) and facts.json
(digests, config). The cache is $OCI2VM_FIXTURE_CACHE, else /var/cache/oci2vm-fixtures when
writable, else ~/.cache/oci2vm-fixtures.

The code is the package next to this file, scripts/oci2vm_fixtures/: tarentry and tarwriter
(the Go-like tar writer), flatten (an independent flattener), compress and assemble (layer
blobs, OCI and docker archives), busybox, busybox_app, busybox_init, debian and
debian_systems (the recipes), scan (real trees as tar entries, tree diffs), cache (versioned
cache directories, file locks), __main__ (this CLI).

Usage: python scripts/build_fixtures.py [NAME|all] [--cache DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oci2vm_fixtures.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
