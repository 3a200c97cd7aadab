"""Kubernetes Events from the webhook: where they go, how repetitions aggregate, how writes are rate-limited, and
that reporting never waits on the API server."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.admission import AdmissionRequest
from webhook.events import (
    EVENTS_DROPPED,
    Aggregate,
    Correlator,
    EventRecorder,
    EventSettings,
    EventWriter,
    Finding,
    InvolvedObject,
    involved_object,
)


def request(operation: str = "CREATE", uid: str | None = None, name: str = "web-1") -> AdmissionRequest:
    metadata: dict[str, Any] = {"name": name}
    if uid:
        metadata["uid"] = uid
    return AdmissionRequest(uid="r", group="", kind="Pod", operation=operation, namespace="shop", name=name,
                            obj={"apiVersion": "v1", "kind": "Pod", "metadata": metadata}, dry_run=False,
                            subresource="")


NAMESPACE = InvolvedObject("v1", "Namespace", "shop", "shop")


def finding(message: str = "image x denied", involved: InvolvedObject = NAMESPACE) -> Finding:
    return Finding(involved, "ImageDenied", message)


def test_a_created_object_is_reported_on_its_namespace_an_existing_one_on_itself() -> None:
    assert involved_object(request()) == NAMESPACE
    assert involved_object(request("UPDATE", uid="u-1")) == InvolvedObject("v1", "Pod", "web-1", "shop", "u-1")
    # An object without a uid is not known to exist: its namespace.
    assert involved_object(request("UPDATE")) == NAMESPACE


def test_repetitions_raise_one_events_count_written_at_most_once_per_flush() -> None:
    correlator = Correlator(EventSettings(flush_seconds=1.0), now=0.0)
    for _ in range(200):
        assert correlator.add(finding(), 0.0, "t0")
    [write] = correlator.due(0.0)
    assert write.count == 200
    write.aggregate.written_count, write.aggregate.name = 200, "shop.1"
    for _ in range(50):
        correlator.add(finding(), 0.5, "t1")
    assert correlator.due(0.5) == []  # within the flush interval: nothing is written
    [update] = correlator.due(1.0)
    assert update.aggregate.name == "shop.1" and update.count == 250
    assert len(correlator.aggregates) == 1


def test_a_new_window_starts_a_new_event() -> None:
    settings = EventSettings(window_seconds=600.0)
    correlator = Correlator(settings, now=0.0)
    correlator.add(finding(), 0.0, "t0")
    [write] = correlator.due(0.0)
    write.aggregate.written_count = write.count
    correlator.add(finding(), 601.0, "t1")
    [again] = correlator.due(601.0)
    assert again.aggregate is not write.aggregate and again.count == 1


def test_each_object_and_the_whole_webhook_are_rate_limited() -> None:
    settings = EventSettings(object_burst=3, global_burst=5, flush_seconds=0.0)
    correlator = Correlator(settings, now=0.0)
    for index in range(10):  # ten different messages about one object: ten Events, three may be written now
        correlator.add(finding(f"image {index} denied"), 0.0, "t0")
    assert len(correlator.due(0.0)) == 3
    other = InvolvedObject("v1", "Namespace", "other", "other")
    for index in range(10):
        correlator.add(finding(f"image {index} denied", other), 0.0, "t0")
    assert len(correlator.due(0.0)) == 2  # the global bucket has two tokens left
    assert correlator.due(0.0) == []
    # Waiting Events are not lost: written as tokens come back (one per object per refill period here): one
    # for `shop`, and for `other` the token it had left plus a new one.
    assert len(correlator.due(settings.object_refill_seconds)) == 3


class RecordingWriter(EventWriter):
    def __init__(self) -> None:
        super().__init__(core=None)
        self.calls: list[tuple[str, int]] = []
        self.missing = False

    def create(self, aggregate: Aggregate, count: int) -> str:
        self.calls.append(("create", count))
        return f"event-{len(self.calls)}"

    def patch(self, aggregate: Aggregate, count: int) -> None:
        if self.missing:
            raise ApiException(status=404)
        self.calls.append(("patch", count))


def test_the_recorder_writes_the_aggregated_count_and_recreates_a_deleted_event() -> None:
    writer = RecordingWriter()
    recorder = EventRecorder(writer, EventSettings(flush_seconds=0.0))
    for _ in range(200):
        recorder.report(request(), "ImageDenied", "image x denied")
    recorder.start()
    recorder.stop()
    assert writer.calls == [("create", 200)]

    recorder = EventRecorder(writer, EventSettings(flush_seconds=0.0))
    recorder.report(request(), "ImageDenied", "image x denied")
    recorder._take_queued()
    recorder._flush()
    writer.missing = True
    recorder.report(request(), "ImageDenied", "image x denied")
    recorder._take_queued()
    recorder._flush()
    assert writer.calls == [("create", 200), ("create", 1), ("create", 2)]  # the patch found no Event: created


def test_reporting_never_waits_a_full_queue_drops_and_counts() -> None:
    blocked = threading.Event()

    class StuckWriter(RecordingWriter):
        def create(self, aggregate: Aggregate, count: int) -> str:
            blocked.wait()
            return super().create(aggregate, count)

    recorder = EventRecorder(StuckWriter(), EventSettings(queue_size=4, flush_seconds=0.0))
    dropped = EVENTS_DROPPED.labels("queue_full")
    before = dropped._value.get()
    # Not started: nothing drains the queue, so a report that waited for room would never return.
    for index in range(10):
        recorder.report(request(), "ImageDenied", f"image {index} denied")
    assert dropped._value.get() - before == 6
    blocked.set()


def test_event_messages_are_bounded() -> None:
    writer = RecordingWriter()
    recorder = EventRecorder(writer, EventSettings(flush_seconds=0.0))
    recorder.report(request(), "ImageDenied", "x" * 5000)
    recorder._take_queued()
    [aggregate] = recorder.correlator.aggregates.values()
    assert len(aggregate.finding.message) <= 1024 + len("Pod ")
