"""A pod's own pull credentials against a real docker-registry (htpasswd, and a bearer token service): offered
only to the registry they name, before the configured ones, and a token obtained with one pod's credentials
never presented for another's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.e2e import infra
from webhook.references import parse_reference
from webhook.registry.auth import Credentials
from webhook.registry.client import RegistryClient, RegistryError, RegistrySettings
from webhook.registry.keyring import PullCredentials
from webhook.registry.network import parse_cidr

TEAM_A = ("team-a", "a-pull-pass")
WRONG = Credentials("team-b", "b-pull-pass")


def client(tls: infra.TlsFiles, configured: dict[str, Credentials] | None = None,
           directory: Path | None = None) -> RegistryClient:
    docker_config = None
    if configured and directory is not None:
        docker_config = directory / "registry-auth.json"
        docker_config.write_text(json.dumps({"auths": {server: {"username": credentials.username,
                                                                "password": credentials.password}
                                                       for server, credentials in configured.items()}}))
    return RegistryClient(RegistrySettings(ca_file=str(tls.ca), docker_config=str(docker_config or "") or None,
                                           allowed_cidrs=(parse_cidr("127.0.0.1/32"),)))


def pod(server: str, credentials: Credentials) -> PullCredentials:
    return PullCredentials.of([(server, credentials)])


async def resolve(registry: RegistryClient, image: str) -> str:
    return (await registry.resolve(parse_reference(image))).digest


def private_image(tmp_path: Path, registry: infra.Registry) -> tuple[str, str]:
    layout = infra.write_oci_layout(tmp_path / "layout", seed="private")
    digest = infra.push(layout, registry, "private/app", "v1")
    return f"{registry.host}/private/app:v1", digest


def test_a_pods_secret_is_offered_to_its_registry_only_and_before_the_configured_one(tmp_path: Path) -> None:
    tls = infra.make_tls(tmp_path / "tls")
    secured = infra.start_registry(tmp_path / "registry", tls=tls, credentials=TEAM_A)
    try:
        image, digest = private_image(tmp_path, secured)
        team_a = Credentials(*TEAM_A)

        async def main() -> None:
            plain = client(tls)
            configured_right = client(tls, {secured.host: team_a}, tmp_path)
            try:
                assert await resolve(plain.with_pull_credentials(pod(secured.host, team_a)), image) == digest
                assert await resolve(plain.with_pull_credentials(pod(f"https://{secured.host}/v2/", team_a)),
                                     image) == digest
                with pytest.raises(RegistryError, match=r"refused the credentials .* \(HTTP 401\)"):
                    await resolve(plain.with_pull_credentials(pod(secured.host, WRONG)), image)
                # Named for another host (or port), the secret is not offered at all.
                for elsewhere in ("127.0.0.2:" + secured.host.split(":")[1], "127.0.0.1:1", "127.0.0.1"):
                    with pytest.raises(RegistryError, match="requires credentials and none are configured"):
                        await resolve(plain.with_pull_credentials(pod(elsewhere, team_a)), image)
                # The pod's wrong secret is tried first, then the configured credentials.
                assert await resolve(configured_right.with_pull_credentials(pod(secured.host, WRONG)),
                                     image) == digest
                # The view's credentials stay with the view.
                with pytest.raises(RegistryError, match="requires credentials and none are configured"):
                    await resolve(plain, image)
            finally:
                await plain.aclose()
                await configured_right.aclose()

        asyncio.run(main())
    finally:
        secured.stop()


def test_a_token_obtained_with_one_pods_credentials_is_never_presented_for_another(tmp_path: Path) -> None:
    tls = infra.make_tls(tmp_path / "tls")
    tokens = infra.start_token_service(tmp_path / "tokens", tls, TEAM_A)
    secured = infra.start_registry(tmp_path / "registry", tls=tls, token_service=tokens)
    try:
        image, digest = private_image(tmp_path, secured)

        async def main() -> None:
            registry = client(tls)
            try:
                team_a = registry.with_pull_credentials(pod(secured.host, Credentials(*TEAM_A)))
                assert await resolve(team_a, image) == digest
                issued = tokens.issued
                for other in (registry, registry.with_pull_credentials(pod(secured.host, WRONG))):
                    with pytest.raises(RegistryError, match=r"token service of .* refused access \(HTTP 401\)"):
                        await resolve(other, image)
                assert await resolve(team_a, image) == digest
                assert tokens.issued == issued  # team A's token was kept for team A
            finally:
                await registry.aclose()

        asyncio.run(main())
    finally:
        secured.stop()
        tokens.stop()
