"""A hostile registry for tests: an HTTP(S) server on 127.0.0.1 whose every answer a test chooses.

Whoever runs a registry chooses every byte trustgate reads from it. This server plays that part: it answers
`/v2/` like a registry and anything else from a table of routes (exact path -> behaviour), recording each
request it receives. Behaviours cover the faults a registry can produce: statuses, stalls, truncated and
endless bodies, byte-by-byte trickles, lying headers, redirects and arbitrary documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.e2e.infra import OCI_INDEX, OCI_MANIFEST, TlsFiles

Behaviour = Callable[["HostileHandler"], None]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    registry: HostileRegistry

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.registry.seen.append(Seen("GET", self.path, {key.lower(): value for key, value in self.headers.items()}))
        behaviour = self.registry.routes.get(self.path.split("?", 1)[0])
        if behaviour is None:
            behaviour = self.registry.ping if self.path == "/v2/" else self.registry.fallback
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):  # the client gave up
            behaviour(self)

    def send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
             length: int | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


@dataclass
class HostileRegistry:
    server: ThreadingHTTPServer
    tls: TlsFiles | None
    routes: dict[str, Behaviour] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    ping: Behaviour = field(default=lambda handler: handler.send(200, b"{}", {"Content-Type": "application/json"}))
    # What every other path answers.
    fallback: Behaviour = field(default=lambda handler: status(404)(handler))

    @property
    def port(self) -> int:
        port: int = self.server.server_address[1]
        return port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def flags(self) -> list[str]:
        """`trustgate verify|serve` flags that reach this server (loopback explicitly allowed)."""
        reach = ["--registry-ca", str(self.tls.ca)] if self.tls else ["--insecure-registry", self.host]
        return [*reach, "--allow-registry-cidr", "127.0.0.1/32"]

    def trustgate_flags(self, directory: Path) -> list[str]:
        """Like `infra.Registry.trustgate_flags`, so the shared fixtures can start `serve` against this server."""
        return self.flags()

    def manifest(self, repository: str, reference: str, behaviour: Behaviour) -> None:
        self.routes[f"/v2/{repository}/manifests/{reference}"] = behaviour

    def requests_to(self, prefix: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.startswith(prefix)]

    def stop(self) -> None:
        self.released.set()  # ends stalls and trickles
        self.server.shutdown()
        self.server.server_close()


def start(tls: TlsFiles | None = None) -> HostileRegistry:
    handler: type[HostileHandler] = type("Handler", (HostileHandler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    registry = HostileRegistry(server, tls)
    handler.registry = registry
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return registry


def refused_port() -> int:
    """A port on 127.0.0.1 with nothing listening: bound, never listened on, and held until process exit."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    _held.append(holder)
    port: int = holder.getsockname()[1]
    return port


_held: list[socket.socket] = []


# --- documents --------------------------------------------------------------------------------------------


def image_manifest(seed: str = "hostile", layers: int = 1) -> bytes:
    def descriptor(kind: str, index: int) -> dict[str, Any]:
        digest = hashlib.sha256(f"{seed}/{kind}/{index}".encode()).hexdigest()
        return {"mediaType": f"application/vnd.oci.image.{kind}", "digest": f"sha256:{digest}", "size": 1}

    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor("config.v1+json", 0),
                       "layers": [descriptor("layer.v1.tar", index) for index in range(layers)]}).encode()


def index_manifest(children: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{hashlib.sha256(str(i).encode()).hexdigest()}", "size": 1,
         "platform": {"architecture": f"arch{i}", "os": "linux"}} for i in range(children)]}).encode()


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


# --- behaviours -------------------------------------------------------------------------------------------


def status(code: int, headers: dict[str, str] | None = None) -> Behaviour:
    body = json.dumps({"errors": [{"code": "HOSTILE", "message": f"status {code}"}]}).encode()
    return lambda handler: handler.send(code, body, {"Content-Type": "application/json", **(headers or {})})


def document(body: bytes, media_type: str = OCI_MANIFEST, headers: dict[str, str] | None = None) -> Behaviour:
    return lambda handler: handler.send(200, body, {"Content-Type": media_type, **(headers or {})})


def stall(handler: HostileHandler) -> None:
    """Accept the request and never answer (until the test ends)."""
    handler.registry.released.wait()


def truncated(body: bytes) -> Behaviour:
    """Declare the whole body, send half, and close the connection."""
    def behave(handler: HostileHandler) -> None:
        handler.send(200, body[: len(body) // 2], {"Content-Type": OCI_MANIFEST}, length=len(body))
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)
    return behave


def trickle(body: bytes, pause: float = 0.2) -> Behaviour:
    """Send the body one byte at a time, slowly enough that it never finishes within a deadline."""
    def behave(handler: HostileHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", OCI_MANIFEST)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            if handler.registry.released.wait(pause):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
    return behave


def endless(handler: HostileHandler) -> None:
    """A chunked body that never ends: only the byte limit stops a reader."""
    handler.send_response(200)
    handler.send_header("Content-Type", OCI_MANIFEST)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"[" * 65536
    while not handler.registry.released.is_set():
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def gate(arrived: threading.Event, proceed: threading.Event, then: Behaviour) -> Behaviour:
    """Signal `arrived`, wait for `proceed`, then behave as `then`: holds a request in flight for a test."""
    def behave(handler: HostileHandler) -> None:
        arrived.set()
        proceed.wait()
        then(handler)
    return behave


def redirect(location: str, code: int = 302) -> Behaviour:
    return lambda handler: handler.send(code, b"", {"Location": location})
