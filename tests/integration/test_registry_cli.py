"""`oci2vm inspect` of images in registries: through a real one with credentials from
--creds or an auth file, and the one-line error and exit 1 of each registry failure.
The registry fixtures skip (fail under CI) without docker-registry and skopeo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oci2vm.cli import main
from oci2vm.image.blobs import BlobStore
from support.authfiles import b64, write_json
from support.registries import (
    PASSWORD,
    USER,
    PushedImages,
    Registry,
    cache_files,
    free_port,
)

pytestmark = [pytest.mark.registry, pytest.mark.usefixtures("no_host_credentials")]


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
