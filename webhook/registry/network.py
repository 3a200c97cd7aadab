"""Where the registry client may connect: every address is checked after DNS resolution, at connect time.

Pod specs choose image references, so a tenant chooses the hosts the webhook talks to, and a registry chooses
where it redirects and which token service it names. Checking a hostname is not enough (DNS can point
`registry.attacker.example` at 169.254.169.254), and checking a resolved address before letting another
component resolve again is not enough either (DNS rebinding). The check sits in two places of aiohttp's
connector: its resolver (`GuardedResolver`) resolves once and hands on only the addresses the policy permits,
which the connector then connects to without resolving again; and its socket factory (`guarded_socket`) checks
the address of every socket it opens, the one check that also sees IP-literal hosts, for which aiohttp never
calls a resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services answer with cloud credentials: never a registry, even when a policy covers it.
CLOUD_METADATA = tuple(ipaddress.ip_network(network) for network in (
    "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, ... (also link-local)
    "fd00:ec2::254/128",  # AWS IMDS over IPv6
    "100.100.100.200/32",  # Alibaba Cloud
    "168.63.129.16/32",  # Azure WireServer
))
# IPv4 addresses embedded in IPv6 ones that reach them (NAT64, RFC 6052).
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class ForbiddenAddressError(Exception):
    """A connection the address policy refuses."""


def parse_cidr(text: str) -> IPNetwork:
    """`10.0.0.0/8`, `127.0.0.1` (a single address) or `fe80::/10`; ValueError otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


def _unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True)
class AddressPolicy:
    """Refuses loopback, link-local, cloud-metadata, unspecified and multicast addresses unless allowed."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why connecting to `address` is refused, or None when it is permitted."""
        for candidate in dict.fromkeys((address, _unwrap(address))):
            if any(candidate.version == network.version and candidate in network for network in self.allowed):
                return None
        address = _unwrap(address)
        if any(address.version == network.version and address in network for network in CLOUD_METADATA):
            return "a cloud metadata address"
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_unspecified:
            return "the unspecified address"
        if address.is_multicast:
            return "a multicast address"
        return None


Resolver = typing.Callable[[str, int], typing.Awaitable[Sequence[IPAddress]]]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses of `host`, in the order the system resolver gives them."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host {host}: {exc.strerror}") from None
    except UnicodeError:  # a label the IDNA codec refuses (e.g. longer than 63): never sent to a resolver
        raise OSError(f"cannot resolve host {host}: not a valid DNS name") from None
    addresses: list[IPAddress] = []
    for _, _, _, _, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _refused(host: str, addresses: Sequence[IPAddress], policy: AddressPolicy) -> ForbiddenAddressError:
    reasons = ", ".join(f"{address} is {policy.refusal(address)}" for address in addresses)
    return ForbiddenAddressError(
        f"refusing to connect to {host}: {reasons or 'no address'} (allow it with --allow-registry-cidr)")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver: resolves once through `resolver` and answers only the addresses the policy permits."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = resolve, timeout: float | None = None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._timeout = timeout

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        async with asyncio.timeout(self._timeout):
            addresses = await self._resolver(host, port)
        permitted = [address for address in addresses if self._policy.refusal(address) is None]
        if not permitted:
            raise _refused(host, addresses, self._policy)
        return [ResolveResult(hostname=host, host=str(address), port=port,
                              family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                              proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
                for address in permitted]

    async def close(self) -> None:
        """Nothing to release: `resolver` is a function."""


def guarded_socket(policy: AddressPolicy) -> Callable[[AddrInfoType], socket.socket]:
    """aiohttp's socket factory: a socket for an address the policy permits, ForbiddenAddressError otherwise."""
    def open_socket(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if policy.refusal(address) is not None:
            raise _refused(str(address), [address], policy)
        return socket.socket(family, kind, proto)
    return open_socket
