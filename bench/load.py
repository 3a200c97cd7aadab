"""Servers under test and the clients that load them: an async httpx client for AdmissionReviews that differ
request by request, and wrk (a C load generator) for the steady warm path, where a Python client would be the
bottleneck before the server is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e import infra
from tests.e2e.conftest import admission_review


def scheduled_cpu_seconds(pid: int) -> float:
    """CPU time the process's threads have run so far, from the scheduler's nanosecond counters (the clock
    ticks of /proc/PID/stat are 10 ms, too coarse for one admission)."""
    return sum(int((task / "schedstat").read_text().split()[0])
               for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


@dataclass
class Server:
    """An HTTPS server process on 127.0.0.1 and a way to reach it."""

    port: int
    process: subprocess.Popen[bytes]
    ca: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/validate"

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """The process's peak resident set (VmHWM) since it started."""
        return self._status_mib("VmHWM")

    def rss_mib(self) -> float:
        """The process's resident set now (VmRSS)."""
        return self._status_mib("VmRSS")

    def _status_mib(self, field: str) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
        return kib / 1024


@contextmanager
def serving(command: Sequence[str], directory: Path, log: Path, *, startup_seconds: float = 20) -> Iterator[Server]:
    tls = infra.make_tls(directory / "tls")
    port = infra.free_port()
    with log.open("ab") as output:
        process = subprocess.Popen([sys.executable, *(part.format(port=port, cert=tls.cert, key=tls.key)
                                                      for part in command)],
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        infra.wait_until_listening(port, process, timeout=startup_seconds)
        yield Server(port, process, tls.ca)
    finally:
        infra.stop(process)


def trustgate_serve(config: Path, registries: Sequence[str], *flags: str) -> list[str]:
    """`trustgate serve` as in production: default cache settings, HTTPS, one process."""
    insecure = [flag for host in registries for flag in ("--insecure-registry", host)]
    return ["-m", "webhook", "serve", "--config", str(config), *insecure, *infra.ALLOW_LOOPBACK, "--port", "{port}",
            "--tls-cert", "{cert}", "--tls-key", "{key}", *flags]


FLOOR = ["-m", "bench.floor", "{port}", "{cert}", "{key}"]


def review(uid: str, *images: str) -> bytes:
    return json.dumps(admission_review(uid, *images)).encode()


# --- the async client -----------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies: list[float]  # seconds, one per admission that was answered
    errors: list[str]  # transport faults, non-200 answers, and denials of images that should be admitted
    wall_seconds: float

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


@asynccontextmanager
async def connections(server: Server, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` keep-alive HTTPS connections, each its own client: one httpx pool shared by dozens of concurrent
    requests costs the client milliseconds per request, and the client would be measured instead of the
    server."""
    context = ssl.create_default_context(cafile=server.ca)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(verify=context, limits=limits, timeout=30))
               for _ in range(count)]


async def admit_all(clients: Sequence[httpx.AsyncClient], url: str, bodies: Sequence[bytes]) -> LoadResult:
    """Send every body, one at a time on each connection; each must come back allowed."""
    latencies: list[float] = []
    errors: list[str] = []
    pending = iter(bodies)

    async def worker(http: httpx.AsyncClient) -> None:
        for body in pending:
            started = time.perf_counter()
            try:
                response = await http.post(url, content=body, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                errors.append(f"{exc.__class__.__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}")
                continue
            answer = response.json()["response"]
            if not answer["allowed"]:
                errors.append(f"denied: {answer['status']['message']}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(http) for http in clients))
    return LoadResult(latencies, errors, time.perf_counter() - started)


async def warm_up(clients: Sequence[httpx.AsyncClient], url: str) -> None:
    """Open every connection (TLS handshakes are not what a steady state measures)."""
    body = review("warm-up")
    await asyncio.gather(*(http.post(url, content=body) for http in clients))


# --- wrk ------------------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors and non-2xx answers


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNIT_MS[unit]


def wrk(url: str, body: bytes, directory: Path, *, connections: int, seconds: float) -> WrkResult:
    """POST the same body over `connections` keep-alive connections for `seconds` (one wrk thread: the server,
    not the load generator, gets the second core)."""
    script = directory / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [==[{body.decode()}]==]\n")
    output = infra.run("wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "-s", str(script), url)
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.MULTILINE))
    errors = sum(int(count) for count in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(percentiles["50"]), p99_ms=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0))


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory / 1024 / 1024, 1)}
