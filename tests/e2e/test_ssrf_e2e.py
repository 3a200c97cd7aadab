"""SSRF and credential safety, end to end: which addresses and hosts trustgate contacts, and what it sends.

A tenant chooses image references and whoever runs a registry chooses its redirects and token realms; neither
may steer trustgate to an address it should not reach, or carry a registry's credentials elsewhere.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import hostile, infra
from tests.e2e.conftest import Run, reasons, trustgate, write_config
from tests.e2e.hostile import HostileHandler, HostileRegistry
from tests.helpers import trust_policy, trust_store

USER, PASSWORD = "puller", "s3cret-registry-password"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "tok-SECRET-0123456789abcdef"
MANIFEST = hostile.image_manifest("ssrf")


@pytest.fixture
def registry() -> Iterator[HostileRegistry]:
    server = hostile.start()
    yield server
    server.stop()


@pytest.fixture
def storage() -> Iterator[HostileRegistry]:
    """Another server, addressed as `localhost:<port>`: a host other than the registry's."""
    server = hostile.start()
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path: Path, gpg: infra.GpgKeys) -> Path:
    store = trust_store("release", {"release-rsa": gpg.armored("release-rsa")})
    policy = trust_policy("everything", ["**"], [{"name": "release", "gpg": {"trustStore": "release"}}])
    return write_config(tmp_path / "config", store, policy)


def auth_file(directory: Path, registry: HostileRegistry) -> Path:
    path = directory / "auth.json"
    path.write_text(json.dumps({"auths": {registry.host: {"username": USER, "password": PASSWORD}}}))
    return path


def verify(config: Path, *args: str) -> Run:
    return trustgate("verify", "--config", str(config), "--output", "json", "--deadline", "5", *args)


def denied_reasons(run: Run) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    return reasons(run)


def storage_name(storage: HostileRegistry) -> str:
    return f"localhost:{storage.port}"


def requires_basic(handler: HostileHandler, answer: hostile.Behaviour) -> None:
    if handler.headers.get("Authorization") != BASIC:
        hostile.status(401, {"WWW-Authenticate": 'Basic realm="hostile"'})(handler)
    else:
        answer(handler)


def test_loopback_registry_is_refused_unless_allowed(registry: HostileRegistry, config: Path) -> None:
    registry.manifest("app", "v1", hostile.document(MANIFEST))
    found = denied_reasons(verify(config, "--insecure-registry", registry.host, f"{registry.host}/app:v1"))
    assert "127.0.0.1 is a loopback address" in found and "--allow-registry-cidr" in found, found
    assert registry.seen == []
    allowed = verify(config, *registry.flags(), f"{registry.host}/app:v1")
    assert allowed.json()["images"][0]["digest"] == hostile.sha256(MANIFEST)


def test_a_name_resolving_to_loopback_is_refused(registry: HostileRegistry, config: Path) -> None:
    """The check applies to the address a name resolves to, not to the name."""
    name = f"localhost:{registry.port}"
    found = denied_reasons(verify(config, "--insecure-registry", name, f"{name}/app:v1"))
    assert "is a loopback address" in found, found
    assert registry.seen == []


@pytest.mark.parametrize("host", ["169.254.169.254", "169.254.169.254:80", "100.100.100.200"])
def test_cloud_metadata_is_refused_even_when_a_policy_covers_it(host: str, config: Path) -> None:
    found = denied_reasons(verify(config, "--insecure-registry", host, *infra.ALLOW_LOOPBACK, f"{host}/app:v1"))
    assert "is a cloud metadata address" in found, found


def test_redirect_to_an_undelegated_host_is_refused(registry: HostileRegistry, storage: HostileRegistry,
                                                     config: Path) -> None:
    registry.manifest("app", "v1", hostile.redirect(f"http://{storage_name(storage)}/manifest"))
    storage.routes["/manifest"] = hostile.document(MANIFEST)
    found = denied_reasons(verify(config, *registry.flags(), f"{registry.host}/app:v1"))
    assert f"redirected to {storage_name(storage)}, which is not allowed to serve it" in found, found
    assert storage.seen == []


def test_redirect_to_a_delegate_is_followed_without_credentials(tmp_path: Path, registry: HostileRegistry,
                                                                 storage: HostileRegistry, config: Path) -> None:
    registry.ping = lambda handler: requires_basic(handler, hostile.status(200))
    registry.manifest("app", "v1", lambda handler: requires_basic(
        handler, hostile.redirect(f"http://{storage_name(storage)}/manifest")))
    storage.routes["/manifest"] = hostile.document(MANIFEST)
    run = verify(config, *registry.flags(), "--registry-auth", str(auth_file(tmp_path, registry)),
                 "--registry-delegate", f"{registry.host}={storage_name(storage)}", "--log-level", "debug",
                 f"{registry.host}/app:v1")
    assert run.json()["images"][0]["digest"] == hostile.sha256(MANIFEST), run.stdout + run.stderr
    assert registry.requests_to("/v2/app")[-1].headers.get("authorization") == BASIC
    assert [seen.headers.get("authorization") for seen in storage.seen] == [None]
    assert storage.seen[0].headers["host"] == storage_name(storage)
    assert PASSWORD not in run.stdout + run.stderr and BASIC.split()[1] not in run.stdout + run.stderr


def test_https_registry_cannot_redirect_to_plain_http(tmp_path: Path, storage: HostileRegistry,
                                                       config: Path) -> None:
    secured = hostile.start(tls=infra.make_tls(tmp_path / "tls"))
    try:
        secured.manifest("app", "v1", hostile.redirect(f"http://{storage_name(storage)}/manifest"))
        found = denied_reasons(verify(config, *secured.flags(), "--registry-delegate",
                                      f"{secured.host}={storage_name(storage)}", f"{secured.host}/app:v1"))
        assert "from HTTPS to plain HTTP" in found, found
        assert storage.seen == []
    finally:
        secured.stop()


def bearer_challenge(storage: HostileRegistry) -> hostile.Behaviour:
    return hostile.status(401, {"WWW-Authenticate": f'Bearer realm="http://{storage_name(storage)}/token",'
                                                    'service="hostile"'})


def test_token_realm_on_another_host_gets_no_credentials(tmp_path: Path, registry: HostileRegistry,
                                                         storage: HostileRegistry, config: Path) -> None:
    registry.ping = bearer_challenge(storage)
    found = denied_reasons(verify(config, *registry.flags(), "--registry-auth", str(auth_file(tmp_path, registry)),
                                  f"{registry.host}/app:v1"))
    assert f"named the token service {storage_name(storage)}, which is not allowed" in found, found
    assert storage.seen == []


def test_credentials_and_tokens_reach_only_their_registry_and_are_never_logged(
        tmp_path: Path, registry: HostileRegistry, storage: HostileRegistry, config: Path) -> None:
    registry.ping = bearer_challenge(storage)
    storage.routes["/token"] = lambda handler: requires_basic(
        handler, hostile.document(json.dumps({"token": TOKEN}).encode(), "application/json"))

    def manifest(handler: HostileHandler) -> None:
        if handler.headers.get("Authorization") == f"Bearer {TOKEN}":
            hostile.document(MANIFEST)(handler)
        else:
            bearer_challenge(storage)(handler)

    registry.manifest("app", "v1", manifest)
    run = verify(config, *registry.flags(), "--registry-auth", str(auth_file(tmp_path, registry)),
                 "--registry-delegate", f"{registry.host}={storage_name(storage)}", "--log-level", "debug",
                 f"{registry.host}/app:v1")
    assert run.json()["images"][0]["digest"] == hostile.sha256(MANIFEST), run.stdout + run.stderr
    assert [seen.headers.get("authorization") for seen in storage.requests_to("/token")] == [BASIC]
    assert all(seen.headers.get("authorization") != BASIC for seen in registry.seen)
    output = run.stdout + run.stderr
    for secret in (PASSWORD, BASIC.split()[1], TOKEN):
        assert secret not in output
