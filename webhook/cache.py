"""Bounded caches and single-flight coalescing for the verification pipeline.

Nothing here knows what it caches. The pipeline decides the keys (which always carry the policy generation
when trust material is involved, so withdrawn trust never reuses an old verdict) and the lifetimes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from prometheus_client import Counter

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CACHE_LOOKUPS = Counter("trustgate_cache_lookups", "Cache lookups by cache and outcome", ["cache", "outcome"])
COALESCED = Counter("trustgate_coalesced_total", "Callers that waited on a computation already in flight",
                    ["cache"])


class ExpiringLRU(Generic[K, V]):
    """At most `max_entries` values, each until its own expiry; the least recently used go first."""

    def __init__(self, name: str, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        # Bound once: looking a labelled child up on every call costs more than the lookup it counts.
        self._hits = CACHE_LOOKUPS.labels(name, "hit")
        self._misses = CACHE_LOOKUPS.labels(name, "miss")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self.lookup(key)
        return None if entry is None else entry[1]

    def lookup(self, key: K) -> tuple[float, V] | None:
        """(expiry on this cache's clock, value), or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                del self._entries[key]
            self._misses.inc()
            return None
        self._entries.move_to_end(key)
        self._hits.inc()
        return entry

    def put(self, key: K, value: V, ttl_seconds: float) -> float:
        """Keep `value` for `ttl_seconds`; returns its expiry on this cache's clock."""
        expires = self._clock() + ttl_seconds
        self.put_until(key, value, expires)
        return expires

    def put_until(self, key: K, value: V, expires: float) -> None:
        if expires <= self._clock() or self.max_entries <= 0:
            return
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class SingleFlight(Generic[K, V]):
    """Concurrent callers asking for the same key share one computation.

    The computation runs as its own task: a caller that gives up (its deadline passed) stops waiting
    without cancelling the work the others are waiting for.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._flights: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(compute())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        else:
            COALESCED.labels(self.name).inc()
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a fault nobody waited for is not reported as lost
