"""Address policy, registry scope and redirect delegation of the registry client."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import key_store, resources, trust_policy
from webhook.policy.compile import compile_policy_set
from webhook.references import parse_reference
from webhook.registry.client import OutOfScopeError, RegistryClient, RegistrySettings
from webhook.registry.network import AddressPolicy, ForbiddenAddressError, GuardedBackend, IPAddress, parse_cidr
from webhook.registry.scope import RegistryScope, domain_pattern


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


def test_the_backend_checks_the_resolved_address_not_the_name() -> None:
    """A public-looking name that resolves to the metadata service is refused before any connection."""
    async def rebinding(host: str, port: int) -> Sequence[IPAddress]:
        return [ipaddress.ip_address("169.254.169.254")]

    backend = GuardedBackend(AddressPolicy(), rebinding)
    with pytest.raises(ForbiddenAddressError, match=r"169\.254\.169\.254 is a cloud metadata address"):
        asyncio.run(backend.connect_tcp("registry.example.com", 443, timeout=1))
    with pytest.raises(ForbiddenAddressError, match="unix socket"):
        asyncio.run(backend.connect_unix_socket("/var/run/docker.sock"))


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
