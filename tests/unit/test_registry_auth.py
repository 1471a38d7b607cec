"""The registry source's auth parts alone, no registry: the WWW-Authenticate parser, auth
files and credential helpers, and the token dance with a stand-in for HTTP.
(tests/integration/test_registry_*.py talk to registries.)"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

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
from support.authfiles import b64, make_helper, write_json
from support.deadline import within
from support.registries import (
    error_of,
)

pytestmark = pytest.mark.usefixtures("no_host_credentials")


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


# --- what is read from files and helpers is bounded -------------------------------------------


def test_auth_files_that_are_no_regular_files_are_refused_without_blocking(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "auth.json"
    os.mkfifo(fifo)
    with within(5):
        assert error_of(lambda: credentials_from_file(fifo, "r.example")) == (
            f"auth file {fifo}: is a FIFO, not a regular file"
        )
        assert error_of(lambda: credentials_from_file(Path("/dev/zero"), "r.example")) == (
            "auth file /dev/zero: is a character device, not a regular file"
        )


def test_an_oversized_auth_file_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "auth.json"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    assert error_of(lambda: credentials_from_file(big, "r.example")) == (
        f"auth file {big} is larger than {4 << 20} bytes"
    )


def test_a_helper_that_prints_without_end_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    make_helper(bin_dir, "flood", "exec yes '{}'")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = write_json(tmp_path / "config.json", {"credsStore": "flood"})
    with within(20):
        assert error_of(lambda: credentials_from_file(config, "r.example")) == (
            f"docker-credential-flood get printed more than {1 << 20} bytes for r.example"
        )
