"""Image C, busybox-app: an application image as `docker run` typically gets one, to run as a
VM in app mode. Debian's static busybox and its applet symlinks, users resolved by name
(User "app"), a WorkingDir, an HTTP server as Cmd; no kernel, no /sbin/init, and no /dev,
/proc, /sys or /run either (images built FROM scratch have none: the runtime makes them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .assemble import CREATED, PATH_ENV
from .busybox import fetch_busybox, one_layer_image
from .tarentry import TarEntry, resolve_links

# Bump a version whenever its recipe changes: the cache is keyed by it, so the fixture rebuilds.
BUSYBOX_APP_VERSION = 1

APP_UID = APP_GID = 1000
INDEX_HTML = "hello from oci2vm busybox-app\n"
APP_FILE = ("app/hello.txt", "hello from /app\n")  # in the WorkingDir, owned by app
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:1001:app\n"
APP_APPLETS = (
    "cat", "date", "df", "dmesg", "echo", "env", "false", "free", "grep", "head", "hostname",
    "httpd", "id", "ifconfig", "ip", "kill", "ls", "mkdir", "mount", "nc", "nslookup", "ping",
    "poweroff", "printf", "ps", "pwd", "reboot", "rm", "sh", "sleep", "stat", "sync", "tail",
    "test", "touch", "true", "umount", "uname", "uptime", "wget", "whoami",
)  # fmt: skip

BUSYBOX_APP_CONFIG: dict[str, object] = {
    "Env": [PATH_ENV, "SOME_ENV_FROM_CONFIG=value-from-config"],
    "User": "app",
    "WorkingDir": "/app",
    "Cmd": ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
    "ExposedPorts": {"8080/tcp": {}},
    "StopSignal": "SIGTERM",
}
# The Dockerfile steps after the layer: history entries without a layer.
BUSYBOX_APP_EMPTY_STEPS = (
    "ENV SOME_ENV_FROM_CONFIG=value-from-config", "USER app", "WORKDIR /app", "EXPOSE 8080/tcp",
    "STOPSIGNAL SIGTERM", 'CMD ["httpd" "-f" "-v" "-p" "8080" "-h" "/www"]',
)  # fmt: skip


def app_entries(busybox: bytes) -> list[TarEntry]:
    """The one layer's members, in walk order."""
    app, text = APP_FILE
    entries = [
        TarEntry("app", "dir", mode=0o755, uid=APP_UID, gid=APP_GID),
        TarEntry(app, "file", data=text.encode(), uid=APP_UID, gid=APP_GID),
        TarEntry("bin", "dir", mode=0o755),
        TarEntry("bin/busybox", "file", mode=0o755, data=busybox),
        *(TarEntry(f"bin/{a}", "symlink", mode=0o777, linkname="busybox") for a in APP_APPLETS),
        TarEntry("etc", "dir", mode=0o755),
        TarEntry("etc/group", "file", data=GROUP.encode()),
        TarEntry("etc/passwd", "file", data=PASSWD.encode()),
        TarEntry("home", "dir", mode=0o755),
        TarEntry("home/app", "dir", mode=0o755, uid=APP_UID, gid=APP_GID),
        TarEntry("root", "dir", mode=0o700),
        TarEntry("tmp", "dir", mode=0o1777),
        TarEntry("www", "dir", mode=0o755),
        TarEntry("www/index.html", "file", data=INDEX_HTML.encode()),
    ]
    return resolve_links(entries)


def build_busybox_app(out: Path, cache: Path) -> dict[str, object]:
    deb, busybox = fetch_busybox(cache)
    extra_history: list[dict[str, object]] = [
        {"created": CREATED, "created_by": f"/bin/sh -c #(nop) {step}", "empty_layer": True}
        for step in BUSYBOX_APP_EMPTY_STEPS
    ]
    facts, entry_count = one_layer_image(
        out,
        "busybox-app",
        app_entries(busybox),
        BUSYBOX_APP_CONFIG,
        extra_history,
        oci_archive=True,
    )
    facts.update(
        name="busybox-app",
        entries=entry_count,
        busybox_deb=deb,
        busybox_sha256=hashlib.sha256(busybox).hexdigest(),
        applets=list(APP_APPLETS),
        index_html=INDEX_HTML,
    )
    return facts
