"""Registries for tests: a real one (Debian's docker-registry) on 127.0.0.1, anonymous,
with htpasswd Basic auth, with token auth against a JWT token server run here, or over
TLS; and a small fake one that can be told to lie (tampered blobs, broken JSON, 5xx).

Use the context managers (running_registry, token_server, fake_registry) or the
session fixtures: registry_anonymous, registry_basic, registry_token, registry_tls, each
serving the images of `pushed_images` (app:1 single-platform, multi:1 an index of
linux/amd64 and linux/arm64/v8). Add `pytest_plugins = ["registry_support"]` to a test
module to use the fixtures.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from oci2vm.util import tools

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
READY_TIMEOUT = 15.0
START_ATTEMPTS = 3
SERVICE = "oci2vm-test-registry"
ISSUER = "oci2vm-test-token-issuer"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    """A single-platform image, every byte known to the test."""

    platform: str
    media_type: str
    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]  # gzip blobs
    diff_ids: tuple[str, ...]

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(sha256(b) for b in self.layers)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(b): b for b in (self.config, *self.layers)}

    def descriptor(self) -> dict[str, Any]:
        os_, arch, *variant = self.platform.split("/")
        platform = {"architecture": arch, "os": os_} | ({"variant": variant[0]} if variant else {})
        return {
            "mediaType": self.media_type,
            "digest": self.manifest_digest,
            "size": len(self.manifest),
            "platform": platform,
        }


@dataclass(frozen=True)
class BuiltIndex:
    media_type: str
    index: bytes
    images: tuple[BuiltImage, ...]

    @property
    def digest(self) -> str:
        return sha256(self.index)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(platform: str = "linux/amd64", *, docker: bool = False) -> BuiltImage:
    """Two gzip layers with a few files that name the platform, and a config; OCI media
    types, or Docker's v2 schema 2 ones."""
    os_, arch, *variant = platform.split("/")
    tars = [
        _tar(
            {
                "etc/os-release": b'ID=tiny\nNAME="Tiny test image"\n',
                "bin/hello": b"#!/bin/sh\necho hello\n",
            }
        ),
        _tar({"etc/platform": platform.encode() + b"\n", "app/data.txt": b"x" * 5000}),
    ]
    layers = tuple(gzip.compress(t, mtime=0) for t in tars)
    config_doc: dict[str, Any] = {
        "architecture": arch,
        "os": os_,
        "config": {"Cmd": ["/bin/hello"], "Env": ["PATH=/bin"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
        "created": "2024-01-01T00:00:00Z",
    }
    if variant:
        config_doc["variant"] = variant[0]
    config = json.dumps(config_doc, sort_keys=True).encode()
    media_type, config_type, layer_type = (
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
        if docker
        else (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": sha256(config), "size": len(config)},
            "layers": [
                {"mediaType": layer_type, "digest": sha256(b), "size": len(b)} for b in layers
            ],
        },
        sort_keys=True,
    ).encode()
    diff_ids = tuple(sha256(t) for t in tars)
    return BuiltImage(platform, media_type, manifest, config, layers, diff_ids)


def build_index(*platforms: str, docker: bool = False) -> BuiltIndex:
    images = tuple(build_image(p, docker=docker) for p in platforms)
    media_type = DOCKER_LIST if docker else OCI_INDEX
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [i.descriptor() for i in images],
        },
        sort_keys=True,
    ).encode()
    return BuiltIndex(media_type, index, images)


def write_layout(path: Path, tags: dict[str, BuiltImage | BuiltIndex]) -> Path:
    """An OCI image layout holding the images under the given tags."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entries = []
    for tag, item in tags.items():
        images = item.images if isinstance(item, BuiltIndex) else (item,)
        for image in images:
            for digest, data in {**image.blobs, image.manifest_digest: image.manifest}.items():
                (blobs / digest.split(":")[1]).write_bytes(data)
        if isinstance(item, BuiltIndex):
            (blobs / item.digest.split(":")[1]).write_bytes(item.index)
            desc = {"mediaType": item.media_type, "digest": item.digest, "size": len(item.index)}
        else:
            desc = {k: v for k, v in item.descriptor().items() if k != "platform"}
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        entries.append(desc)
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return path


# --- certificates and tokens -------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path


def self_signed(directory: Path, name: str) -> KeyPair:
    """An RSA key and a self-signed certificate for 127.0.0.1 and localhost."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return KeyPair(key, cert, cert_path, key_path)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(signer: KeyPair, claims: dict[str, Any]) -> str:
    """An RS256 JWT whose x5c header carries the signing certificate, which the registry
    verifies against its auth.token.rootcertbundle."""
    header = {
        "typ": "JWT",
        "alg": "RS256",
        "x5c": [base64.b64encode(signer.cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    signing_input = (
        _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    )
    signature = signer.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


@dataclass
class TokenRequest:
    user: str | None  # None: anonymous
    service: str
    scopes: list[str]
    status: int
    method: str = "GET"  # POST: OAuth2 refresh-token grant


@dataclass
class TokenServer:
    """A distribution-spec token server: Basic credentials checked (wrong ones get 401),
    anonymous requests get a token granting nothing, as Docker Hub does for private
    repositories."""

    signer: KeyPair
    users: dict[str, str]
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    token_field: str = "token"  # or "access_token", as OAuth2-style servers answer
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def answer(
        self, query: str, authorization: str | None, form: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Answer GET ?service&scope (Basic credentials or none), or a POSTed OAuth2
        refresh-token grant (`form`)."""
        params = urllib.parse.parse_qs(form if form is not None else query)
        method = "GET" if form is None else "POST"
        service = params.get("service", [""])[0]
        scopes = [s for scope in params.get("scope", []) for s in scope.split(" ")]
        user: str | None = None
        refused = {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        if form is not None:
            refresh = params.get("refresh_token", [""])[0]
            grant = params.get("grant_type", [""])[0]
            if grant != "refresh_token" or refresh not in self.refresh_tokens:
                self.requests.append(TokenRequest(None, service, scopes, 401, method))
                return 401, refused
            user = self.refresh_tokens[refresh]
        elif authorization:
            scheme, _, value = authorization.partition(" ")
            name, _, password = base64.b64decode(value).decode().partition(":")
            if scheme.lower() != "basic" or self.users.get(name) != password:
                self.requests.append(TokenRequest(name, service, scopes, 401))
                return 401, refused
            user = name
        access = []
        for scope in scopes:
            kind, name, actions = scope.rsplit(":", 2) if scope.count(":") >= 2 else ("", "", "")
            if user is not None and kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        self.requests.append(TokenRequest(user, service, scopes, 200, method))
        field_name = "access_token" if form is not None else self.token_field
        return 200, {field_name: make_jwt(self.signer, claims), "expires_in": 300}


@contextlib.contextmanager
def token_server(directory: Path, users: dict[str, str]) -> Iterator[TokenServer]:
    server_state = TokenServer(self_signed(directory, "token-signer"), users)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self.send_error(404)
                return
            self._reply(*server_state.answer(url.query, self.headers.get("Authorization")))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = self.rfile.read(length).decode()
            if urllib.parse.urlsplit(self.path).path != "/token":
                self.send_error(404)
                return
            self._reply(*server_state.answer("", None, form))

        def _reply(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="token"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _serve(Handler) as port:
        server_state.port = port
        yield server_state


@contextlib.contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


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


# --- a registry that lies ---------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Announce the whole body, send only this many bytes, then drop the connection.
    drop_after: int | None = None
    delay: float = 0.0  # seconds to wait before answering


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
    _blobs_now: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blob_started(self) -> None:
        with self._lock:
            self._blobs_now += 1
            self.most_blobs_at_once = max(self.most_blobs_at_once, self._blobs_now)

    def blob_ended(self) -> None:
        with self._lock:
            self._blobs_now -= 1

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
def fake_registry(basic: tuple[str, str] | None = None) -> Iterator[FakeRegistry]:
    state = FakeRegistry(basic=basic)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.seen.append(Seen(self.path, dict(self.headers.items())))
            reply = state.reply(self.path, self.headers.get("Authorization"))
            blob = "/blobs/" in self.path
            if blob:
                state.blob_started()
            try:
                time.sleep(reply.delay)
                self._answer(reply)
            finally:
                if blob:
                    state.blob_ended()

        def _answer(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.drop_after is not None:
                self.wfile.write(reply.body[: reply.drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _serve(Handler) as port:
        state.port = port
        yield state


# --- session fixtures -------------------------------------------------------------------

USER, PASSWORD = "alice", "s3cret-pass"


@dataclass(frozen=True)
class PushedImages:
    """What every fixture registry serves: app:1 and multi:1."""

    layout: Path
    app: BuiltImage
    multi: BuiltIndex


@pytest.fixture(scope="session")
def pushed_images(tmp_path_factory: pytest.TempPathFactory) -> PushedImages:
    app = build_image("linux/amd64")
    multi = build_index("linux/amd64", "linux/arm64/v8")
    layout = write_layout(tmp_path_factory.mktemp("layout"), {"app": app, "multi": multi})
    return PushedImages(layout, app, multi)


def _push_all(registry: Registry, images: PushedImages) -> Registry:
    registry.push(images.layout, "app", "app:1")
    registry.push(images.layout, "multi", "multi:1", all_images=True)
    return registry


@pytest.fixture(scope="session")
def registry_anonymous(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry-anonymous")) as registry:
        yield _push_all(registry, pushed_images)


@pytest.fixture(scope="session")
def registry_basic(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    directory = tmp_path_factory.mktemp("registry-basic")
    with running_registry(directory, basic=(USER, PASSWORD)) as registry:
        yield _push_all(registry, pushed_images)


@pytest.fixture(scope="session")
def registry_token(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    directory = tmp_path_factory.mktemp("registry-token")
    with (
        token_server(directory, {USER: PASSWORD}) as tokens,
        running_registry(directory, tokens=tokens) as registry,
    ):
        registry.user, registry.password = USER, PASSWORD  # for pushing
        _push_all(registry, pushed_images)
        tokens.requests.clear()
        yield registry


@pytest.fixture(scope="session")
def registry_tls(
    tmp_path_factory: pytest.TempPathFactory, pushed_images: PushedImages
) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry-tls"), tls=True) as registry:
        yield _push_all(registry, pushed_images)
