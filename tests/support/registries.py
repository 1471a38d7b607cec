"""Registries for tests: a real one (Debian's docker-registry) on 127.0.0.1, anonymous,
with htpasswd Basic auth, with token auth against support.tokens' server, or over TLS;
and a small fake one that can be told to lie (tampered blobs, broken JSON, 5xx).

The session fixtures in tests/conftest.py (registry_anonymous, registry_basic,
registry_token, registry_tls) each serve `pushed_images`: app:1, a single-platform
image, and multi:1, an index of linux/amd64 and linux/arm64/v8. Also here: pulling
through oci2vm's registry source, and what the tests check of the result.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore, ProgressFn
from oci2vm.image.model import Image
from oci2vm.sources import registry
from oci2vm.sources.base import Fetch
from oci2vm.sources.reference import parse_reference
from oci2vm.util import tools
from support.layouts import (
    BuiltImage,
    BuiltIndex,
    build_image,
    build_index,
    file,
    sha256,
    write_layout,
)
from support.tokens import ISSUER, SERVICE, KeyPair, TokenServer, self_signed, serve

READY_TIMEOUT = 15.0
GATE_TIMEOUT = 20.0
PACE_CHUNK = 64 << 10
START_ATTEMPTS = 3
USER, PASSWORD = "alice", "s3cret-pass"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the images every registry serves --------------------------------------------------


def sample_image(platform: str = "linux/amd64", *, docker: bool = False) -> BuiltImage:
    """Two gzip layers with a few files that name the platform, and a config; OCI media
    types, or Docker's v2 schema 2 ones."""
    layers = [
        [
            file("etc/os-release", b'ID=tiny\nNAME="Tiny test image"\n'),
            file("bin/hello", b"#!/bin/sh\necho hello\n", mode=0o755),
        ],
        [file("etc/platform", platform.encode() + b"\n"), file("app/data.txt", b"x" * 5000)],
    ]
    config = {"Cmd": ["/bin/hello"], "Env": ["PATH=/bin"], "WorkingDir": "/app"}
    return build_image(
        layers, config=config, platform=platform, created="2024-01-01T00:00:00Z", docker=docker
    )


def sample_index(*platforms: str, docker: bool = False) -> BuiltIndex:
    return build_index([sample_image(p, docker=docker) for p in platforms], docker=docker)


@dataclass(frozen=True)
class PushedImages:
    """What every fixture registry serves: app:1 and multi:1."""

    layout: Path
    app: BuiltImage
    multi: BuiltIndex


def pushed_images(directory: Path) -> PushedImages:
    app = sample_image("linux/amd64")
    multi = sample_index("linux/amd64", "linux/arm64/v8")
    layout = write_layout(directory, {"app": app, "multi": multi})
    return PushedImages(layout.path, app, multi)


# --- the real registry ---------------------------------------------------------------


@dataclass
class Registry:
    """A running docker-registry: where it listens and how to log in."""

    host: str  # 127.0.0.1:PORT
    storage: Path
    tls: KeyPair | None = None
    user: str | None = None
    password: str | None = None
    tokens: TokenServer | None = None

    @property
    def creds(self) -> str | None:
        return f"{self.user}:{self.password}" if self.user else None

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to corrupt them)."""
        hexdigest = digest.split(":")[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def push(self, layout: Path, tag: str, name: str, *, all_images: bool = False) -> None:
        argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests"]
        argv += ["--dest-tls-verify=false"]
        if self.creds:
            argv += ["--dest-creds", self.creds]
        if all_images:
            argv += ["--all"]
        argv += [f"oci:{layout}:{tag}", f"docker://{self.host}/{name}"]
        tools.run(argv, timeout=120)


def _registry_config(
    directory: Path,
    port: int,
    *,
    tls: KeyPair | None,
    htpasswd: Path | None,
    tokens: TokenServer | None,
) -> Path:
    # JSON is YAML; the registry reads this file as YAML.
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "storage")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls.cert_path), "key": str(tls.key_path)}
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "oci2vm-test", "path": str(htpasswd)}}
    if tokens is not None:
        config["auth"] = {
            "token": {
                "realm": tokens.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(tokens.signer.cert_path),
            }
        }
    path = directory / "config.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def _wait_ready(proc: subprocess.Popen[bytes], port: int, tls: bool, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        conn: http.client.HTTPConnection
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/v2/")
            if conn.getresponse().status in (200, 401):
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry not ready in {READY_TIMEOUT} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the registry's whole process group (it was started in a session of its own)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def running_registry(
    directory: Path,
    *,
    basic: tuple[str, str] | None = None,
    tokens: TokenServer | None = None,
    tls: bool = False,
) -> Iterator[Registry]:
    """Run docker-registry on 127.0.0.1 with storage under `directory`: anonymous, with
    htpasswd `basic` (user, password), or with token auth against `tokens`."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = self_signed(directory, "registry-tls") if tls else None
    htpasswd = None
    if basic is not None:
        line = tools.run(["htpasswd", "-Bbn", basic[0], basic[1]]).stdout
        htpasswd = directory / "htpasswd"
        htpasswd.write_bytes(line)
    log = directory / "registry.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    # The free port may be taken between our probe and the registry's bind: try again.
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        config = _registry_config(directory, port, tls=keys, htpasswd=htpasswd, tokens=tokens)
        with open(log, "wb") as log_file:
            proc = tools.popen(
                ["docker-registry", "serve", config],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        try:
            _wait_ready(proc, port, tls, log)
            break
        except RuntimeError:
            _stop(proc)
            if attempt == START_ATTEMPTS or "address already in use" not in log.read_text():
                raise
    try:
        yield Registry(
            host=f"127.0.0.1:{port}",
            storage=directory / "storage",
            tls=keys,
            user=basic[0] if basic else None,
            password=basic[1] if basic else None,
            tokens=tokens,
        )
    finally:
        _stop(proc)


def push_all(registry: Registry, images: PushedImages) -> Registry:
    registry.push(images.layout, "app", "app:1")
    registry.push(images.layout, "multi", "multi:1", all_images=True)
    return registry


# --- a registry that lies ---------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Announce the whole body, send only this many bytes, then drop the connection.
    drop_after: int | None = None
    close_delimited: bool = False  # no Content-Length: the body ends where the connection does
    delay: float = 0.0  # seconds to wait before answering
    trickle: float | None = None  # send the whole reply a byte at a time, this far apart
    # Send the first this many bytes of the body, then wait for `gate` (at most
    # GATE_TIMEOUT s) before the rest: a layer that is still downloading.
    hold_after: int | None = None
    gate: threading.Event | None = None
    gate_timed_out: bool = False


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class FakeRegistry:
    """Serves manifests and blobs from memory, honestly unless told otherwise: `once`
    queues replies that are served (in order) before the honest one for a path."""

    port: int = 0
    routes: dict[str, Reply] = field(default_factory=dict)
    once: dict[str, list[Reply]] = field(default_factory=lambda: defaultdict(list))
    seen: list[Seen] = field(default_factory=list)
    basic: tuple[str, str] | None = None
    most_blobs_at_once: int = 0  # the most blob requests being answered at one time
    ranges: bool = True  # answer Range requests of blobs (as distribution does)
    range_bodies: dict[str, bytes] = field(default_factory=dict)  # lies told to them
    drop_parts: int = 0  # the next range answers this many of a blob's parts break off
    drop_unannounced: bool = False  # those answers have no Content-Length (close-delimited)
    # How a request for a part of a blob (more than a few bytes) is answered, otherwise
    # than as asked: "whole" (200, as a server ignoring Range), "other" (another range).
    parts_answer: str | None = None
    rate: float | None = None  # bytes per second of all bodies together (a slow link)
    per_connection: bool = False  # `rate` for each response alone (a slow path per stream)
    latency: float = 0.0  # seconds before each blob request is answered (a long path)
    range_once: list[int] = field(default_factory=list)  # statuses for the next Range asks
    _sent_at: float = 0.0  # when the link is free again, at `rate`
    _blobs_now: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blob_started(self) -> None:
        with self._lock:
            self._blobs_now += 1
            self.most_blobs_at_once = max(self.most_blobs_at_once, self._blobs_now)

    def blob_ended(self) -> None:
        with self._lock:
            self._blobs_now -= 1

    def pace(self, n: int, own: list[float]) -> None:
        """Wait until n more bytes may go out at `rate`: shared by every connection, or
        per response (`own` holds when its stream is free again)."""
        if self.rate is None:
            return
        with self._lock:
            now = time.monotonic()
            free = own[0] if self.per_connection else self._sent_at
            free = max(free, now) + n / self.rate
            if self.per_connection:
                own[0] = free
            else:
                self._sent_at = free
        time.sleep(max(0.0, free - n / self.rate - now))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests_to(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    def add_manifest(self, repo: str, tag: str, data: bytes, media_type: str) -> None:
        reply = Reply(body=data, headers={"Content-Type": media_type})
        self.routes[f"/v2/{repo}/manifests/{tag}"] = reply
        self.routes[f"/v2/{repo}/manifests/{sha256(data)}"] = reply

    def add_image(self, repo: str, tag: str, item: BuiltImage | BuiltIndex) -> None:
        images = item.images if isinstance(item, BuiltIndex) else (item,)
        for image in images:
            self.add_manifest(repo, image.manifest_digest, image.manifest, image.media_type)
            for digest, data in image.blobs.items():
                self.routes[f"/v2/{repo}/blobs/{digest}"] = Reply(body=data)
        if isinstance(item, BuiltIndex):
            self.add_manifest(repo, tag, item.index, item.media_type)
        else:
            self.add_manifest(repo, tag, item.manifest, item.media_type)

    def reply(self, path: str, authorization: str | None) -> Reply:
        if self.basic is not None and path.startswith("/v2/"):
            expected = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if authorization != expected:
                return Reply(401, b"{}", {"WWW-Authenticate": 'Basic realm="fake"'})
        if self.once.get(path):
            return self.once[path].pop(0)
        if path == "/v2/":
            return Reply(body=b"{}")
        if path in self.routes:
            return self.routes[path]
        code = "BLOB_UNKNOWN" if "/blobs/" in path else "MANIFEST_UNKNOWN"
        return Reply(404, json.dumps({"errors": [{"code": code, "message": "unknown"}]}).encode())


@contextlib.contextmanager
def fake_registry(
    basic: tuple[str, str] | None = None, tls: KeyPair | None = None
) -> Iterator[FakeRegistry]:
    state = FakeRegistry(basic=basic)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.seen.append(Seen(self.path, dict(self.headers.items())))
            blob = "/blobs/" in self.path
            asked = self.headers.get("Range")
            if blob and asked and state.range_once:
                reply = Reply(state.range_once.pop(0), b"{}")
            elif blob and asked and state.ranges and self.path in state.routes:
                body = state.range_bodies.get(self.path, state.routes[self.path].body)
                reply = _range_reply(body, asked)
                if state.drop_parts and len(reply.body) > PACE_CHUNK:  # a part, not a tail
                    state.drop_parts -= 1
                    reply = dataclasses.replace(
                        reply,
                        drop_after=len(reply.body) // 2,
                        close_delimited=state.drop_unannounced,
                    )
                if state.parts_answer and len(reply.body) > PACE_CHUNK:
                    if state.parts_answer == "whole":
                        reply = Reply(body=body)
                    else:  # the range asked, said to be one byte further
                        first, last = (int(n) for n in asked.split("=")[1].split("-"))
                        other = f"bytes {first + 1}-{last + 1}/{len(body)}"
                        reply = dataclasses.replace(reply, headers={"Content-Range": other})
            else:
                reply = state.reply(self.path, self.headers.get("Authorization"))
            if blob:
                state.blob_started()
            try:
                time.sleep(reply.delay + (state.latency if blob else 0.0))
                self._answer(reply)
            finally:
                if blob:
                    state.blob_ended()

        def _answer(self, reply: Reply) -> None:
            if reply.trickle is not None:
                self._trickle(reply, reply.trickle)
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.close_delimited:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.hold_after is not None and reply.gate is not None:
                with contextlib.suppress(OSError):  # the client may have gone meanwhile
                    self.wfile.write(reply.body[: reply.hold_after])
                    self.wfile.flush()
                    reply.gate_timed_out = not reply.gate.wait(GATE_TIMEOUT)
                    if reply.drop_after is not None:  # held, then dropped
                        self.close_connection = True
                        return
                    self.wfile.write(reply.body[reply.hold_after :])
                return
            if reply.drop_after is not None:
                self.wfile.write(reply.body[: reply.drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            try:
                if state.rate is None:
                    self.wfile.write(reply.body)
                    return
                body = memoryview(reply.body)
                own = [0.0]
                for start in range(0, len(body), PACE_CHUNK):
                    state.pace(len(body[start : start + PACE_CHUNK]), own)
                    self.wfile.write(body[start : start + PACE_CHUNK])
            except OSError:  # the client closed the connection before the end: its right
                self.close_connection = True

        def _trickle(self, reply: Reply, pause: float) -> None:
            head = f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(reply.body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            with contextlib.suppress(OSError):
                for byte in (head + "\r\n").encode() + reply.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(pause)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve(Handler, tls) as port:
        state.port = port
        yield state


def _range_reply(body: bytes, asked: str) -> Reply:
    """206 for one "bytes=F-L" range, as Go's http.ServeContent answers it."""
    unit, _, span = asked.partition("=")
    first_text, _, last_text = span.partition("-")
    first, last = int(first_text), min(int(last_text), len(body) - 1)
    if unit != "bytes" or first > last:
        return Reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
    content_range = f"bytes {first}-{last}/{len(body)}"
    return Reply(206, body[first : last + 1], {"Content-Range": content_range})


# --- pulling, and what the tests check of it --------------------------------------------


def pull(host: str, name: str, store: BlobStore, **options: object) -> Image:
    ref = parse_reference(f"{host}/{name}")
    options.setdefault("tls_verify", False)
    fetch = Fetch(store=store, **options)  # type: ignore[arg-type]
    return registry.resolve(f"docker://{ref}", ref, fetch)


def error_of(call: Callable[[], object]) -> str:
    """The message of the Oci2vmError that `call` raises, which must be one line."""
    with pytest.raises(Oci2vmError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    return message


def assert_is(image: Image, expected: BuiltImage, store: BlobStore) -> None:
    """The image is exactly the one built, with every blob in the cache."""
    assert image.manifest_digest == expected.manifest_digest
    assert image.config_digest == expected.config_digest
    assert image.config.diff_ids == expected.diff_ids
    assert str(image.config.platform) == expected.platform
    assert image.config.cmd == ("/bin/hello",)
    assert [layer.digest for layer in image.layers] == list(expected.layer_digests)
    assert [layer.diff_id for layer in image.layers] == list(expected.diff_ids)
    for layer, data in zip(image.layers, expected.layers, strict=True):
        assert layer.blob.path == store.path(layer.digest or "")
        assert layer.blob.path.read_bytes() == data
    assert store.path(expected.config_digest).read_bytes() == expected.config


def cache_files(store: BlobStore) -> list[str]:
    """Every file in the cache, temporary ones included, but the records of what a
    reference named (references/)."""
    files = store.root.rglob("*")
    return sorted(p.name for p in files if p.is_file() and p.parent.name != "references")


class Progress:
    """An on_blob callback that records what started and counts the bytes."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.bytes = 0

    def __call__(self, what: str, size: int | None) -> ProgressFn:
        self.started.append((what, size))

        def advance(n: int) -> None:
            self.bytes += n

        return advance
