"""The registry source against registries that try to get credentials in clear, send us
elsewhere, stall, or serve what is not supported: plain HTTP only to hosts the user
named, redirects checked at every hop, a deadline on progress, one-line errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci2vm.image.blobs import BlobStore
from support.deadline import within
from support.registries import (
    Reply,
    assert_is,
    error_of,
    fake_registry,
    free_port,
    pull,
    sample_image,
)
from support.tokens import KeyPair, self_signed

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("no_host_credentials")]


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyPair]:
    """A certificate for 127.0.0.1 that the process trusts."""
    keys = self_signed(tmp_path / "tls", "fake-registry")
    monkeypatch.setenv("SSL_CERT_FILE", str(keys.cert_path))
    yield keys


def _bearer(realm: str) -> Reply:
    return Reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake"'})


def test_a_token_realm_on_plain_http_gets_no_credentials(store: BlobStore, tls: KeyPair) -> None:
    with fake_registry(tls=tls) as fake, fake_registry() as realm:
        fake.add_image("app", "1", sample_image())
        fake.once["/v2/"] = [_bearer(f"http://{realm.host}/token")]
        message = error_of(lambda: pull(fake.host, "app:1", store, tls_verify=True, creds="u:pw"))
        assert message == (
            f"token server {realm.host} is at http://{realm.host}/token, plain HTTP: "
            "credentials and tokens would travel in clear; if you trust the network to "
            "127.0.0.1, pass --insecure-host 127.0.0.1"
        )
        assert realm.seen == []


def test_tls_verify_false_allows_plain_http_for_the_registry_host_only(
    store: BlobStore, tls: KeyPair
) -> None:
    with fake_registry(tls=tls) as fake, fake_registry() as realm:
        fake.add_image("app", "1", sample_image())
        other_host = f"localhost:{realm.port}"
        fake.once["/v2/"] = [_bearer(f"http://{other_host}/token")] * 2
        message = error_of(lambda: pull(fake.host, "app:1", store, tls_verify=False, creds="u:pw"))
        assert message.startswith(
            f"token server {other_host} is at http://{other_host}/token, plain HTTP"
        )
        assert message.endswith("pass --insecure-host localhost")
        assert realm.seen == []
        # Named, it is asked (and answers 404 here).
        message = error_of(
            lambda: pull(
                fake.host,
                "app:1",
                store,
                tls_verify=False,
                creds="u:pw",
                insecure_hosts=("localhost",),
            )
        )
        assert message.endswith(f"token server http://{other_host}/token answered HTTP 404")
        assert [s.path.split("?")[0] for s in realm.seen] == ["/token"]


def test_redirects_to_plain_http_or_other_schemes_are_not_followed(
    store: BlobStore, tls: KeyPair
) -> None:
    app = sample_image()
    layer = f"/v2/app/blobs/{app.layer_digests[0]}"
    with fake_registry(basic=("bob", "pw"), tls=tls) as fake, fake_registry() as storage:
        fake.add_image("app", "1", app)
        location = f"http://{storage.host}/storage?X-Amz-Signature=secret"
        fake.routes[layer] = Reply(307, headers={"Location": location})
        message = error_of(lambda: pull(fake.host, "app:1", store, tls_verify=True, creds="bob:pw"))
        assert message == (
            f"registry {fake.host} redirected us to http://{storage.host}/storage, which is "
            "plain HTTP: credentials and tokens would travel in clear; if you trust the "
            "network to 127.0.0.1, pass --insecure-host 127.0.0.1"
        )
        assert storage.seen == []
        fake.routes[layer] = Reply(302, headers={"Location": "file:///etc/passwd"})
        message = error_of(lambda: pull(fake.host, "app:1", store, tls_verify=True, creds="bob:pw"))
        assert message == (
            f"registry {fake.host} redirected us to file:///etc/passwd: only https:// and "
            "http:// are followed"
        )
    # Over TLS, to another origin (port): followed, without the credentials.
    with fake_registry(basic=("bob", "pw"), tls=tls) as fake, fake_registry(tls=tls) as storage:
        fake.add_image("app", "1", app)
        for digest, data in app.blobs.items():
            storage.routes[f"/s/{digest}"] = Reply(body=data)
            where = f"https://{storage.host}/s/{digest}"
            fake.routes[f"/v2/app/blobs/{digest}"] = Reply(308, headers={"Location": where})
        fresh = BlobStore(store.root.with_name("fresh"))
        assert_is(pull(fake.host, "app:1", fresh, tls_verify=True, creds="bob:pw"), app, fresh)
        assert len(storage.seen) == 3
        assert not any("Authorization" in s.headers for s in storage.seen)


@pytest.mark.parametrize("what", ["manifest", "blob", "token"])
def test_a_registry_that_trickles_is_given_up_on(store: BlobStore, what: str) -> None:
    app = sample_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        path = {
            "manifest": "/v2/app/manifests/1",
            "blob": f"/v2/app/blobs/{app.layer_digests[1]}",
            "token": "/token?service=fake&scope=repository%3Aapp%3Apull",
        }[what]
        honest = fake.routes.get(path, Reply(body=b'{"token": "t"}'))
        fake.once[path] = [Reply(honest.status, honest.body, honest.headers, trickle=0.2)] * 5
        if what == "token":
            fake.once["/v2/"] = [_bearer(f"http://{fake.host}/token")]
        started = time.monotonic()
        with within(30):
            message = error_of(lambda: pull(fake.host, "app:1", store, network_timeout=1.0))
        peer = f"token server {fake.host}" if what == "token" else f"registry {fake.host}"
        assert message.endswith(
            f"{peer} sent less than 64 KiB in 1 s: retry, or raise --network-timeout"
        )
        assert time.monotonic() - started < 15


def test_a_blob_store_that_trickles_after_a_redirect_is_given_up_on(store: BlobStore) -> None:
    app = sample_image()
    layer = f"/v2/app/blobs/{app.layer_digests[1]}"
    with fake_registry() as fake, fake_registry() as storage:
        fake.add_image("app", "1", app)
        storage.routes["/s?sig=1"] = Reply(body=fake.routes[layer].body, trickle=0.2)
        fake.routes[layer] = Reply(307, headers={"Location": f"http://{storage.host}/s?sig=1"})
        started = time.monotonic()
        with within(30):
            message = error_of(lambda: pull(fake.host, "app:1", store, network_timeout=1.0))
        assert message.endswith(
            f"host {storage.host} (reached by a redirect from registry {fake.host}) sent less "
            "than 64 KiB in 1 s: retry, or raise --network-timeout"
        )
        assert time.monotonic() - started < 15


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_redirect_target_that_refuses_is_named_not_the_registry(
    store: BlobStore, status: int
) -> None:
    app = sample_image()
    layer = f"/v2/app/blobs/{app.layer_digests[1]}"
    with fake_registry(basic=("bob", "pw")) as fake, fake_registry() as storage:
        fake.add_image("app", "1", app)
        challenge = {"WWW-Authenticate": 'Basic realm="storage"'} if status == 401 else {}
        storage.routes["/b?sig=secret"] = Reply(status, b"<Error>AccessDenied</Error>", challenge)
        fake.routes[layer] = Reply(307, headers={"Location": f"http://{storage.host}/b?sig=secret"})
        message = error_of(lambda: pull(fake.host, "app:1", store, creds="bob:pw"))
        reason = {401: "Unauthorized", 403: "Forbidden", 500: "Internal Server Error"}[status]
        expired = ": the link may have expired: retry" if status != 500 else ""
        assert message == (
            f"host {storage.host} (reached by a redirect from registry {fake.host}) answered "
            f"HTTP {status} {reason} for GET {layer}{expired}"
        )
        assert fake.requests_to(layer) == 1
        assert not any("Authorization" in s.headers for s in storage.seen)


def test_a_redirect_target_that_cannot_be_reached_is_named(store: BlobStore) -> None:
    app = sample_image()
    layer = f"/v2/app/blobs/{app.layer_digests[1]}"
    nobody = f"127.0.0.1:{free_port()}"
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        fake.routes[layer] = Reply(307, headers={"Location": f"http://{nobody}/b?sig=secret"})
        assert error_of(lambda: pull(fake.host, "app:1", store)) == (
            f"cannot connect to host {nobody} (reached by a redirect from registry "
            f"{fake.host}): connection refused"
        )


def test_a_redirect_to_a_url_that_does_not_parse_is_shown_without_its_query(
    store: BlobStore,
) -> None:
    app = sample_image()
    layer = f"/v2/app/blobs/{app.layer_digests[1]}"
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        for location, url in (
            (
                "https://storage.example:99999/b?X-Amz-Signature=secret",
                "https://storage.example:99999/b",
            ),
            ("https://[::1/b?sig=secret", "https://[::1/b"),
            (
                "https://user:secret@storage.example:99999/b#secret",
                "https://storage.example:99999/b",
            ),
        ):
            fake.routes[layer] = Reply(307, headers={"Location": location})
            assert error_of(lambda: pull(fake.host, "app:1", store)) == (
                f"registry {fake.host} redirected us to {url}, which is not a valid URL"
            )


def test_text_from_the_registry_reaches_the_terminal_escaped_and_shortened(
    store: BlobStore,
) -> None:
    sequences = "\x1b]0;pwned\x07\x1b[2J\x1b[31mfake prompt$ \u202e\x9b"
    errors = {"errors": [{"code": "X", "message": sequences + "x" * 500}]}
    with fake_registry() as fake:
        fake.routes["/v2/app/manifests/1"] = Reply(400, json.dumps(errors).encode())
        escaped = r"\x1b]0;pwned\x07\x1b[2J\x1b[31mfake prompt$ \u202e\x9b"
        assert error_of(lambda: pull(fake.host, "app:1", store)) == (
            f"registry {fake.host} answered HTTP 400 for GET /v2/app/manifests/1: "
            + escaped
            + "x" * (199 - len(escaped))
            + "…"
        )
        tags = ["\x1b[2Jx", "1.0", "a" * 129, "-x", "latest"]
        fake.routes["/v2/app/tags/list"] = Reply(body=json.dumps({"tags": tags}).encode())
        assert error_of(lambda: pull(fake.host, "app:nosuch", store)) == (
            f"{fake.host}/app:nosuch not found in registry {fake.host}: no tag nosuch "
            "(it has: 1.0, latest)"
        )


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "токен", "a b", "a\x7f"])
def test_a_token_that_cannot_go_into_a_header_is_refused(store: BlobStore, token: str) -> None:
    with fake_registry() as fake:
        fake.add_image("app", "1", sample_image())
        fake.once["/v2/"] = [_bearer(f"http://{fake.host}/token")]
        answer = json.dumps({"token": token}).encode()
        fake.routes["/token?service=fake&scope=repository%3Aapp%3Apull"] = Reply(body=answer)
        assert error_of(lambda: pull(fake.host, "app:1", store)) == (
            f"authentication to {fake.host} failed: token server http://{fake.host}/token "
            "sent an unusable token (characters other than visible ASCII)"
        )


DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b"9" * 5000  # Python's int() refuses more than 4300 digits


MANIFEST = "/v2/app/manifests/1"
TOKEN = "/token?service=fake&scope=repository%3Aapp%3Apull"
TOKEN_NO_JSON = "authentication to {host} failed: token server http://{host}/token sent no JSON"


@pytest.mark.parametrize(
    ("path", "reply", "name", "expected"),
    [
        (
            MANIFEST,
            Reply(404, DEEP),
            "app:1",
            "{host}/app:1 not found in registry {host}: no tag 1",
        ),
        (
            MANIFEST,
            Reply(400, b'{"errors": [{"code": "X", "n": ' + HUGE + b"}]}"),
            "app:1",
            "registry {host} answered HTTP 400 for GET /v2/app/manifests/1",
        ),
        (
            MANIFEST,
            Reply(403, DEEP),
            "app:1",
            "authentication to {host} failed: anonymous access was refused: pass --creds "
            "USER:PASS or log in (HTTP 403 Forbidden)",
        ),
        (
            MANIFEST,
            Reply(body=b'{"schemaVersion": 2, "n": ' + HUGE + b"}"),
            "app:1",
            "malformed manifest of {host}/app:1: not valid JSON (an integer of 5000 digits)",
        ),
        (
            "/v2/app/tags/list",
            Reply(body=b'{"tags": [' + HUGE + b"]}"),
            "app:nosuch",
            "{host}/app:nosuch not found in registry {host}: no tag nosuch",
        ),
        (TOKEN, Reply(body=DEEP), "app:1", TOKEN_NO_JSON),
        (TOKEN, Reply(body=b'{"token": "t", "expires_in": ' + HUGE + b"}"), "app:1", TOKEN_NO_JSON),
    ],
)
def test_json_that_python_cannot_parse_gives_a_one_line_error(
    store: BlobStore, path: str, reply: Reply, name: str, expected: str
) -> None:
    with fake_registry() as fake:
        fake.add_image("app", "1", sample_image())
        fake.routes[path] = reply
        if path.startswith("/token"):
            fake.once["/v2/"] = [_bearer(f"http://{fake.host}/token")]
        assert error_of(lambda: pull(fake.host, name, store)) == expected.format(host=fake.host)


def test_a_body_without_length_that_breaks_off_is_fetched_again(store: BlobStore) -> None:
    app = sample_image()
    layer = f"/v2/app/blobs/{app.layer_digests[1]}"

    def whole_gets() -> int:
        return sum(1 for s in fake.seen if s.path == layer and "Range" not in s.headers)

    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        blob = fake.routes[layer].body
        fake.once[layer] = [Reply(body=blob, drop_after=50, close_delimited=True)]
        assert_is(pull(fake.host, "app:1", store), app, store)
        assert whole_gets() == 2
        # Other bytes of the whole length: no use asking again.
        fake.once[layer] = [Reply(body=bytes(len(blob)), close_delimited=True)]
        message = error_of(lambda: pull(fake.host, "app:1", BlobStore(store.root / "fresh")))
        assert f"{app.layer_digests[1]} of {fake.host}/app: digest mismatch" in message
        assert whole_gets() == 3


def test_a_schema_1_manifest_is_named_as_such(store: BlobStore) -> None:
    signed = {"schemaVersion": 1, "name": "app", "tag": "1", "fsLayers": [], "signatures": []}
    body = json.dumps(signed, indent=3).encode()
    for content_type in (
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/json",
    ):
        with fake_registry() as fake:
            fake.routes["/v2/app/manifests/1"] = Reply(
                body=body,
                headers={
                    "Content-Type": content_type,
                    "Docker-Content-Digest": "sha256:" + "0" * 64,
                },
            )
            assert error_of(lambda: pull(fake.host, "app:1", store)) == (
                f"manifest 1 of {fake.host}/app:1 is a Docker schema 1 manifest, which is not "
                "supported: push the image again with a current docker or skopeo"
            )


def test_a_cached_blob_of_the_wrong_size_is_downloaded_again(store: BlobStore) -> None:
    app = sample_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        pull(fake.host, "app:1", store)
        cached = store.path(app.layer_digests[0])
        cached.write_bytes(cached.read_bytes()[:-1])
        assert_is(pull(fake.host, "app:1", store), app, store)
