"""The registry source against a real docker-registry (anonymous, htpasswd, token auth,
TLS) and against a fake registry that lies; and its auth parts alone: the
WWW-Authenticate parser, auth files, credential helpers, the token cache."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from oci2vm import sources
from oci2vm.cli import main
from oci2vm.errors import Oci2vmError
from oci2vm.image.blobs import BlobStore, ProgressFn
from oci2vm.image.model import Image, Platform
from oci2vm.sources import registry
from oci2vm.sources.auth import (
    Authenticator,
    Challenge,
    Credentials,
    auth_file_paths,
    credentials_from_file,
    find_credentials,
    normalize_key,
    parse_www_authenticate,
)
from oci2vm.sources.base import Fetch
from oci2vm.sources.reference import parse_reference

# The harness's fixtures come in as a plugin (pytest_plugins below); marking it for
# assertion rewriting before it is imported keeps pytest from warning about it.
pytest.register_assert_rewrite("registry_support")

from registry_support import (  # noqa: E402
    PASSWORD,
    SERVICE,
    USER,
    BuiltImage,
    PushedImages,
    Registry,
    Reply,
    TokenRequest,
    build_image,
    build_index,
    fake_registry,
    free_port,
    running_registry,
)

pytest_plugins = ["registry_support"]


@pytest.fixture(autouse=True)
def no_host_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's own auth files out of every test."""
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "cache")


def pull(host: str, name: str, store: BlobStore, **options: object) -> Image:
    ref = parse_reference(f"{host}/{name}")
    options.setdefault("tls_verify", False)
    fetch = Fetch(store=store, **options)  # type: ignore[arg-type]
    return registry.resolve(f"docker://{ref}", ref, fetch)


def error_of(call: Callable[[], object]) -> str:
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
    """Every file in the cache, temporary ones included."""
    return sorted(p.name for p in store.root.rglob("*") if p.is_file())


# --- WWW-Authenticate --------------------------------------------------------------------


def test_bearer_challenge_with_commas_inside_quoted_values() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:org/app:pull,push repository:org/base:pull"'
    )
    assert parse_www_authenticate(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example.com/token",
                "service": "registry.example.com",
                "scope": "repository:org/app:pull,push repository:org/base:pull",
            },
        )
    ]


def test_several_challenges_escapes_spaces_and_case() -> None:
    header = (
        'Basic realm="say \\"hi\\", then go" , BEARER Realm = https://t.example/token ,'
        ' error="insufficient_scope"'
    )
    assert parse_www_authenticate(header) == [
        Challenge("basic", {"realm": 'say "hi", then go'}),
        Challenge("bearer", {"realm": "https://t.example/token", "error": "insufficient_scope"}),
    ]


def test_token68_and_bare_schemes() -> None:
    assert parse_www_authenticate("Negotiate abc+/def==, Basic") == [
        Challenge("negotiate", {"": "abc+/def=="}),
        Challenge("basic", {}),
    ]
    assert parse_www_authenticate("Negotiate abcdef==,Basic realm=r") == [
        Challenge("negotiate", {"": "abcdef=="}),
        Challenge("basic", {"realm": "r"}),
    ]
    assert parse_www_authenticate("") == []


# --- credentials from files and helpers -------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_json(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def make_helper(bin_dir: Path, name: str, script: str) -> Path:
    """A docker-credential-NAME program that logs its stdin to NAME.stdin."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(
        f'#!/bin/sh\n[ "$1" = get ] || exit 2\nserver=$(cat)\n'
        f'printf %s "$server" >> {bin_dir}/{name}.stdin\n{script}\n'
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def test_auth_files_are_searched_in_order(tmp_path: Path) -> None:
    env = {
        "REGISTRY_AUTH_FILE": str(tmp_path / "env.json"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "HOME": str(tmp_path / "home"),
    }
    assert auth_file_paths(tmp_path / "flag.json", env) == [
        tmp_path / "flag.json",
        tmp_path / "env.json",
        tmp_path / "run/containers/auth.json",
        tmp_path / "config/containers/auth.json",
        tmp_path / "docker/config.json",
    ]
    del env["DOCKER_CONFIG"], env["XDG_CONFIG_HOME"]
    assert auth_file_paths(None, env)[-2:] == [
        tmp_path / "home/.config/containers/auth.json",
        tmp_path / "home/.docker/config.json",
    ]
    # The first file that knows the registry wins; --creds beats them all.
    write_json(tmp_path / "env.json", {"auths": {"other.example": {"auth": b64("x:y")}}})
    write_json(
        tmp_path / "run/containers/auth.json", {"auths": {"r.example": {"auth": b64("a:1")}}}
    )
    write_json(
        tmp_path / "home/.docker/config.json", {"auths": {"r.example": {"auth": b64("b:2")}}}
    )
    origin = f"{tmp_path}/run/containers/auth.json (auths.r.example.auth)"
    assert find_credentials("r.example", "app", env=env) == Credentials("a", "1", origin)
    assert find_credentials("r.example", "app", creds="c:3:4", env=env) == Credentials(
        "c", "3:4", "--creds"
    )
    assert find_credentials("nowhere.example", "app", env=env) is None


def test_auths_keys_match_by_host_hub_aliases_and_namespace(tmp_path: Path) -> None:
    config = write_json(
        tmp_path / "config.json",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:1")},
                "http://r.example:5000/v2/": {"auth": b64("reg:2")},
                "r.example:5000/team": {"auth": b64("team:3")},
                "empty.example": {},
            }
        },
    )
    assert normalize_key("https://index.docker.io/v1/") == "docker.io"
    assert normalize_key("registry-1.docker.io/library") == "docker.io/library"

    def user(registry: str, repository: str) -> str | None:
        found = credentials_from_file(config, registry, repository)
        return None if found is None else found.username

    assert user("docker.io", "library/debian") == "hub"
    assert user("r.example:5000", "other/app") == "reg"
    assert user("r.example:5000", "team/app") == "team"
    assert user("r.example:5000", "teamwork/app") == "reg"
    assert user("r.example", "app") is None
    assert user("empty.example", "app") is None


def test_malformed_auth_entries_are_errors(tmp_path: Path) -> None:
    config = write_json(tmp_path / "a.json", {"auths": {"r.example": {"auth": "%%%"}}})
    assert error_of(lambda: credentials_from_file(config, "r.example")) == (
        f"malformed {config} (auths.r.example.auth): not base64 of USER:PASS"
    )
    (tmp_path / "b.json").write_text("{nope")
    assert error_of(lambda: credentials_from_file(tmp_path / "b.json", "r.example")).startswith(
        f"malformed auth file {tmp_path}/b.json: not valid JSON ("
    )
    assert error_of(lambda: find_credentials("r.example", creds="nocolon")) == (
        "malformed --creds: expected USER:PASS"
    )


def test_cred_helpers_win_then_auths_then_creds_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    make_helper(bin_dir, "pass", 'echo "{\\"Username\\":\\"u-$server\\",\\"Secret\\":\\"p\\"}"')
    make_helper(bin_dir, "store", 'echo "{\\"Username\\":\\"s-$server\\",\\"Secret\\":\\"q\\"}"')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = write_json(
        tmp_path / "config.json",
        {
            "auths": {"file.example": {"auth": b64("f:1")}, "helped.example": {"auth": b64("x:x")}},
            "credHelpers": {"helped.example": "pass", "docker.io": "pass"},
            "credsStore": "store",
        },
    )

    def found(registry: str) -> Credentials | None:
        return credentials_from_file(config, registry)

    assert found("helped.example") == Credentials("u-helped.example", "p", "docker-credential-pass")
    # Docker Hub's helpers are asked about the key `docker login` uses.
    assert found("docker.io") == Credentials(
        "u-https://index.docker.io/v1/", "p", "docker-credential-pass"
    )
    assert found("file.example") == Credentials("f", "1", f"{config} (auths.file.example.auth)")
    assert found("other.example") == Credentials("s-other.example", "q", "docker-credential-store")
    assert (bin_dir / "pass.stdin").read_text() == "helped.examplehttps://index.docker.io/v1/"


def test_missing_or_empty_helper_means_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    make_helper(bin_dir, "empty", "echo 'credentials not found in native keychain'; exit 1")
    make_helper(bin_dir, "broken", "echo 'keychain locked' >&2; exit 3")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for name in ("empty", "not-installed-here"):
        config = write_json(tmp_path / f"{name}.json", {"credsStore": name})
        assert credentials_from_file(config, "r.example") is None
    config = write_json(tmp_path / "broken.json", {"credHelpers": {"r.example": "broken"}})
    assert error_of(lambda: credentials_from_file(config, "r.example")) == (
        "docker-credential-broken get failed for r.example: keychain locked"
    )


# --- the token dance, with a stand-in for HTTP -------------------------------------------


class TokenEndpoint:
    def __init__(self, status: int = 200, body: Mapping[str, object] | None = None) -> None:
        self.status = status
        self.body = body if body is not None else {"token": "tok-1", "expires_in": 300}
        self.calls: list[tuple[str, str, dict[str, str], bytes | None]] = []

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        self.calls.append((method, url, dict(headers), body))
        return self.status, json.dumps(self.body).encode()


BEARER = [Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})]


def test_tokens_are_cached_per_scope_until_they_expire() -> None:
    endpoint = TokenEndpoint(body={"access_token": "tok-1", "expires_in": 100})
    now = [1000.0]
    auth = Authenticator(
        "r.example", lambda: Credentials("u", "p", "--creds"), endpoint, clock=lambda: now[0]
    )
    assert auth.authorization(BEARER, "repository:a:pull", fresh=False) == "Bearer tok-1"
    assert auth.authorization(BEARER, "repository:a:pull", fresh=False) == "Bearer tok-1"
    assert len(endpoint.calls) == 1
    assert endpoint.calls[0] == (
        "GET",
        "https://auth.example/token?service=reg&scope=repository%3Aa%3Apull",
        {"Authorization": "Basic " + b64("u:p")},
        None,
    )
    auth.authorization(BEARER, "repository:b:pull", fresh=False)
    assert len(endpoint.calls) == 2
    now[0] += 95  # past 90% of the lifetime
    auth.authorization(BEARER, "repository:a:pull", fresh=False)
    assert len(endpoint.calls) == 3
    auth.authorization(BEARER, "repository:a:pull", fresh=True)
    assert len(endpoint.calls) == 4


def test_identity_tokens_are_traded_by_oauth2_post() -> None:
    endpoint = TokenEndpoint(body={"access_token": "tok-2"})
    creds = Credentials("", "", "helper", identity_token="refresh-1")
    auth = Authenticator("r.example", lambda: creds, endpoint)
    assert auth.authorization(BEARER, "repository:a:pull", fresh=False) == "Bearer tok-2"
    assert endpoint.calls == [
        (
            "POST",
            "https://auth.example/token",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"grant_type=refresh_token&refresh_token=refresh-1&client_id=oci2vm&service=reg"
            b"&scope=repository%3Aa%3Apull",
        )
    ]
    assert error_of(lambda: auth.authorization([Challenge("basic")], "s", fresh=False)) == (
        "authentication to r.example failed: the registry asks for a password, but helper "
        "holds an identity token"
    )


def test_identity_tokens_in_auth_files_and_from_helpers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    make_helper(bin_dir, "acr", 'echo \'{"Username":"<token>","Secret":"refresh-9"}\'')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = write_json(
        tmp_path / "config.json",
        {
            "auths": {"a.example": {"auth": b64("someone:"), "identitytoken": "refresh-8"}},
            "credHelpers": {"b.example": "acr"},
        },
    )
    assert credentials_from_file(config, "a.example") == Credentials(
        "someone", "", f"{config} (auths.a.example.identitytoken)", identity_token="refresh-8"
    )
    assert credentials_from_file(config, "b.example") == Credentials(
        "", "", "docker-credential-acr", identity_token="refresh-9"
    )


def test_token_server_refusal_and_odd_answers() -> None:
    anonymous = Authenticator("r.example", lambda: None, TokenEndpoint(status=401))
    assert error_of(lambda: anonymous.authorization(BEARER, "s", fresh=False)) == (
        "authentication to r.example failed: anonymous access was refused: pass --creds "
        "USER:PASS or log in (token server https://auth.example/token answered HTTP 401)"
    )
    empty = Authenticator("r.example", lambda: None, TokenEndpoint(body={"expires_in": 3}))
    assert error_of(lambda: empty.authorization(BEARER, "s", fresh=False)) == (
        "authentication to r.example failed: token server https://auth.example/token sent no token"
    )
    basic = Authenticator("r.example", lambda: None, TokenEndpoint())
    assert error_of(lambda: basic.authorization([Challenge("basic")], "s", fresh=False)) == (
        "authentication to r.example failed: the registry requires credentials: pass "
        "--creds USER:PASS or log in (podman login, docker login)"
    )
    no_realm = [Challenge("bearer", {"service": "reg"})]
    assert error_of(lambda: basic.authorization(no_realm, "s", fresh=False)) == (
        "authentication to r.example failed: the Bearer challenge names no usable token realm ('')"
    )


# --- a real registry: anonymous ---------------------------------------------------------


class Progress:
    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.bytes = 0

    def __call__(self, what: str, size: int | None) -> ProgressFn:
        self.started.append((what, size))

        def advance(n: int) -> None:
            self.bytes += n

        return advance


@pytest.mark.registry
def test_anonymous_pull_caches_each_blob_once(
    registry_anonymous: Registry, pushed_images: PushedImages, store: BlobStore
) -> None:
    app = pushed_images.app
    progress = Progress()
    image = pull(registry_anonymous.host, "app:1", store, on_blob=progress)
    assert_is(image, app, store)
    assert image.name == f"{registry_anonymous.host}/app:1"
    assert image.manifest_media_type == "application/vnd.oci.image.manifest.v1+json"
    # The config first; the layers download side by side, so they start in any order.
    assert progress.started[0] == (f"config {app.config_digest[7:19]}", len(app.config))
    assert sorted(progress.started[1:]) == sorted(
        [
            (f"layer {app.layer_digests[0][7:19]}", len(app.layers[0])),
            (f"layer {app.layer_digests[1][7:19]}", len(app.layers[1])),
        ]
    )
    assert progress.bytes == sum(len(b) for b in app.blobs.values())
    files = {d: store.path(d).stat() for d in app.blobs}

    again = Progress()
    assert_is(pull(registry_anonymous.host, "app:1", store, on_blob=again), app, store)
    assert again.started == []
    for digest, before in files.items():
        after = store.path(digest).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert cache_files(store) == sorted(d[7:] for d in app.blobs)


@pytest.mark.registry
def test_pull_by_digest(
    registry_anonymous: Registry, pushed_images: PushedImages, store: BlobStore
) -> None:
    app = pushed_images.app
    image = pull(registry_anonymous.host, f"app@{app.manifest_digest}", store)
    assert_is(image, app, store)


@pytest.mark.registry
@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64/v8", "linux/arm64"])
def test_platform_is_chosen_from_an_index(
    registry_anonymous: Registry, pushed_images: PushedImages, store: BlobStore, platform: str
) -> None:
    image = pull(registry_anonymous.host, "multi:1", store, platform=Platform.parse(platform))
    expected = next(i for i in pushed_images.multi.images if i.platform.startswith(platform))
    assert_is(image, expected, store)


@pytest.mark.registry
def test_missing_platform_unknown_tag_and_repository(
    registry_anonymous: Registry, store: BlobStore
) -> None:
    host = registry_anonymous.host
    s390x = Platform.parse("linux/s390x")
    assert error_of(lambda: pull(host, "multi:1", store, platform=s390x)) == (
        f"image index of {host}/multi:1 has no manifest for platform linux/s390x "
        "(it has: linux/amd64, linux/arm64/v8)"
    )
    assert error_of(lambda: pull(host, "app:nope", store)) == (
        f"{host}/app:nope not found in registry {host}: no tag nope (it has: 1)"
    )
    assert error_of(lambda: pull(host, "nothere:1", store)) == (
        f"{host}/nothere:1 not found in registry {host}: no repository nothere"
    )
    assert cache_files(store) == []


@pytest.mark.registry
def test_tampered_blob_in_registry_storage_is_refused_and_not_cached(
    tmp_path: Path, pushed_images: PushedImages, store: BlobStore
) -> None:
    app = pushed_images.app
    with running_registry(tmp_path / "registry") as reg:
        reg.push(pushed_images.layout, "app", "app:1")
        data = reg.blob_file(app.layer_digests[1])
        tampered = bytearray(data.read_bytes())
        tampered[-1] ^= 0xFF
        data.write_bytes(bytes(tampered))
        message = error_of(lambda: pull(reg.host, "app:1", store))
    got = "sha256:" + hashlib.sha256(tampered).hexdigest()
    assert message == (
        f"blob {app.layer_digests[1]} of {reg.host}/app: digest mismatch: "
        f"expected {app.layer_digests[1]}, got {got}"
    )
    # What verified stays; nothing of the tampered blob, not even a temporary file.
    assert cache_files(store) == sorted(d[7:] for d in (app.config_digest, app.layer_digests[0]))


@pytest.mark.registry
def test_connection_refused(store: BlobStore) -> None:
    host = f"127.0.0.1:{free_port()}"
    assert error_of(lambda: pull(host, "app:1", store, tls_verify=True)) == (
        f"cannot connect to registry {host}: connection refused"
    )
    assert error_of(lambda: pull(host, "app:1", store, tls_verify=False)) == (
        f"cannot connect to registry {host}: connection refused"
    )


@pytest.mark.registry
@pytest.mark.fixture
@pytest.mark.parametrize(
    ("name", "mode"), [("busybox", "anonymous"), ("busybox", "token"), ("debian", "token")]
)
def test_fixture_image_arrives_as_it_left(
    name: str, mode: str, request: pytest.FixtureRequest, store: BlobStore, tmp_path: Path
) -> None:
    """A project fixture image (busybox: gzip, zstd and plain layers; Debian: the big
    one) pushed to a real registry comes back with the same digests and config as read
    from its OCI layout."""
    # Imported here so that the rest of this module does not depend on the fixtures.
    from fixture_images import busybox_fixture, debian_fixture, fixture_is_cached

    if name == "debian" and not fixture_is_cached("debian") and os.geteuid() != 0:
        pytest.skip("building the debian fixture needs root (debootstrap, chroot)")
    fx = busybox_fixture() if name == "busybox" else debian_fixture()
    reg: Registry = request.getfixturevalue(f"registry_{mode}")
    reg.push(fx.oci_layout, fx.tag, f"{name}:fixture")
    image = pull(reg.host, f"{name}:fixture", store, creds=reg.creds)
    assert image.manifest_digest == fx.manifest_digest
    assert image.config_digest == fx.config_digest
    assert image.config.diff_ids == fx.diff_ids
    assert tuple(layer.digest for layer in image.layers) == fx.layer_digests
    assert tuple(layer.media_type for layer in image.layers) == fx.layer_media_types
    assert (image.config.entrypoint, image.config.cmd) == (fx.entrypoint, fx.cmd)
    assert (image.config.env, image.config.working_dir, image.config.user) == (
        fx.env,
        fx.working_dir,
        fx.user,
    )
    local = sources.resolve(
        f"oci:{fx.oci_layout}:{fx.tag}", Fetch(store=BlobStore(tmp_path / "local"))
    )
    assert image.config == local.config
    # Each cached blob was verified against its digest as it was stored.
    for pulled, read in zip(image.layers, local.layers, strict=True):
        assert (pulled.digest, pulled.blob.size) == (read.digest, read.blob.size)
        assert pulled.blob.path == store.path(read.digest or "")


# --- a real registry: Basic auth --------------------------------------------------------


@pytest.mark.registry
def test_basic_auth_with_creds(
    registry_basic: Registry, pushed_images: PushedImages, store: BlobStore
) -> None:
    image = pull(registry_basic.host, "app:1", store, creds=f"{USER}:{PASSWORD}")
    assert_is(image, pushed_images.app, store)


@pytest.mark.registry
def test_basic_auth_from_auth_files(
    registry_basic: Registry,
    pushed_images: PushedImages,
    store: BlobStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = {"auths": {registry_basic.host: {"auth": b64(f"{USER}:{PASSWORD}")}}}
    auth_file = write_json(tmp_path / "auth.json", entry)
    image = pull(registry_basic.host, "app:1", store, auth_file=auth_file)
    assert_is(image, pushed_images.app, store)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    image = pull(registry_basic.host, "multi:1", BlobStore(tmp_path / "cache2"))
    assert_is(image, pushed_images.multi.images[0], BlobStore(tmp_path / "cache2"))


@pytest.mark.registry
def test_basic_auth_refused(registry_basic: Registry, store: BlobStore) -> None:
    host = registry_basic.host
    assert error_of(lambda: pull(host, "app:1", store, creds=f"{USER}:wrong")) == (
        f"authentication to {host} failed: the credentials of user 'alice' from --creds "
        "were refused (HTTP 401 authentication required)"
    )
    assert error_of(lambda: pull(host, "app:1", store)) == (
        f"authentication to {host} failed: the registry requires credentials: pass "
        "--creds USER:PASS or log in (podman login, docker login)"
    )
    assert cache_files(store) == []


# --- a real registry: token auth --------------------------------------------------------


@pytest.mark.registry
def test_bearer_token_with_creds_from_docker_config(
    registry_token: Registry, pushed_images: PushedImages, store: BlobStore, tmp_path: Path
) -> None:
    assert registry_token.tokens is not None
    registry_token.tokens.requests.clear()
    write_json(
        tmp_path / "docker/config.json",
        {"auths": {registry_token.host: {"auth": b64(f"{USER}:{PASSWORD}")}}},
    )
    image = pull(registry_token.host, "app:1", store)
    assert_is(image, pushed_images.app, store)
    # One token for the repository, reused for the manifest and all three blobs.
    assert registry_token.tokens.requests == [
        TokenRequest(USER, SERVICE, ["repository:app:pull"], 200)
    ]


@pytest.mark.registry
def test_bearer_token_with_creds_from_a_credential_helper(
    registry_token: Registry,
    pushed_images: PushedImages,
    store: BlobStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert registry_token.tokens is not None
    registry_token.tokens.requests.clear()
    bin_dir = tmp_path / "bin"
    make_helper(
        bin_dir,
        "oci2vm-test",
        f'[ "$server" = "{registry_token.host}" ] || '
        "{ echo 'credentials not found in native keychain'; exit 1; }\n"
        f'echo \'{{"ServerURL":"\'$server\'","Username":"{USER}","Secret":"{PASSWORD}"}}\'',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    write_json(
        tmp_path / "docker/config.json", {"credHelpers": {registry_token.host: "oci2vm-test"}}
    )
    image = pull(registry_token.host, "multi:1", store, platform=Platform.parse("linux/arm64"))
    assert_is(image, pushed_images.multi.images[1], store)
    assert registry_token.tokens.requests == [
        TokenRequest(USER, SERVICE, ["repository:multi:pull"], 200)
    ]
    assert (bin_dir / "oci2vm-test.stdin").read_text() == registry_token.host


@pytest.mark.registry
def test_bearer_token_from_an_identity_token(
    registry_token: Registry, pushed_images: PushedImages, store: BlobStore, tmp_path: Path
) -> None:
    tokens = registry_token.tokens
    assert tokens is not None
    tokens.requests.clear()
    tokens.refresh_tokens["refresh-alice"] = USER
    config = write_json(
        tmp_path / "docker/config.json",
        {"auths": {registry_token.host: {"identitytoken": "refresh-alice"}}},
    )
    image = pull(registry_token.host, "app:1", store)
    assert_is(image, pushed_images.app, store)
    assert tokens.requests == [TokenRequest(USER, SERVICE, ["repository:app:pull"], 200, "POST")]
    write_json(config, {"auths": {registry_token.host: {"identitytoken": "revoked"}}})
    assert error_of(lambda: pull(registry_token.host, "app:1", BlobStore(tmp_path / "c2"))) == (
        f"authentication to {registry_token.host} failed: the identity token from {config} "
        f"(auths.{registry_token.host}.identitytoken) was refused (token server "
        f"{tokens.realm} answered HTTP 401)"
    )


@pytest.mark.registry
def test_bearer_token_refused(registry_token: Registry, store: BlobStore) -> None:
    host = registry_token.host
    assert registry_token.tokens is not None
    realm = registry_token.tokens.realm
    assert error_of(lambda: pull(host, "app:1", store, creds=f"{USER}:wrong")) == (
        f"authentication to {host} failed: the credentials of user 'alice' from --creds "
        f"were refused (token server {realm} answered HTTP 401)"
    )
    # Anonymous tokens grant nothing here, as Docker Hub's do for private repositories.
    assert error_of(lambda: pull(host, "app:1", store)) == (
        f"authentication to {host} failed: anonymous access was refused: pass --creds "
        "USER:PASS or log in (HTTP 401 authentication required)"
    )
    assert cache_files(store) == []


# --- a real registry: TLS ---------------------------------------------------------------


@pytest.mark.registry
def test_tls_is_verified_by_default(
    registry_tls: Registry,
    pushed_images: PushedImages,
    store: BlobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = registry_tls.host
    assert error_of(lambda: pull(host, "app:1", store, tls_verify=True)) == (
        f"TLS connection to registry {host} failed: certificate verify failed: "
        "self-signed certificate: if you trust this registry, use --tls-verify=false"
    )
    assert_is(pull(host, "app:1", store, tls_verify=False), pushed_images.app, store)
    # Verification uses the system's trust store, which SSL_CERT_FILE replaces.
    assert registry_tls.tls is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(registry_tls.tls.cert_path))
    other = BlobStore(store.root.parent / "cache2")
    assert_is(pull(host, "app:1", other, tls_verify=True), pushed_images.app, other)


# --- a registry that lies ---------------------------------------------------------------


@pytest.mark.registry
def test_single_image_of_another_platform_is_refused_before_its_layers(
    store: BlobStore,
) -> None:
    image = build_image("linux/arm64")
    with fake_registry() as fake:
        fake.add_image("app", "1", image)
        assert error_of(lambda: pull(fake.host, "app:1", store)) == (
            f"docker://{fake.host}/app:1: the image config says linux/arm64, not linux/amd64: "
            "pass --platform linux/arm64 to use it"
        )
        blobs = [s.path for s in fake.seen if "/blobs/" in s.path]
        assert blobs == [f"/v2/app/blobs/{image.config_digest}"]


@pytest.mark.registry
def test_docker_manifest_list_and_second_pull_asks_only_for_manifests(
    store: BlobStore,
) -> None:
    index = build_index("linux/amd64", "linux/arm/v7", docker=True)
    with fake_registry() as fake:
        fake.add_image("app", "1", index)
        arm = Platform.parse("linux/arm/v7")
        image = pull(fake.host, "app:1", store, platform=arm)
        assert_is(image, index.images[1], store)
        assert image.manifest_media_type == "application/vnd.docker.distribution.manifest.v2+json"
        blob_requests = [s.path for s in fake.seen if "/blobs/" in s.path]
        assert len(blob_requests) == 3
        fake.seen.clear()
        pull(fake.host, "app:1", store, platform=arm)
        assert [s.path for s in fake.seen] == [
            "/v2/",
            "/v2/app/manifests/1",
            f"/v2/app/manifests/{index.images[1].manifest_digest}",
        ]
        assert all(s.headers["Accept"] for s in fake.seen[1:])


@pytest.mark.registry
def test_nested_indexes_are_followed(store: BlobStore) -> None:
    inner = build_index("linux/amd64", "linux/arm64/v8")
    outer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": inner.media_type,
                    "digest": inner.digest,
                    "size": len(inner.index),
                    "platform": {"os": "linux", "architecture": "arm64"},
                }
            ],
        }
    ).encode()
    with fake_registry() as fake:
        fake.add_image("app", "inner", inner)
        fake.add_manifest("app", "1", outer, "application/vnd.oci.image.index.v1+json")
        image = pull(fake.host, "app:1", store, platform=Platform.parse("linux/arm64/v8"))
        assert_is(image, inner.images[1], store)


@pytest.mark.registry
def test_manifest_served_as_plain_json_is_read_by_its_media_type(store: BlobStore) -> None:
    app = build_image("linux/arm64/v8")
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        fake.add_manifest("app", "1", app.manifest, "application/json")
        image = pull(fake.host, "app:1", store, platform=Platform.parse("linux/arm64"))
    assert_is(image, app, store)
    assert image.manifest_media_type == "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.registry
def test_tampered_blob_from_a_lying_registry(store: BlobStore) -> None:
    app = build_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        lie = bytes(len(app.layers[0]))
        fake.routes[f"/v2/app/blobs/{app.layer_digests[0]}"] = Reply(body=lie)
        message = error_of(lambda: pull(fake.host, "app:1", store))
    assert message == (
        f"blob {app.layer_digests[0]} of {fake.host}/app: digest mismatch: "
        f"expected {app.layer_digests[0]}, got sha256:" + hashlib.sha256(lie).hexdigest()
    )
    # The other layer, downloaded alongside, is complete and verified: it stays.
    assert cache_files(store) == sorted([app.config_digest[7:], app.layer_digests[1][7:]])


@pytest.mark.registry
def test_manifest_that_is_not_json_or_not_what_was_asked(store: BlobStore) -> None:
    app = build_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        fake.add_manifest("bad", "1", b"{not json", "application/vnd.oci.image.manifest.v1+json")
        assert error_of(lambda: pull(fake.host, "bad:1", store)) == (
            f"malformed manifest of {fake.host}/bad:1: not valid JSON (Expecting property "
            "name enclosed in double quotes: line 1 column 2 (char 1))"
        )
        # A digest that the bytes do not have, asked for or claimed by the registry.
        other = build_image("linux/arm64")
        path = f"/v2/app/manifests/{app.manifest_digest}"
        fake.routes[path] = Reply(body=other.manifest)
        assert error_of(lambda: pull(fake.host, f"app@{app.manifest_digest}", store)) == (
            f"manifest {app.manifest_digest} of {fake.host}/app@{app.manifest_digest}: "
            f"digest mismatch: expected {app.manifest_digest} (asked for), "
            f"got {other.manifest_digest}"
        )
        fake.routes["/v2/app/manifests/1"].headers["Docker-Content-Digest"] = other.manifest_digest
        assert error_of(lambda: pull(fake.host, "app:1", store)) == (
            f"manifest 1 of {fake.host}/app:1: digest mismatch: expected "
            f"{other.manifest_digest} (by the registry's Docker-Content-Digest), "
            f"got {app.manifest_digest}"
        )
    assert cache_files(store) == []


@pytest.mark.registry
def test_server_errors_and_dropped_connections_are_retried(store: BlobStore) -> None:
    app = build_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        manifest = "/v2/app/manifests/1"
        layer = f"/v2/app/blobs/{app.layer_digests[1]}"
        fake.once[manifest] += [Reply(503), Reply(429, headers={"Retry-After": "0"}), Reply(502)]
        fake.once[layer] += [Reply(body=app.layers[1], drop_after=100)]
        progress = Progress()
        assert_is(pull(fake.host, "app:1", store, on_blob=progress), app, store)
        # The 100 bytes read twice count once.
        assert progress.bytes == sum(len(b) for b in app.blobs.values())
        assert fake.requests_to(manifest) == 4
        assert fake.requests_to(layer) == 2
    assert cache_files(store) == sorted(d[7:] for d in app.blobs)


@pytest.mark.registry
def test_server_errors_that_do_not_stop(store: BlobStore) -> None:
    app = build_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        fake.routes["/v2/app/manifests/1"] = Reply(503, b'{"errors":[{"code":"UNAVAILABLE"}]}')
        assert error_of(lambda: pull(fake.host, "app:1", store)) == (
            f"registry {fake.host} answered HTTP 503 for GET /v2/app/manifests/1"
        )
        assert fake.requests_to("/v2/app/manifests/1") == 1 + registry.RETRIES
        layer = f"/v2/app/blobs/{app.layer_digests[0]}"
        del fake.routes["/v2/app/manifests/1"]
        fake.add_image("app", "1", app)
        fake.routes[layer] = Reply(body=app.layers[0], drop_after=10)
        message = error_of(lambda: pull(fake.host, "app:1", store))
        assert message == (
            f"download of blob {app.layer_digests[0]} of {fake.host}/app failed: "
            f"connection to registry {fake.host} dropped: Connection broken: "
            f"IncompleteRead(10 bytes read, {len(app.layers[0]) - 10} more expected)"
        )
        assert fake.requests_to(layer) == registry.BLOB_ATTEMPTS
    # The other layer, downloaded alongside, is complete and verified: it stays.
    assert cache_files(store) == sorted([app.config_digest[7:], app.layer_digests[1][7:]])


@pytest.mark.registry
def test_access_denied_is_an_authentication_failure(store: BlobStore) -> None:
    with fake_registry() as fake:
        denied = {"errors": [{"code": "DENIED", "message": "requested access is denied"}]}
        fake.routes["/v2/app/manifests/1"] = Reply(403, json.dumps(denied).encode())
        assert error_of(lambda: pull(fake.host, "app:1", store)) == (
            f"authentication to {fake.host} failed: anonymous access was refused: pass "
            "--creds USER:PASS or log in (HTTP 403 requested access is denied)"
        )
        assert error_of(lambda: pull(fake.host, "app:1", store, creds="bob:pw")) == (
            f"authentication to {fake.host} failed: the registry refused access without "
            "asking for credentials (HTTP 403 requested access is denied)"
        )
    with fake_registry(basic=("bob", "pw")) as fake:
        fake.routes["/v2/app/manifests/1"] = Reply(403, json.dumps(denied).encode())
        assert error_of(lambda: pull(fake.host, "app:1", store, creds="bob:pw")) == (
            f"authentication to {fake.host} failed: the credentials of user 'bob' from "
            "--creds were refused (HTTP 403 requested access is denied)"
        )


@pytest.mark.registry
def test_layers_download_concurrently(store: BlobStore) -> None:
    app = build_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        for digest in app.layer_digests:
            fake.routes[f"/v2/app/blobs/{digest}"].delay = 0.5
        assert_is(pull(fake.host, "app:1", store), app, store)
        assert fake.most_blobs_at_once == len(app.layer_digests) == 2


@pytest.mark.registry
def test_a_failed_layer_download_keeps_the_verified_ones_and_no_partial_file(
    store: BlobStore,
) -> None:
    app = build_image()
    first, second = app.layer_digests
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        fake.routes[f"/v2/app/blobs/{first}"].delay = 0.3
        fake.routes[f"/v2/app/blobs/{second}"] = Reply(
            body=app.blobs[second], drop_after=100
        )  # every attempt breaks off
        message = error_of(lambda: pull(fake.host, "app:1", store))
        assert message.startswith(f"download of blob {second} of {fake.host}/app failed")
        assert fake.requests_to(f"/v2/app/blobs/{second}") == registry.BLOB_ATTEMPTS
    assert cache_files(store) == sorted(
        d.removeprefix("sha256:") for d in (app.config_digest, first)
    )


@pytest.mark.registry
def test_blob_redirects_are_followed_without_the_credentials(store: BlobStore) -> None:
    app = build_image()
    with fake_registry(basic=("bob", "pw")) as fake, fake_registry() as storage:
        fake.add_image("app", "1", app)
        for digest, data in app.blobs.items():
            storage.routes[f"/storage/{digest}"] = Reply(body=data)
            location = f"http://{storage.host}/storage/{digest}"
            fake.routes[f"/v2/app/blobs/{digest}"] = Reply(307, headers={"Location": location})
        assert_is(pull(fake.host, "app:1", store, creds="bob:pw"), app, store)
        assert len(storage.seen) == 3
        assert not any("Authorization" in s.headers for s in storage.seen)
        blob_requests = [s for s in fake.seen if "/blobs/" in s.path]
        assert all(s.headers["Authorization"] == "Basic " + b64("bob:pw") for s in blob_requests)


# --- through the command line ---------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.registry
def test_cli_inspects_an_image_in_a_registry(
    registry_token: Registry,
    pushed_images: PushedImages,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arm = pushed_images.multi.images[1]
    for source in (f"docker://{registry_token.host}/multi:1", f"{registry_token.host}/multi:1"):
        code, out, err = run_cli(
            capsys,
            "inspect",
            "--json",
            source,
            "--platform=linux/arm64/v8",
            f"--creds={USER}:{PASSWORD}",
            "--tls-verify=false",
            f"--cache-dir={tmp_path / 'cache'}",
        )
        assert (code, err) == (0, "")
        report = json.loads(out)
        assert report["manifest_digest"] == arm.manifest_digest
        assert report["image_id"] == arm.config_digest
        assert report["platform"] == "linux/arm64/v8"
        assert [layer["diff_id"] for layer in report["layers"]] == list(arm.diff_ids)
        assert [layer["digest"] for layer in report["layers"]] == list(arm.layer_digests)


@pytest.mark.registry
def test_cli_reads_credentials_from_authfile(
    registry_basic: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth_file = write_json(
        tmp_path / "auth.json",
        {"auths": {registry_basic.host: {"auth": b64(f"{USER}:{PASSWORD}")}}},
    )
    source = f"docker://{registry_basic.host}/app:1"
    common = ["--tls-verify=false", f"--cache-dir={tmp_path / 'cache'}"]
    code, _out, err = run_cli(capsys, "inspect", "-q", source, *common)
    assert code == 1 and "the registry requires credentials" in err
    code, out, err = run_cli(
        capsys, "inspect", "--json", source, f"--authfile={auth_file}", *common
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["layers"]


@pytest.mark.registry
@pytest.mark.parametrize(
    ("registry_fixture", "args", "message"),
    [
        (
            "registry_basic",
            ["docker://{host}/app:1", "--creds=alice:wrong"],
            "authentication to {host} failed: the credentials of user 'alice' from --creds "
            "were refused (HTTP 401 authentication required)",
        ),
        (
            "registry_token",
            ["docker://{host}/app:1", "--creds=alice:wrong"],
            "authentication to {host} failed: the credentials of user 'alice' from --creds "
            "were refused (token server {realm} answered HTTP 401)",
        ),
        (
            "registry_anonymous",
            ["docker://{host}/app:nope"],
            "{host}/app:nope not found in registry {host}: no tag nope (it has: 1)",
        ),
        (
            "registry_anonymous",
            ["{host}/nothere"],
            "{host}/nothere:latest not found in registry {host}: no repository nothere",
        ),
        (
            "registry_anonymous",
            ["docker://{host}/multi:1", "--platform=linux/s390x"],
            "image index of {host}/multi:1 has no manifest for platform linux/s390x "
            "(it has: linux/amd64, linux/arm64/v8)",
        ),
        (
            "registry_tls",
            ["docker://{host}/app:1", "--tls-verify=true"],
            "TLS connection to registry {host} failed: certificate verify failed: "
            "self-signed certificate: if you trust this registry, use --tls-verify=false",
        ),
        (
            None,
            ["docker://{host}/app:1"],
            "cannot connect to registry {host}: connection refused",
        ),
    ],
    ids=["basic-refused", "token-refused", "tag", "repository", "platform", "tls", "down"],
)
def test_cli_registry_errors_are_one_line_and_exit_1(
    registry_fixture: str | None,
    args: list[str],
    message: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if registry_fixture is None:
        host, realm = f"127.0.0.1:{free_port()}", ""
    else:
        reg: Registry = request.getfixturevalue(registry_fixture)
        host, realm = reg.host, reg.tokens.realm if reg.tokens else ""
    argv = [a.format(host=host) for a in args]
    if not any(a.startswith("--tls-verify") for a in argv):
        argv.append("--tls-verify=false")
    cache = BlobStore(tmp_path / "cache")
    code, out, err = run_cli(capsys, "inspect", *argv, f"--cache-dir={cache.root}")
    assert (code, out) == (1, "")
    assert err == f"oci2vm: error: {message.format(host=host, realm=realm)}\n"
    assert cache_files(cache) == []
