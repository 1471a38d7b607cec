"""The registry source against a fake registry on 127.0.0.1 that lies (tampered blobs,
broken or substituted manifests, 5xx and dropped connections, 403s, redirects), against
none at all, and with Docker manifest lists and nested indexes."""

from __future__ import annotations

import hashlib
import json

import pytest

from oci2vm.config import PullPolicy
from oci2vm.image.blobs import BlobStore
from oci2vm.image.model import Platform
from oci2vm.sources import registry
from support.authfiles import b64
from support.registries import (
    Progress,
    Reply,
    assert_is,
    cache_files,
    error_of,
    fake_registry,
    free_port,
    pull,
    sample_image,
    sample_index,
)

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("no_host_credentials")]


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
def test_single_image_of_another_platform_is_refused_before_its_layers(
    store: BlobStore,
) -> None:
    image = sample_image("linux/arm64")
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
    index = sample_index("linux/amd64", "linux/arm/v7", docker=True)
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
def test_pull_missing_takes_what_an_earlier_pull_cached_without_asking(store: BlobStore) -> None:
    """docker run's --pull missing: a reference pulled before (for the same platform)
    is taken from the cache, registry down or not; another platform, or a blob gone
    from the cache, is asked for again; --pull never refuses what the cache lacks."""
    index = sample_index("linux/amd64", "linux/arm/v7")
    arm = Platform.parse("linux/arm/v7")
    with fake_registry() as fake:
        host = fake.host
        fake.add_image("app", "1", index)
        assert error_of(lambda: pull(host, "app:1", store, pull=PullPolicy.NEVER)) == (
            f"docker://{host}/app:1 is not in the cache (--pull never: no registry is asked)"
        )
        assert fake.seen == []
        first = pull(host, "app:1", store, platform=arm)
        fake.seen.clear()
        for policy in (PullPolicy.MISSING, PullPolicy.NEVER):
            again = pull(host, "app:1", store, platform=arm, pull=policy)
            assert_is(again, index.images[1], store)
            assert again.manifest_media_type == first.manifest_media_type
        assert fake.seen == []
        pull(host, "app:1", store, pull=PullPolicy.MISSING)  # amd64: not pulled yet
        assert f"/v2/app/manifests/{index.images[0].manifest_digest}" in [s.path for s in fake.seen]
        fake.seen.clear()
        store.path(index.images[1].layer_digests[0]).unlink()
        assert_is(pull(host, "app:1", store, platform=arm, pull=PullPolicy.MISSING),
                  index.images[1], store)  # fmt: skip
        assert f"/v2/app/blobs/{index.images[1].layer_digests[0]}" in [s.path for s in fake.seen]
    # The registry gone: what the cache holds still runs.
    assert_is(pull(host, "app:1", store, platform=arm, pull=PullPolicy.MISSING),
              index.images[1], store)  # fmt: skip


@pytest.mark.registry
def test_nested_indexes_are_followed(store: BlobStore) -> None:
    inner = sample_index("linux/amd64", "linux/arm64/v8")
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
    app = sample_image("linux/arm64/v8")
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        fake.add_manifest("app", "1", app.manifest, "application/json")
        image = pull(fake.host, "app:1", store, platform=Platform.parse("linux/arm64"))
    assert_is(image, app, store)
    assert image.manifest_media_type == "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.registry
def test_tampered_blob_from_a_lying_registry(store: BlobStore) -> None:
    app = sample_image()
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
    app = sample_image()
    with fake_registry() as fake:
        fake.add_image("app", "1", app)
        fake.add_manifest("bad", "1", b"{not json", "application/vnd.oci.image.manifest.v1+json")
        assert error_of(lambda: pull(fake.host, "bad:1", store)) == (
            f"malformed manifest of {fake.host}/bad:1: not valid JSON (Expecting property "
            "name enclosed in double quotes: line 1 column 2 (char 1))"
        )
        # A digest that the bytes do not have, asked for or claimed by the registry.
        other = sample_image("linux/arm64")
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
    app = sample_image()
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
    # the image's blobs, and its manifest (for --pull missing)
    assert cache_files(store) == sorted(d[7:] for d in (*app.blobs, app.manifest_digest))


@pytest.mark.registry
def test_server_errors_that_do_not_stop(store: BlobStore) -> None:
    app = sample_image()
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
    app = sample_image()
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
    app = sample_image()
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
    # The config and, if its download had begun when the other failed (the threads'
    # timing: tests/unit/test_arrival.py pins both cases down), the first layer: verified
    # and whole. Nothing of the failed one.
    cached = cache_files(store)
    assert app.config_digest.removeprefix("sha256:") in cached
    assert set(cached) <= {d.removeprefix("sha256:") for d in (app.config_digest, first)}


@pytest.mark.registry
def test_blob_redirects_are_followed_without_the_credentials(store: BlobStore) -> None:
    app = sample_image()
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
