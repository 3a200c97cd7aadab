"""A slow network in front of a registry or a lookaside: every request waits `delay_seconds`, then is forwarded.

Read-only (GET and HEAD: all a verifier sends). Each request has its own thread, so the delay is per request,
as a distant registry's round trip is, and parallel requests overlap. Every request is recorded with when it
arrived and when its answer was sent, which shows the rounds of requests that wait for one another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

FORWARDED_REQUEST_HEADERS = ("accept", "authorization")
FORWARDED_RESPONSE_HEADERS = ("content-type", "docker-content-digest", "www-authenticate", "location")


class _DelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as registries offer
    proxy: DelayProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def _forward(self) -> None:
        arrived = time.monotonic()
        time.sleep(self.proxy.delay_seconds)
        headers = {key: value for key, value in self.headers.items() if key.lower() in FORWARDED_REQUEST_HEADERS}
        answer = self.proxy.client.request(self.command, f"{self.proxy.upstream}{self.path}", headers=headers)
        # Recorded before the answer goes out, so a client that has its answer finds its request recorded.
        with self.proxy.lock:
            self.proxy.requests.append(ProxiedRequest(self.command, self.path, arrived, time.monotonic()))
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() in FORWARDED_RESPONSE_HEADERS:
                self.send_header(key, value)
        body = answer.content
        self.send_header("Content-Length", answer.headers.get("content-length", str(len(body)))
                         if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    arrived: float
    answered: float


def dependent_rounds(requests: Sequence[ProxiedRequest]) -> list[list[ProxiedRequest]]:
    """The requests by round: a request is in round n+1 when the longest chain of requests, each asked only after
    the one before it was answered, that ends with it has n+1 links. With a delay on every request, requests
    sent together overlap and never chain, so the number of rounds is the round trips a client spent in a row."""
    rounds: list[list[ProxiedRequest]] = []
    depth: list[tuple[float, int]] = []  # (answered, its round) of every request placed so far
    for request in sorted(requests, key=lambda request: request.arrived):
        level = max((placed for answered, placed in depth if answered <= request.arrived), default=-1) + 1
        depth.append((request.answered, level))
        if level == len(rounds):
            rounds.append([])
        rounds[level].append(request)
    return rounds


@dataclass
class DelayProxy:
    upstream: str
    delay_seconds: float
    server: ThreadingHTTPServer | None = None
    requests: list[ProxiedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # One pooled client for every forwarding thread: a client per request would spend the proxy's CPU on TLS
    # context setup, and a busy proxy would be measured as a slow registry.
    client: httpx.Client = field(default_factory=lambda: httpx.Client(
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256), timeout=30))

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.client.close()


class BackloggedServer(ThreadingHTTPServer):
    """A threading HTTP server whose listen backlog takes a burst of connections (the default of 5 drops SYNs,
    and a client's retransmission a second later would be measured as server latency)."""

    request_queue_size = 1024
    daemon_threads = True


def start_delay_proxy(upstream: str, delay_seconds: float, port: int = 0) -> DelayProxy:
    proxy = DelayProxy(upstream, delay_seconds)
    handler = type("Handler", (_DelayHandler,), {"proxy": proxy})
    server = BackloggedServer(("127.0.0.1", port), handler)
    proxy.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return proxy
