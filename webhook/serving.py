"""The webhook's HTTPS server: uvicorn, with a shutdown that first reports not ready and ends in a clean exit."""

from __future__ import annotations

import signal
import time
from types import FrameType

import uvicorn

from webhook.app import Drain


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopped by SIGTERM or SIGINT in three steps.

    At the first signal /readyz turns 503. The server keeps answering for `delay` seconds, so that endpoints
    can stop sending to it, then shuts down as uvicorn does: it stops accepting, answers the reviews in flight
    and runs the app's shutdown. A second signal ends the delay (a second SIGINT also the wait for reviews in
    flight). uvicorn's own handler would re-raise the signal after a drained shutdown, so that the process
    ends killed by it (status 143 for SIGTERM), which supervisors count as a failure; this one does not.
    """

    def __init__(self, config: uvicorn.Config, drain: Drain, delay: float = 0.0) -> None:
        super().__init__(config)
        self.drain = drain
        self.delay = delay
        self._draining_since: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining_since is None:
            self._draining_since = time.monotonic()
            self.drain.started = True
            self.should_exit = self.delay <= 0
        elif sig == signal.SIGINT and self.should_exit:
            self.force_exit = True
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._draining_since is not None and time.monotonic() - self._draining_since >= self.delay:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(config: uvicorn.Config, drain: Drain, delay: float) -> int:
    """Serve until stopped; 0 once drained, 1 when a second SIGINT cut the drain short."""
    server = DrainingServer(config, drain, delay)
    server.run()
    return 1 if server.force_exit else 0
