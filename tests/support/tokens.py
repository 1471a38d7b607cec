"""Certificates, JWTs and a token server for registry tests: a self-signed key pair
(for TLS, or to sign tokens), RS256 tokens with the certificate in x5c, and a
distribution-spec token server run in a thread (token_server)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVICE = "oci2vm-test-registry"
ISSUER = "oci2vm-test-token-issuer"


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

    with serve(Handler) as port:
        server_state.port = port
        yield server_state


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler], tls: KeyPair | None = None) -> Iterator[int]:
    """Serve `handler` on 127.0.0.1 in a thread (over TLS with `tls`); yield the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_path, tls.key_path)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
