"""The registry source against a real docker-registry on 127.0.0.1 (the session fixtures
of tests/conftest.py): anonymous, htpasswd Basic auth, token auth against our token
server, TLS; and the project's fixture images pushed there and pulled back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from oci2vm import sources
from oci2vm.image.blobs import BlobStore
from oci2vm.image.model import Platform
from oci2vm.sources.base import Fetch
from support.authfiles import b64, make_helper, write_json
from support.programs import requires
from support.registries import (
    PASSWORD,
    USER,
    Progress,
    PushedImages,
    Registry,
    assert_is,
    cache_files,
    error_of,
    pull,
    running_registry,
)
from support.tokens import SERVICE, TokenRequest

pytestmark = [
    pytest.mark.registry,
    pytest.mark.usefixtures("no_host_credentials"),
    requires("docker-registry", "skopeo"),
]


# --- a real registry: anonymous ---------------------------------------------------------


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
    # the image's blobs, and its manifest (for --pull missing)
    assert cache_files(store) == sorted(d[7:] for d in (*app.blobs, app.manifest_digest))


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
    # What verified stays; nothing of the tampered blob, not even a temporary file. (The
    # other layer is there if its download began before the failure: finished, verified
    # and cached; one not begun yet is not started. Which it was is the threads' timing:
    # tests/unit/test_arrival.py pins both cases down.)
    cached = cache_files(store)
    assert app.config_digest[7:] in cached
    assert set(cached) <= {d[7:] for d in (app.config_digest, app.layer_digests[0])}


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
