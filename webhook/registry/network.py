"""Where the registry client may connect: every address is checked after DNS resolution, at connect time.

Pod specs choose image references, so a tenant chooses the hosts the webhook talks to, and a registry chooses
where it redirects and which token service it names. Checking a hostname is not enough (DNS can point
`registry.attacker.example` at 169.254.169.254), and checking a resolved address before letting another
component resolve again is not enough either (DNS rebinding): the check lives in the network backend, which
resolves once, refuses forbidden addresses and connects to the address it checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpcore

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
        raise httpcore.ConnectError(f"cannot resolve host {host}: {exc.strerror}") from None
    except UnicodeError:  # a label the IDNA codec refuses (e.g. longer than 63): never sent to a resolver
        raise httpcore.ConnectError(f"cannot resolve host {host}: not a valid DNS name") from None
    addresses: list[IPAddress] = []
    for _, _, _, _, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address policy applied to every address it connects to."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = resolve) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        async with asyncio.timeout(timeout):
            addresses = await self._resolver(host, port)
        permitted = [address for address in addresses if self._policy.refusal(address) is None]
        if not permitted:
            reasons = ", ".join(f"{address} is {self._policy.refusal(address)}" for address in addresses)
            raise ForbiddenAddressError(
                f"refusing to connect to {host}: {reasons or 'no address'} (allow it with --allow-registry-cidr)")
        last: Exception | None = None
        for address in permitted:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=timeout,
                                                     local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise ForbiddenAddressError(f"refusing to connect to the unix socket {path}")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
