"""The registry client's connection pool lets through every request the pipeline lets through: a cold image
waits for the registry, never for a pooled connection held by other images (counted, not timed)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import web

from webhook.pipeline import VerifySettings
from webhook.references import parse_reference
from webhook.registry.client import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_HOST,
    RegistryClient,
    RegistrySettings,
)
from webhook.registry.network import parse_cidr

# Requests one unit of a verification sends at once (the manifest with the signatures, or a source's two
# lookups, e.g. the referrers API and the referrers tag), and the pipeline's units per registry.
REQUESTS_AT_ONCE_PER_UNIT = 2
UNITS_PER_REGISTRY = VerifySettings().max_parallel_per_registry


class HeldRegistry:
    """A registry on 127.0.0.1 that holds every manifest request until told to answer, counting them."""

    def __init__(self, arrived: list[int], expected: int, all_arrived: asyncio.Event,
                 release: asyncio.Event) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.arrived, self.expected, self.all_arrived, self.release = arrived, expected, all_arrived, release
        application = web.Application()
        application.router.add_get("/{path:.*}", self.answer)
        self.runner = web.AppRunner(application)

    async def answer(self, request: web.Request) -> web.Response:
        if request.path == "/v2/":
            return web.Response(status=200)
        self.arrived[0] += 1
        if self.arrived[0] == self.expected:
            self.all_arrived.set()
        await self.release.wait()
        return web.Response(status=404)

    async def start(self) -> None:
        await self.runner.setup()
        await web.SockSite(self.runner, self.listener).start()


def test_the_pool_takes_every_request_the_pipeline_sends_two_registries_at_once() -> None:
    per_host = UNITS_PER_REGISTRY * REQUESTS_AT_ONCE_PER_UNIT
    assert per_host <= MAX_CONNECTIONS_PER_HOST and 2 * per_host <= MAX_CONNECTIONS

    async def scenario() -> int:
        arrived = [0]
        all_arrived, release = asyncio.Event(), asyncio.Event()
        # A registry and the lookaside (or a second registry) its signatures come from.
        servers = [HeldRegistry(arrived, 2 * per_host, all_arrived, release) for _ in range(2)]
        for server in servers:
            await server.start()
        client = RegistryClient(RegistrySettings(insecure_registries=frozenset(server.host for server in servers),
                                                 allowed_cidrs=(parse_cidr("127.0.0.1"),)))
        try:
            requests = [asyncio.ensure_future(client.get_manifest(parse_reference(f"{server.host}/app:v{index}"),
                                                                  f"v{index}"))
                        for server in servers for index in range(per_host)]
            # A guard against hanging, not a measurement: with a smaller pool they never all arrive.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_arrived.wait(), timeout=60)
            release.set()
            await asyncio.gather(*requests)
            return arrived[0]
        finally:
            await client.aclose()
            for server in servers:
                await server.runner.cleanup()

    assert asyncio.run(scenario()) == 2 * UNITS_PER_REGISTRY * REQUESTS_AT_ONCE_PER_UNIT
