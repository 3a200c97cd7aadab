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
    """At most `max_entries` values, each until its own expiry; the least recently used go first.

    With `max_bytes`, the values also weigh at most that much in all, by `size`; a value heavier than the
    whole bound is not kept.
    """

    def __init__(self, name: str, max_entries: int, clock: Callable[[], float] = time.monotonic, *,
                 max_bytes: int | None = None, size: Callable[[V], int] | None = None) -> None:
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V, int]] = OrderedDict()
        self._bytes = 0
        # Bound once: looking a labelled child up on every call costs more than the lookup it counts.
        self._hits = CACHE_LOOKUPS.labels(name, "hit")
        self._misses = CACHE_LOOKUPS.labels(name, "miss")

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """What the values kept weigh, by `size` (0 without a bytes bound)."""
        return self._bytes

    def get(self, key: K) -> V | None:
        entry = self.lookup(key)
        return None if entry is None else entry[1]

    def lookup(self, key: K) -> tuple[float, V] | None:
        """(expiry on this cache's clock, value), or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                self._remove(key)
            self._misses.inc()
            return None
        self._entries.move_to_end(key)
        self._hits.inc()
        return entry[0], entry[1]

    def put(self, key: K, value: V, ttl_seconds: float) -> float:
        """Keep `value` for `ttl_seconds`; returns its expiry on this cache's clock."""
        expires = self._clock() + ttl_seconds
        self.put_until(key, value, expires)
        return expires

    def put_until(self, key: K, value: V, expires: float) -> None:
        if expires <= self._clock() or self.max_entries <= 0:
            return
        weight = self._size(value) if self._size is not None else 0
        if self.max_bytes is not None and weight > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (expires, value, weight)
        self._bytes += weight
        while len(self._entries) > self.max_entries or (self.max_bytes is not None and self._bytes > self.max_bytes):
            self._remove(next(iter(self._entries)))

    def _remove(self, key: K) -> None:
        self._bytes -= self._entries.pop(key)[2]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


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
