"""The boot matrix's plumbing (tests/boot/test_boot_matrix.py, test_ssh_access.py): which
fixture images exist, disks built from them in-process, a page served on the host's
loopback, the serial-console session that logs in and probes the guest, and the parser
that reads the probe's answers back out of the console text.

The probe is one shell line typed at the guest's prompt. Every answer is printed as
`KEY-42=VALUE` with the 42 computed by the guest's shell (`$((6*7))`), so the console's
echo of the typed line (which shows `KEY-$((6*7))=`) never matches; the answers sit between
`==BEGIN-42==` and `==END-42==` lines, and kernel messages or CRs in between are ignored.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from support.runcli import skip_unless_buildable

# QEMU's user network (qemu-system(1), -netdev user): the guest's DHCP range is in
# 10.0.2.0/24 and the gateway 10.0.2.2 is the host's loopback.
USER_NET_PREFIX = "10.0.2."
HOST_FROM_GUEST = "10.0.2.2"
PAGE_PATH = "/oci2vm-matrix.txt"
WRITTEN_FILE = "/oci2vm-matrix"
WRITTEN_TEXT = "written-by-root"
USER_NET_DNS = "10.0.2.3"  # QEMU's user network's DNS server, which its DHCP hands out
KEYS = ("ip", "dns", "page", "machine-id", "write")

# How the guest fetches the page: bash's /dev/tcp (Debian's minbase has neither wget nor
# curl; the reply's last line is the body, which has no newline), or busybox wget.
BASH_TCP = (
    "(exec 3<>/dev/tcp/{host}/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && "
    "cat <&3) | tail -n 1"
)
BUSYBOX_WGET = "wget -q -O - http://{host}:{port}{path}"

# The first NIC's IPv4 address, from the kernel's routing trie (no iproute2 needed): the
# address line precedes its "/32 host LOCAL" line; loopback left out.
_IP4 = (
    "ip4() { awk '/32 host LOCAL/ {print a} {a=$2}' /proc/net/fib_trie"
    " | grep -v '^127[.]' | head -n 1; }"
)
DHCP_WAIT_SECONDS = 120  # the probe waits this long for an address before answering
DNS_WAIT_SECONDS = 20  # and then this long for resolv.conf to name the lease's server
# The first nameserver of /etc/resolv.conf.
_DNS = "awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf"


def fixture_known(name: str) -> bool:
    """Whether the fixture package has a recipe called `name` (tests/fixture_images)."""
    from fixture_images import builder

    return name in builder().FIXTURES


def skip_unless_fixture(name: str) -> None:
    """Skip unless fixture `name` has a recipe and is cached or buildable here
    (support.runcli.skip_unless_buildable)."""
    if not fixture_known(name):
        pytest.skip(f"no fixture image {name!r} yet (scripts/oci2vm_fixtures FIXTURES)")
    skip_unless_buildable(name)


def build_disk(fixture_name: str, out: Path, *args: str) -> dict[str, Any]:
    """`oci2vm build` of fixture `fixture_name` in-process, with the shared kernel store and
    the machine's mirror; its --json report."""
    from fixture_images import fixture
    from support.debarchives import configured_mirror, fixture_store
    from support.disks import cli

    fx = fixture(fixture_name)
    result = cli("build", f"oci:{fx.oci_layout}:{fx.tag}", "-o", str(out), "--json",
                 "--cache-dir", str(fixture_store().root), "--mirror", configured_mirror(),
                 *args)  # fmt: skip
    assert result.code == 0, result.err
    report: dict[str, Any] = json.loads(result.out)
    return report


@dataclass(frozen=True)
class Page:
    """What the host serves: `body` at http://127.0.0.1:`port`PAGE_PATH."""

    port: int
    body: str


@contextmanager
def served_page() -> Iterator[Page]:
    """A one-line page with a random body on a free loopback port, for the guests to fetch."""
    body = f"oci2vm-page-{secrets.token_hex(8)}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == PAGE_PATH
            data = body.encode() if found else b"not found"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Page(int(server.server_address[1]), body)
    finally:
        server.shutdown()
        server.server_close()


def answer(key: str, expression: str) -> str:
    """Shell that prints `KEY-42=` followed by the output of `expression` (after a space:
    `$((` would open an arithmetic expansion when the expression is a subshell)."""
    return f'echo "{key}-$((6*7))=$( {expression})"'


def probe_line(port: int, fetch: str = BASH_TCP, *, su: bool = True) -> str:
    """The shell line a logged-in user types: wait for a DHCP address, then answer the
    address, the first DNS server in resolv.conf, the page's body, the machine-id, and
    (`su`: through `su`, which asks for root's password) whether a file could be written
    to /. Without `su` the line ends by logging out, for ROOT_WRITE_LINE typed as root
    (busybox's su is not setuid)."""
    url_parts = {"host": HOST_FROM_GUEST, "port": port, "path": PAGE_PATH}
    steps = [
        _IP4,
        f'n=0; while [ -z "$(ip4)" ] && [ $n -lt {DHCP_WAIT_SECONDS} ]; do sleep 1; '
        "n=$((n+1)); done",
        f'n=0; while ! grep -qs "^nameserver {USER_NET_DNS}" /etc/resolv.conf && '
        f"[ $n -lt {DNS_WAIT_SECONDS} ]; do sleep 1; n=$((n+1)); done",
        'echo "==BEGIN-$((6*7))=="',
        answer("ip", "ip4"),
        answer("dns", _DNS),
        answer("page", fetch.format(**url_parts)),
        answer("machine-id", "cat /etc/machine-id"),
    ]
    if not su:
        return "; ".join([*steps, "exit"])
    return "; ".join([*steps, f"su root -c '{_WRITE}'", _WRITE_ANSWER])


_WRITE = f"echo {WRITTEN_TEXT} > {WRITTEN_FILE}"
_WRITE_ANSWER = "; ".join([answer("write", f"cat {WRITTEN_FILE}"), 'echo "==END-$((6*7))=="'])
ROOT_WRITE_LINE = f"{_WRITE}; {_WRITE_ANSWER}"


def probe_script(
    user: str, password: str, root_password: str, line: str, *, su: bool = True
) -> list[tuple[str, str | None]]:
    """check_boot's script for probe_line(..., su=su): log in as `user` and type `line`;
    then give `su` root's password, or (without su) log in again as root and write."""
    if su:
        return login_script(user, password, line, su_password=root_password)
    return [
        *login_script(user, password, line)[:-1],
        ("login:", "root"),  # the getty again, after the user's `exit`
        ("Password:", root_password),
        (r"# ", ROOT_WRITE_LINE),
        ("==END-42==", None),
    ]


def login_script(
    user: str, password: str, line: str, su_password: str | None = None
) -> list[tuple[str, str | None]]:
    """check_boot's script after `login:`: log in as `user`, type `line` at the shell
    prompt, give `su` root's password when `line` runs it, and wait for the end marker."""
    script: list[tuple[str, str | None]] = [
        ("", user),  # check_boot has just seen the login prompt
        ("Password:", password),
        (r"\$ ", line),
    ]
    if su_password is not None:
        script.append(("Password:", su_password))
    return [*script, ("==END-42==", None)]


_BLOCK = re.compile(r"==BEGIN-42==\n(.*?)==END-42==", re.S)


def parse_answers(console: str, keys: tuple[str, ...] = KEYS) -> dict[str, str]:
    """The probe's answers in console text: KEY -> VALUE (up to the next white space) for
    each `KEY-42=VALUE` of the last BEGIN/END block, wherever a kernel message pushed it on
    its line (a key without an answer is left out); {} without a block."""
    blocks = _BLOCK.findall(console.replace("\r", ""))
    if not blocks:
        return {}
    answers = {}
    for key in keys:
        found = re.findall(rf"(?<![\w-]){re.escape(key)}-42=(\S*)", blocks[-1])
        if found:
            answers[key] = found[-1]
    return answers
