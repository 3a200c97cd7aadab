"""Bounded caches and single-flight coalescing for the verification pipeline.

Nothing here knows what it caches. The pipeline decides the keys (which always carry the policy generation
when trust material is involved, so withdrawn trust never reuses an old verdict) and the lifetimes.

Every cache is bounded twice: in entries, and in bytes by a cheap, conservative estimate of what each entry
weighs (docs/memory.md lists every bound).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from prometheus_client import Counter

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CACHE_LOOKUPS = Counter("trustgate_cache_lookups", "Cache lookups by cache and outcome", ["cache", "outcome"])
COALESCED = Counter("trustgate_coalesced_total", "Callers that waited on a computation already in flight",
                    ["cache"])

# What keeping one entry costs beyond its key and value: the ordered dict's slot and links, and the
# (expiry, value, weight) tuple it holds.
ENTRY_OVERHEAD_BYTES = 200
# What an asyncio task and the suspended coroutine it runs weigh, about: a shared computation's cost beyond its key.
TASK_BYTES = 2_000


def estimated_bytes(value: object) -> int:
    """What `value` weighs in memory, counting everything it holds: the interpreter's own size of each object,
    summed through tuples, lists, sets, dicts and dataclasses. An object reachable twice is counted twice, so
    the estimate errs high."""
    size = sys.getsizeof(value)
    if isinstance(value, str | bytes | int | float | None):
        return size
    if isinstance(value, tuple | list | set | frozenset):
        return size + sum(estimated_bytes(item) for item in value)
    if isinstance(value, dict):
        return size + sum(estimated_bytes(key) + estimated_bytes(item) for key, item in value.items())
    if dataclasses.is_dataclass(value):
        instance_dict = getattr(value, "__dict__", None)
        return (size + (sys.getsizeof(instance_dict) if instance_dict is not None else 0)
                + sum(estimated_bytes(getattr(value, field.name)) for field in dataclasses.fields(value)))
    return size


class ExpiringLRU(Generic[K, V]):
    """At most `max_entries` values, each until its own expiry; the least recently used go first.

    The entries also weigh at most `max_bytes` in all: each its key and `size(value)` (by default
    `estimated_bytes`) plus ENTRY_OVERHEAD_BYTES. An entry heavier than the whole bound is not kept.
    """

    def __init__(self, name: str, max_entries: int, clock: Callable[[], float] = time.monotonic, *,
                 max_bytes: int, size: Callable[[V], int] = estimated_bytes) -> None:
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
        """What the entries kept weigh, by their estimate."""
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
        weight = ENTRY_OVERHEAD_BYTES + estimated_bytes(key) + self._size(value)
        if weight > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (expires, value, weight)
        self._bytes += weight
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def remove(self, key: K) -> None:
        """Forget `key`, if kept."""
        if key in self._entries:
            self._remove(key)

    def _remove(self, key: K) -> None:
        self._bytes -= self._entries.pop(key)[2]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


class SingleFlight(Generic[K, V]):
    """Concurrent callers asking for the same key share one computation.

    The computation runs as its own task: a caller that gives up (its deadline passed) stops waiting
    without cancelling the work the others are waiting for. At most `max_entries` computations, whose keys
    (with ENTRY_OVERHEAD_BYTES and a task's own weight, TASK_BYTES, each) weigh at most `max_bytes`, are
    shared at once; past that a caller computes on its own, unshared, which costs work but never memory here.
    """

    def __init__(self, name: str, max_entries: int, *, max_bytes: int) -> None:
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._flights: dict[K, tuple[asyncio.Task[V], int]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._flights)

    @property
    def bytes(self) -> int:
        return self._bytes

    async def run(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        flight = self._flights.get(key)
        if flight is not None:
            COALESCED.labels(self.name).inc()
            return await asyncio.shield(flight[0])
        weight = ENTRY_OVERHEAD_BYTES + TASK_BYTES + estimated_bytes(key)
        task = asyncio.ensure_future(compute())
        if len(self._flights) < self.max_entries and self._bytes + weight <= self.max_bytes:
            self._flights[key] = (task, weight)
            self._bytes += weight
            task.add_done_callback(lambda done: self._landed(key, done))
        else:
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight[0] is task:
            del self._flights[key]
            self._bytes -= flight[1]
        _retrieve(task)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here, so a fault nobody waited for is not reported as lost
