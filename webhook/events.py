"""Kubernetes Events for what the webhook denies or warns about, in-cluster (`trustgate serve --namespace`).

core/v1 Events rather than events.k8s.io/v1 (both are served from 1.20 on, and are the same stored object):
`kubectl describe` and `kubectl get events` show core/v1 Events on every Kubernetes version trustgate
supports, and their `count` and `lastTimestamp` are how repetition is aggregated (as client-go's
EventCorrelator does), with no `series` bookkeeping.

Where an Event goes: on the object admitted when it already exists (an UPDATE names its uid); otherwise (a
CREATE: the object does not exist yet) on its namespace.

An Event never slows an admission: `report` puts the finding on a bounded queue and returns (a full queue
drops it and counts the drop); one thread aggregates and writes. A finding with the same object, reason and
message as one already written within `window_seconds` raises that Event's count instead of creating another,
and repetitions are written together, at most once per `flush_seconds` per Event. Token buckets per object and
overall bound the writes further: an Event waiting for a token keeps counting and is written once one comes,
so a crash-looping ReplicaSet costs the API server a few writes, not one per pod.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from webhook.admission import AdmissionRequest, fit_message
from webhook.cache import ENTRY_OVERHEAD_BYTES, estimated_bytes

log = logging.getLogger(__name__)

EVENTS_WRITTEN = Counter("trustgate_events_written",
                         "Kubernetes Event writes sent to the API server, by operation (create, patch)",
                         ["operation"])
EVENTS_DROPPED = Counter("trustgate_events_dropped",
                         "Findings that were not written as Kubernetes Events, by why (queue_full, "
                         "table_full, api_error)", ["reason"])

COMPONENT = "trustgate-webhook"
MAX_EVENT_MESSAGE_CHARS = 1024
# What an Aggregate and a TokenBucket weigh beyond the finding they are about (instance, attributes, timestamps).
AGGREGATE_BYTES = 600
TOKEN_BUCKET_BYTES = 300


@dataclass(frozen=True, slots=True)
class InvolvedObject:
    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str = ""

    def reference(self) -> dict[str, str]:
        found = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "namespace": self.namespace}
        if self.uid:
            found["uid"] = self.uid
        return found


def involved_object(request: AdmissionRequest) -> InvolvedObject:
    """The admitted object when it exists already, else its namespace."""
    metadata = (request.obj or {}).get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, Mapping) else None
    api_version = (request.obj or {}).get("apiVersion")
    if request.operation != "CREATE" and isinstance(uid, str) and uid and request.name and isinstance(
            api_version, str):
        return InvolvedObject(api_version, request.kind, request.name, request.namespace, uid)
    return InvolvedObject("v1", "Namespace", request.namespace, request.namespace)


@dataclass(frozen=True, slots=True)
class Finding:
    involved: InvolvedObject
    reason: str
    message: str


class TokenBucket:
    """`burst` tokens, refilled at one per `refill_seconds`."""

    def __init__(self, burst: int, refill_seconds: float, now: float) -> None:
        self.burst, self.refill_seconds = burst, refill_seconds
        self.tokens, self.updated = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) / self.refill_seconds)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Aggregate:
    """One Event: the findings it stands for, and what of them has been written."""

    finding: Finding
    first_seen: float
    last_seen: float
    count: int = 1
    written_count: int = 0
    written_at: float = float("-inf")
    name: str | None = None  # the Event's name, once created
    first_timestamp: str = ""
    last_timestamp: str = ""


@dataclass(frozen=True)
class Write:
    aggregate: Aggregate
    count: int


@dataclass
class EventSettings:
    queue_size: int = 1024
    window_seconds: float = 600.0  # as client-go's EventCorrelator: repetitions within it raise one Event's count
    flush_seconds: float = 1.0
    max_aggregates: int = 4096
    # What the aggregates (their findings, by estimate) and the per-object buckets weigh at most in all.
    max_bytes: int = 10 * 1024 * 1024
    object_burst: int = 25  # client-go's per-object spam filter: 25, then one per 5 minutes
    object_refill_seconds: float = 300.0
    global_burst: int = 100
    global_refill_seconds: float = 0.1


class Correlator:
    """Aggregation and rate limiting, without I/O: which Events to write now."""

    def __init__(self, settings: EventSettings, now: float) -> None:
        self.settings = settings
        self.aggregates: dict[Finding, Aggregate] = {}
        self.object_buckets: dict[InvolvedObject, TokenBucket] = {}
        self.global_bucket = TokenBucket(settings.global_burst, settings.global_refill_seconds, now)
        self.bytes = 0  # of the aggregates and buckets kept, by `_weight`

    @staticmethod
    def _weight(finding: Finding) -> int:
        """An aggregate of `finding` and a bucket for its object, by estimate (the involved object counted twice):
        buckets are at most as many as aggregates may be, and those of live objects are counted here."""
        return 2 * ENTRY_OVERHEAD_BYTES + AGGREGATE_BYTES + TOKEN_BUCKET_BYTES + estimated_bytes(finding) \
            + estimated_bytes(finding.involved)

    def _room(self, finding: Finding, now: float) -> bool:
        def fits() -> bool:
            return len(self.aggregates) < self.settings.max_aggregates and \
                self.bytes + self._weight(finding) <= self.settings.max_bytes

        if fits():
            return True
        self.expire(now)
        return fits()

    def add(self, finding: Finding, now: float, timestamp: str) -> bool:
        """Count a finding; False when there is no room to remember it."""
        aggregate = self.aggregates.get(finding)
        if aggregate is not None and now - aggregate.first_seen > self.settings.window_seconds \
                and aggregate.written_count == aggregate.count:
            del self.aggregates[finding]  # past the window: the next one is a new Event
            self.bytes -= self._weight(finding)
            aggregate = None
        if aggregate is None:
            if not self._room(finding, now):
                return False
            self.aggregates[finding] = Aggregate(finding, now, now, first_timestamp=timestamp,
                                                 last_timestamp=timestamp)
            self.bytes += self._weight(finding)
            return True
        aggregate.count += 1
        aggregate.last_seen = now
        aggregate.last_timestamp = timestamp
        return True

    def due(self, now: float) -> list[Write]:
        """The Events to write now: each with unwritten findings, flushed no more often than `flush_seconds`,
        and only while the object's and the global token buckets allow."""
        writes = []
        for aggregate in self.aggregates.values():
            if aggregate.count == aggregate.written_count:
                continue
            if now - aggregate.written_at < self.settings.flush_seconds:
                continue
            involved = aggregate.finding.involved
            bucket = self.object_buckets.get(involved)
            if bucket is None:
                if len(self.object_buckets) >= self.settings.max_aggregates:
                    continue  # written once an expired bucket makes room
                bucket = self.object_buckets[involved] = TokenBucket(
                    self.settings.object_burst, self.settings.object_refill_seconds, now)
            if not bucket.take(now):
                continue
            if not self.global_bucket.take(now):
                bucket.tokens += 1  # not spent: nothing is written for this object now
                break
            aggregate.written_at = now
            writes.append(Write(aggregate, aggregate.count))
        return writes

    def expire(self, now: float) -> None:
        """Forget Events that are past their window and fully written, and the buckets of objects that have no
        Event left (a full bucket is what a new one would get)."""
        window = self.settings.window_seconds
        self.aggregates = {finding: aggregate for finding, aggregate in self.aggregates.items()
                           if now - aggregate.last_seen <= window or aggregate.written_count != aggregate.count}
        live = {finding.involved for finding in self.aggregates}
        self.object_buckets = {involved: bucket for involved, bucket in self.object_buckets.items()
                               if involved in live or bucket.tokens < bucket.burst}
        self.bytes = sum(self._weight(finding) for finding in self.aggregates)


class EventWriter:
    """Creates and patches core/v1 Events through the Kubernetes API."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def create(self, aggregate: Aggregate, count: int) -> str:
        finding = aggregate.finding
        involved = finding.involved
        name = f"{involved.name}.{time.time_ns():x}"
        self.core.create_namespaced_event(involved.namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": involved.namespace},
            "involvedObject": involved.reference(),
            "reason": finding.reason, "message": finding.message, "type": "Warning",
            "source": {"component": COMPONENT},
            "count": count, "firstTimestamp": aggregate.first_timestamp,
            "lastTimestamp": aggregate.last_timestamp,
        })
        return name

    def patch(self, aggregate: Aggregate, count: int) -> None:
        assert aggregate.name is not None
        self.core.patch_namespaced_event(aggregate.name, aggregate.finding.involved.namespace,
                                         {"count": count, "lastTimestamp": aggregate.last_timestamp})


class EventRecorder:
    """Takes findings from the event loop without waiting, and writes them as Events from its own thread."""

    def __init__(self, writer: EventWriter, settings: EventSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.writer = writer
        self.settings = settings or EventSettings()
        self.clock = clock
        self.correlator = Correlator(self.settings, clock())
        self._queue: queue.Queue[Finding] = queue.Queue(self.settings.queue_size)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubernetes events", daemon=True)
        self._dropped_full = EVENTS_DROPPED.labels("queue_full")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is pending (as far as the rate limits allow) and end the thread."""
        self._stopping.set()
        self._thread.join(timeout=10)

    def report(self, request: AdmissionRequest, reason: str, message: str) -> None:
        message = fit_message([message], limit=MAX_EVENT_MESSAGE_CHARS)
        finding = Finding(involved_object(request), reason, f"{request.kind} {message}")
        try:
            self._queue.put_nowait(finding)
        except queue.Full:
            self._dropped_full.inc()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(queue.Empty):
                self._add(self._queue.get(timeout=self.settings.flush_seconds))
            self._take_queued()
            self._flush()
        self._take_queued()
        self._flush()

    def _take_queued(self) -> None:
        while True:
            try:
                self._add(self._queue.get_nowait())
            except queue.Empty:
                return

    def _add(self, finding: Finding) -> None:
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not self.correlator.add(finding, self.clock(), timestamp):
            EVENTS_DROPPED.labels("table_full").inc()

    def _flush(self) -> None:
        now = self.clock()
        for write in self.correlator.due(now):
            self._write(write)
        self.correlator.expire(now)

    def _write(self, write: Write) -> None:
        from kubernetes.client.exceptions import ApiException

        aggregate = write.aggregate
        try:
            if aggregate.name is not None:
                try:
                    self.writer.patch(aggregate, write.count)
                    EVENTS_WRITTEN.labels("patch").inc()
                    aggregate.written_count = write.count
                    return
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    aggregate.name = None  # deleted or expired in the API server: written anew
            aggregate.name = self.writer.create(aggregate, write.count)
            EVENTS_WRITTEN.labels("create").inc()
            aggregate.written_count = write.count
        except Exception as exc:  # an API fault must not end the thread; the finding is counted as lost
            log.warning("cannot write Event %s for %s %s/%s: %s", aggregate.finding.reason,
                        aggregate.finding.involved.kind, aggregate.finding.involved.namespace,
                        aggregate.finding.involved.name, exc)
            EVENTS_DROPPED.labels("api_error").inc()
            aggregate.written_count = write.count


def recorder_for_cluster(settings: EventSettings | None = None) -> EventRecorder:
    """A recorder writing through the client configuration already loaded (see webhook.cluster)."""
    from kubernetes import client

    return EventRecorder(EventWriter(client.CoreV1Api()), settings)
