"""Registry authentication: the WWW-Authenticate challenge (RFC 7235), Basic and
Bearer-token auth (the distribution token spec), and where credentials come from —
--creds, containers' auth.json, Docker's config.json and its docker-credential-* helpers,
looked up as podman and skopeo do."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
import re
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import open_regular
from oci2vm.image.model import load_json
from oci2vm.util import tools
from oci2vm.util.text import shown

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
# The key `docker login` writes for Docker Hub, and what its credential helpers expect.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
# A token without expires_in lasts 60 s (distribution token spec).
DEFAULT_TOKEN_LIFETIME = 60
# What is read of an auth file and of a credential helper's output: an auth file with
# hundreds of registries is a few KiB.
MAX_AUTH_FILE = 4 << 20
MAX_HELPER_OUTPUT = 1 << 20
HELPER_TIMEOUT = 60.0

# --- the WWW-Authenticate header ------------------------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_RE = re.compile(_TOKEN)
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*')
_TOKEN68_RE = re.compile(r"\s+([A-Za-z0-9._~+/-]+=*)\s*(?=,|$)")
_COMMA_RE = re.compile(r"\s*,")
_SEPARATORS_RE = re.compile(r"[\s,]*")
_UNESCAPE_RE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: the scheme (lower case) and its
    parameters (names lower case; a token68 is stored under "")."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header, which may hold several challenges separated by
    commas, each with comma-separated parameters whose quoted values may hold commas."""
    challenges: list[Challenge] = []
    pos = 0
    while True:
        pos = _SEPARATORS_RE.match(header, pos).end()  # type: ignore[union-attr]
        scheme = _SCHEME_RE.match(header, pos)
        if scheme is None:
            break  # the end, or garbage that no challenge can follow
        pos = scheme.end()
        params: dict[str, str] = {}
        # A token68 ends at a comma or the end, which no name=value pair does unless
        # its value is empty ("abc==" is a token68, not abc with the value "=").
        token68 = _TOKEN68_RE.match(header, pos)
        if token68 is not None:
            params[""] = token68.group(1)
            pos = token68.end()
        else:
            while param := _PARAM_RE.match(header, pos):
                quoted, bare = param.group(2), param.group(3)
                value = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else bare
                params[param.group(1).lower()] = value
                pos = param.end()
                comma = _COMMA_RE.match(header, pos)
                if comma is None:
                    break
                pos = comma.end()
        challenges.append(Challenge(scheme.group().lower(), params))
    return challenges


# --- credentials ----------------------------------------------------------------------


# The user name by which credential helpers hand over an identity token (docker's rule).
IDENTITY_TOKEN_USER = "<token>"
# Who we are to an OAuth2 token endpoint.
CLIENT_ID = "oci2vm"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    origin: str  # where they came from, for messages: "--creds", a file, a helper
    # An OAuth2 refresh token (`identitytoken` in an auth file, as `az acr login` writes,
    # or a helper's Secret for the user "<token>"): traded for Bearer tokens by POST.
    identity_token: str | None = None

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_creds(text: str, origin: str = "--creds") -> Credentials:
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise Oci2vmError(f"malformed {origin}: expected USER:PASS")
    return Credentials(user, password, origin)


def auth_file_paths(auth_file: Path | None, env: Mapping[str, str]) -> list[Path]:
    """Where credentials are looked for, in order (as containers/image does)."""
    paths: list[Path] = []
    if auth_file is not None:
        paths.append(auth_file)
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    if env.get("XDG_CONFIG_HOME"):
        paths.append(Path(env["XDG_CONFIG_HOME"]) / "containers" / "auth.json")
    elif env.get("HOME"):
        paths.append(Path(env["HOME"]) / ".config" / "containers" / "auth.json")
    if env.get("DOCKER_CONFIG"):
        paths.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    elif env.get("HOME"):
        paths.append(Path(env["HOME"]) / ".docker" / "config.json")
    unique: list[Path] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def normalize_key(key: str) -> str:
    """An auths/credHelpers key as host[/namespace]: no scheme, no /v1/ or /v2/ suffix,
    Docker Hub's several names folded into docker.io."""
    key = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", key.strip()).rstrip("/")
    key = re.sub(r"/v[12]$", "", key)
    host, sep, rest = key.partition("/")
    if host in _HUB_ALIASES:
        host = DOCKER_HUB
    return host + sep + rest


def helper_server(registry: str) -> str:
    """The server name a credential helper is asked about, as the docker CLI asks it."""
    return DOCKER_HUB_KEY if registry == DOCKER_HUB else registry


def find_credentials(
    registry: str,
    repository: str = "",
    *,
    creds: str | None = None,
    auth_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """Credentials for `registry` (host[:port]; docker.io for Docker Hub), or None for
    anonymous access. --creds wins; then the first auth file that knows the registry."""
    if creds is not None:
        return parse_creds(creds)
    for path in auth_file_paths(auth_file, os.environ if env is None else env):
        found = credentials_from_file(path, registry, repository)
        if found is not None:
            return found
    return None


def _load_auth_file(path: Path) -> dict[str, Any] | None:
    """The parsed file, or None when there is none; one that is not a regular file, or
    larger than MAX_AUTH_FILE, is an error (never waited for, never read whole)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        pass  # open_regular says what is wrong
    try:
        with open_regular(path, f"auth file {path}") as f:
            data = f.read(MAX_AUTH_FILE + 1)
    except OSError as e:
        raise Oci2vmError(f"cannot read auth file {path}: {e.strerror}") from e
    if len(data) > MAX_AUTH_FILE:
        raise Oci2vmError(f"auth file {path} is larger than {MAX_AUTH_FILE} bytes")
    return load_json(data, f"auth file {path}")


def _best_key(keys: Mapping[str, Any], registry: str, repository: str) -> str | None:
    """The most specific key naming the registry, or a namespace holding the repository."""
    wanted = f"{registry}/{repository}" if repository else registry
    best: tuple[int, str] | None = None
    for key in keys:
        norm = normalize_key(key)
        namespace = "/" in norm and (wanted + "/").startswith(norm + "/")
        if (norm == registry or namespace) and (best is None or len(norm) > best[0]):
            best = (len(norm), key)
    return None if best is None else best[1]


def credentials_from_file(path: Path, registry: str, repository: str = "") -> Credentials | None:
    """Credentials for `registry` from one auth.json / config.json, or None when the
    file is missing or knows nothing of the registry. A credHelpers entry wins over an
    auths entry, which wins over the credsStore default (as in the docker CLI)."""
    doc = _load_auth_file(path)
    if doc is None:
        return None
    helpers = doc.get("credHelpers") or {}
    if isinstance(helpers, dict):
        key = _best_key(helpers, registry, "")
        if key is not None and isinstance(helpers[key], str):
            return credential_helper(helpers[key], helper_server(registry))
    auths = doc.get("auths") or {}
    if isinstance(auths, dict):
        key = _best_key(auths, registry, repository)
        entry = auths.get(key) if key is not None else None
        if isinstance(entry, dict) and entry.get("identitytoken"):
            origin = f"{path} (auths.{key}.identitytoken)"
            user = _decode_auth(entry["auth"], origin).username if entry.get("auth") else ""
            return Credentials(user, "", origin, identity_token=str(entry["identitytoken"]))
        if isinstance(entry, dict) and entry.get("auth"):
            return _decode_auth(entry["auth"], f"{path} (auths.{key}.auth)")
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return credential_helper(store, helper_server(registry))
    return None


def _decode_auth(value: object, origin: str) -> Credentials:
    try:
        text = base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise Oci2vmError(f"malformed {origin}: not base64 of USER:PASS") from e
    return parse_creds(text, origin)


def credential_helper(name: str, server: str) -> Credentials | None:
    """Ask `docker-credential-NAME get` for the credentials of `server`. A helper that
    is not installed or has no credentials for the server means anonymous access."""
    program = f"docker-credential-{name}"
    if not tools.have_program(program):
        log.warning("%s not found: pulling from %s anonymously", program, server)
        return None
    returncode, stdout, stderr = _run_helper(program, server)
    out = stdout.decode(errors="replace").strip()
    if returncode != 0:
        err = (out + "\n" + stderr.decode(errors="replace")).strip()
        if "credentials not found" in err.lower():
            return None
        detail = err.splitlines()[-1] if err else f"exit status {returncode}"
        raise Oci2vmError(f"{program} get failed for {server}: {detail}")
    try:
        doc = load_json(stdout, f"{program} output", limit=len(stdout))
    except Oci2vmError as e:
        raise Oci2vmError(f"{program} get printed no JSON for {server}") from e
    user = doc.get("Username")
    secret = doc.get("Secret")
    if not isinstance(user, str) or not isinstance(secret, str):
        raise Oci2vmError(f"{program} get printed no Username and Secret for {server}")
    if not user and not secret:
        return None
    if user == IDENTITY_TOKEN_USER:
        return Credentials("", "", program, identity_token=secret)
    return Credentials(user, secret, program)


def _run_helper(program: str, server: str) -> tuple[int, bytes, bytes]:
    """Run `program get` for `server`: (exit status, stdout, stderr), each output at
    most MAX_HELPER_OUTPUT bytes, within HELPER_TIMEOUT, or a one-line error."""
    proc = tools.popen(
        [program, "get"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        outputs = _read_bounded(proc, server.encode(), f"{program} get", server)
        return proc.wait(), outputs[0], outputs[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_bounded(
    proc: subprocess.Popen[bytes], data: bytes, what: str, server: str
) -> tuple[bytes, bytes]:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it did not want to read: its answer says why
    outputs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    deadline = time.monotonic() + HELPER_TIMEOUT
    with selectors.DefaultSelector() as selector:
        for stream in (proc.stdout, proc.stderr):
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Oci2vmError(f"{what} did not finish within {HELPER_TIMEOUT:g} s")
            for key, _events in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                outputs[key.fd] += chunk
                if len(outputs[key.fd]) > MAX_HELPER_OUTPUT:
                    raise Oci2vmError(
                        f"{what} printed more than {MAX_HELPER_OUTPUT} bytes for {server}"
                    )
    return bytes(outputs[proc.stdout.fileno()]), bytes(outputs[proc.stderr.fileno()])


# --- answering a challenge --------------------------------------------------------------

# What a Bearer token may hold: RFC 6750's b64token, widened to any visible ASCII.
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")

# (method, url, headers, body) -> (HTTP status, body); connection problems raise
# Oci2vmError.
HttpRequest = Callable[[str, str, Mapping[str, str], bytes | None], tuple[int, bytes]]


class Authenticator:
    """Answers a registry's challenges for one run: looks credentials up once, when the
    registry first asks, and keeps Bearer tokens per (realm, service, scope) until they
    expire."""

    def __init__(
        self,
        registry: str,
        credentials: Callable[[], Credentials | None],
        http: HttpRequest,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._lookup = credentials
        self._looked_up = False
        self._credentials: Credentials | None = None
        self._http = http
        self._clock = clock
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.token_requests = 0

    @property
    def credentials(self) -> Credentials | None:
        if not self._looked_up:
            self._credentials = self._lookup()
            self._looked_up = True
        return self._credentials

    def refused(self, detail: str, *, answered: bool = True) -> Oci2vmError:
        """The error for a registry that refused us: after we answered its challenge,
        or (`answered` false) without having asked for anything."""
        creds = self.credentials
        if not answered and creds is not None:
            who = "the registry refused access without asking for credentials"
        elif creds is None:
            who = "anonymous access was refused: pass --creds USER:PASS or log in"
        elif creds.identity_token is not None:
            who = f"the identity token from {creds.origin} was refused"
        else:
            who = f"the credentials of user {creds.username!r} from {creds.origin} were refused"
        return Oci2vmError(f"authentication to {self.registry} failed: {who} ({detail})")

    def authorization(self, challenges: list[Challenge], scope: str, *, fresh: bool) -> str:
        """The Authorization header that answers `challenges` for `scope` (used when the
        challenge names none). `fresh` skips the token cache (the last token failed)."""
        by_scheme = {c.scheme: c for c in challenges}
        if "bearer" in by_scheme:
            params = by_scheme["bearer"].params
            return "Bearer " + self.token(
                params.get("realm", ""),
                params.get("service", ""),
                params.get("scope") or scope,
                fresh=fresh,
            )
        if "basic" in by_scheme:
            creds = self.credentials
            if creds is not None and creds.identity_token is not None:
                raise Oci2vmError(
                    f"authentication to {self.registry} failed: the registry asks for a "
                    f"password, but {creds.origin} holds an identity token"
                )
            if creds is None:
                raise Oci2vmError(
                    f"authentication to {self.registry} failed: the registry requires "
                    "credentials: pass --creds USER:PASS or log in (podman login, docker login)"
                )
            return creds.basic()
        schemes = ", ".join(c.scheme for c in challenges) or "none"
        raise Oci2vmError(
            f"authentication to {self.registry} failed: unsupported scheme ({schemes})"
        )

    def token(self, realm: str, service: str, scope: str, *, fresh: bool = False) -> str:
        if not re.match(r"^https?://", realm):
            raise Oci2vmError(
                f"authentication to {self.registry} failed: the Bearer challenge names "
                f"no usable token realm ({shown(repr(realm))})"
            )
        key = (realm, service, scope)
        server = shown(realm)  # for messages: it comes from the registry's header
        cached = self._tokens.get(key)
        if cached is not None and not fresh and cached[1] > self._clock():
            return cached[0]
        service_param = [("service", service)] if service else []
        creds = self.credentials
        self.token_requests += 1
        if creds is not None and creds.identity_token is not None:
            # OAuth2's refresh-token grant, as docker does: a form with one scope field.
            form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("client_id", CLIENT_ID),
                *service_param,
                ("scope", " ".join(scope.split())),
            ]
            form_type = {"Content-Type": "application/x-www-form-urlencoded"}
            status, body = self._http("POST", realm, form_type, urlencode(form).encode())
        else:
            query = service_param + [("scope", s) for s in scope.split()]
            url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
            headers = {"Authorization": creds.basic()} if creds is not None else {}
            status, body = self._http("GET", url, headers, None)
        if status in (401, 403):
            raise self.refused(f"token server {server} answered HTTP {status}")
        if status != 200:
            raise Oci2vmError(
                f"authentication to {self.registry} failed: token server {server} "
                f"answered HTTP {status}"
            )
        try:
            # The bounded loader: JSON nested deeply or a number of thousands of digits
            # would make Python's own parser raise a traceback.
            doc = load_json(body, "token response", limit=len(body))
        except Oci2vmError as e:
            raise Oci2vmError(
                f"authentication to {self.registry} failed: token server {server} sent no JSON"
            ) from e
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise Oci2vmError(
                f"authentication to {self.registry} failed: token server {server} sent no token"
            )
        if not _HEADER_TOKEN.fullmatch(token):
            # It goes into an Authorization header: a CR or LF would end the header there,
            # and http.client sends only Latin-1.
            raise Oci2vmError(
                f"authentication to {self.registry} failed: token server {server} sent an "
                "unusable token (characters other than visible ASCII)"
            )
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or not 0 < lifetime < math.inf:
            lifetime = DEFAULT_TOKEN_LIFETIME
        # Renew a little early rather than send a token that expires on the way.
        self._tokens[key] = (token, self._clock() + lifetime * 0.9)
        return token
