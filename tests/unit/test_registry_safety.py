"""Address policy, registry scope and redirect delegation of the registry client."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import key_store, resources, trust_policy
from webhook.policy.compile import compile_policy_set
from webhook.policy.scope import RegistryScope, domain_pattern
from webhook.references import parse_reference
from webhook.registry.client import OutOfScopeError, RegistryClient, RegistryError, RegistrySettings
from webhook.registry.network import (
    AddressPolicy,
    ForbiddenAddressError,
    GuardedResolver,
    IPAddress,
    Resolver,
    guarded_socket,
    parse_cidr,
)


@pytest.mark.parametrize(("address", "reason"), [
    ("169.254.169.254", "a cloud metadata address"),
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("168.63.129.16", "a cloud metadata address"),
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("0.0.0.0", "the unspecified address"),
    ("::", "the unspecified address"),
    ("224.0.0.1", "a multicast address"),
])
def test_refused_addresses(address: str, reason: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.10", "172.16.5.4", "203.0.113.7", "2001:db8::1"])
def test_private_and_public_addresses_are_permitted(address: str) -> None:
    """In-cluster registries live on private addresses; only the classes above are refused."""
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_allowed_cidrs_lift_the_refusal_for_exactly_those_addresses() -> None:
    policy = AddressPolicy((parse_cidr("127.0.0.1"), parse_cidr("169.254.169.254/32")))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "a loopback address"
    assert policy.refusal(ipaddress.ip_address("::1")) == "a loopback address"


def answers(*addresses: str) -> Resolver:
    """A resolver that answers `addresses` for any name, as a hostile DNS server would."""
    async def resolver(host: str, port: int) -> Sequence[IPAddress]:
        return [ipaddress.ip_address(address) for address in addresses]
    return resolver


def test_the_resolver_checks_the_resolved_address_not_the_name() -> None:
    """A public-looking name that resolves to the metadata service is refused before any connection."""
    resolver = GuardedResolver(AddressPolicy(), answers("169.254.169.254", "::1"))
    with pytest.raises(ForbiddenAddressError, match=re.escape(
            "refusing to connect to registry.example.com: 169.254.169.254 is a cloud metadata address, "
            "::1 is a loopback address (allow it with --allow-registry-cidr)")):
        asyncio.run(resolver.resolve("registry.example.com", 443))


def test_the_resolver_hands_on_only_permitted_addresses() -> None:
    """A name answering a public address and a loopback one can only be connected to on the public one."""
    resolver = GuardedResolver(AddressPolicy(), answers("203.0.113.7", "127.0.0.1", "2001:db8::1", "::ffff:127.0.0.1"))
    results = asyncio.run(resolver.resolve("registry.example.com", 443))
    assert [(result["host"], result["port"], result["family"]) for result in results] == [
        ("203.0.113.7", 443, socket.AF_INET), ("2001:db8::1", 443, socket.AF_INET6)]


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::7f00:1"])
def test_the_socket_factory_refuses_forbidden_addresses(address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    open_socket = guarded_socket(AddressPolicy())
    shown = re.escape(str(ipaddress.ip_address(address)))
    with pytest.raises(ForbiddenAddressError, match=f"refusing to connect to {shown}: {shown} is a"):
        open_socket((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 443)))


def test_the_socket_factory_opens_a_socket_for_a_permitted_address() -> None:
    open_socket = guarded_socket(AddressPolicy((parse_cidr("127.0.0.1"),)))
    with open_socket((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 443))) as opened:
        assert (opened.family, opened.type) == (socket.AF_INET, socket.SOCK_STREAM)


@pytest.fixture
def loopback_listener() -> Iterator[socket.socket]:
    """A socket listening on 127.0.0.1 that nothing may reach: a connection to it waits in its backlog."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield listener


def fetch(client: RegistryClient, image: str) -> None:
    async def attempt() -> None:
        try:
            await client.resolve(parse_reference(image))
        finally:
            await client.aclose()
    asyncio.run(attempt())


def never_connected(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_a_loopback_ip_literal_is_refused_by_the_socket_factory(loopback_listener: socket.socket) -> None:
    """aiohttp calls no resolver for an IP-literal host: the socket factory is the check that sees it."""
    host = f"127.0.0.1:{loopback_listener.getsockname()[1]}"
    client = RegistryClient(RegistrySettings(insecure_registries=frozenset({host}), timeout_seconds=1))
    with pytest.raises(RegistryError, match=r"127\.0\.0\.1 is a loopback address .*--allow-registry-cidr"):
        fetch(client, f"{host}/app:v1")
    assert never_connected(loopback_listener)


def test_dns_rebinding_never_reaches_loopback(loopback_listener: socket.socket) -> None:
    """A name answering a permitted address first and 127.0.0.1 second: when the first one refuses the
    connection, the client gives up rather than fall back to loopback."""
    port = loopback_listener.getsockname()[1]
    # 127.0.0.2 stands for a public address: permitted, and nothing listens there.
    settings = RegistrySettings(insecure_registries=frozenset({f"registry.example:{port}"}), timeout_seconds=1,
                                allowed_cidrs=(parse_cidr("127.0.0.2"),))
    client = RegistryClient(settings, resolver=answers("127.0.0.2", "127.0.0.1"))
    with pytest.raises(RegistryError, match=r"cannot connect to registry registry\.example:\d+: .*127\.0\.0\.2"):
        fetch(client, f"registry.example:{port}/app:v1")
    assert never_connected(loopback_listener)


def test_a_name_with_only_forbidden_addresses_is_refused_before_connecting(loopback_listener: socket.socket) -> None:
    port = loopback_listener.getsockname()[1]
    client = RegistryClient(RegistrySettings(insecure_registries=frozenset({f"registry.example:{port}"})),
                            resolver=answers("127.0.0.1"))
    with pytest.raises(RegistryError, match=r"refusing to connect to registry\.example: 127\.0\.0\.1 is a loopback"):
        fetch(client, f"registry.example:{port}/app:v1")
    assert never_connected(loopback_listener)


@pytest.mark.parametrize(("pattern", "covered", "not_covered"), [
    ("registry.example.com/team/**", ["registry.example.com"], ["attacker.example", "registry.example.com.evil"]),
    ("nginx", ["docker.io"], ["quay.io"]),
    ("*.example.com/**", ["a.example.com"], ["example.com", "a.example.org"]),
    ("**", ["anything.example", "169.254.169.254"], []),
    ("reg**/app", ["registry.example"], ["other.example"]),
])
def test_domain_patterns(pattern: str, covered: list[str], not_covered: list[str]) -> None:
    regex = domain_pattern(pattern)
    assert all(regex.fullmatch(domain) for domain in covered)
    assert not any(regex.fullmatch(domain) for domain in not_covered)


def test_scope_covers_policy_registries_and_nothing_else() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    policies = compile_policy_set(resources(
        key_store("s", [{"name": "k", "publicKey": key}]),
        trust_policy("p", ["registry.example.com/**"], [{"name": "a", "cosign": {
            "trustStore": "s", "signaturesRepository": "sigs.example.com/signatures"}}])))
    try:
        scope = RegistryScope.of(policies)
    finally:
        policies.close()
    assert scope("registry.example.com") and scope("sigs.example.com")
    assert not scope("attacker.example")


def test_an_out_of_scope_registry_is_never_contacted() -> None:
    async def attempt() -> None:
        client = RegistryClient(RegistrySettings(), scope=lambda registry: registry == "registry.example.com")
        try:
            await client.resolve(parse_reference("attacker.example/app:v1"))
        finally:
            await client.aclose()

    with pytest.raises(OutOfScopeError, match=r"no TrustPolicy covers registry attacker\.example"):
        asyncio.run(attempt())


def test_delegates_are_per_registry() -> None:
    client = RegistryClient(RegistrySettings(delegates=frozenset({("registry.example.com", "blobs.example.net")})))
    assert client.may_delegate("registry.example.com", "registry.example.com:8443")
    assert client.may_delegate("registry.example.com", "blobs.example.net")
    assert not client.may_delegate("other.example.com", "blobs.example.net")
    assert not client.may_delegate("registry.example.com", "attacker.example")
    assert client.may_delegate("docker.io", "auth.docker.io")
    asyncio.run(client.aclose())


def test_credentials_a_registry_writes_into_urls_are_never_sent(tmp_path: Path) -> None:
    """A token realm and a redirect with `user:password@` in their URLs: only the configured credentials go out."""
    basic = "Basic " + base64.b64encode(b"puller:secret").decode()
    seen: dict[str, str | None] = {}

    async def scenario() -> object:
        application = web.Application()
        listener = socket.create_server(("127.0.0.1", 0))
        host = f"127.0.0.1:{listener.getsockname()[1]}"

        async def answer(request: web.Request) -> web.Response:
            seen[request.path] = request.headers.get("Authorization")
            if request.path == "/v2/":
                return web.Response(status=401, headers={
                    "WWW-Authenticate": f'Bearer realm="http://planted:creds@{host}/token"'})
            if request.path == "/token":
                return web.json_response({"token": "issued"})
            if request.path == "/v2/app/manifests/v1":
                return web.Response(status=307, headers={"Location": f"http://planted:creds@{host}/elsewhere"})
            return web.Response(status=404)

        application.router.add_get("/{path:.*}", answer)
        server = web.AppRunner(application)
        await server.setup()
        await web.SockSite(server, listener).start()
        (tmp_path / "auth.json").write_text(json.dumps({"auths": {host: {"username": "puller", "password": "secret"}}}))
        client = RegistryClient(RegistrySettings(docker_config=str(tmp_path / "auth.json"),
                                                 insecure_registries=frozenset({host}),
                                                 allowed_cidrs=(parse_cidr("127.0.0.1"),)))
        try:
            return await client.get_manifest(parse_reference(f"{host}/app:v1"), "v1")
        finally:
            await client.aclose()
            await server.cleanup()

    assert asyncio.run(scenario()) is None
    assert seen == {"/v2/": None, "/token": basic, "/v2/app/manifests/v1": "Bearer issued",
                    "/elsewhere": "Bearer issued"}
