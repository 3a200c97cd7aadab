"""The controller's reconcile loop: an API server that cannot be reached is waited out, quietly."""

from __future__ import annotations

import asyncio
import logging

import pytest
import urllib3

from controller import handlers


class FlakyController:
    """Fails the first pass as an API server that went away does, then succeeds."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure
        self.passes = 0

    def reconcile(self) -> None:
        self.passes += 1
        if self.passes == 1:
            raise self.failure


class Leader:
    is_leader = True


async def run_passes(controller: FlakyController, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "DEBOUNCE_SECONDS", 0)
    monkeypatch.setattr(handlers, "RETRY_SECONDS", 0)
    runtime = handlers.Runtime(controller, Leader())  # type: ignore[arg-type]
    runtime.request()
    loop = asyncio.create_task(handlers._reconcile_loop(runtime))
    for _ in range(200):
        if controller.passes >= 2:
            break
        await asyncio.sleep(0.01)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop


def failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "reconciliation failed" in record.getMessage()]


def test_an_unreachable_api_server_is_retried_with_a_warning_and_no_traceback(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = urllib3.exceptions.MaxRetryError(None, "/apis", reason=ConnectionRefusedError(111, "refused"))  # type: ignore[arg-type]
    controller = FlakyController(refused)
    with caplog.at_level(logging.WARNING, logger="controller.handlers"):
        asyncio.run(run_passes(controller, monkeypatch))
    assert controller.passes >= 2  # retried after the failure
    (record,) = failure_records(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "cannot be reached" in record.getMessage()


def test_an_unexpected_failure_keeps_its_traceback(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    controller = FlakyController(KeyError("a defect"))
    with caplog.at_level(logging.WARNING, logger="controller.handlers"):
        asyncio.run(run_passes(controller, monkeypatch))
    assert controller.passes >= 2
    (record,) = failure_records(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None
