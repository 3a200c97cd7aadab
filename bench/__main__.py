"""`make bench`: measure trustgate against real components and write bench/RESULTS.md.

Scenarios (all in one run, each against its own fresh images):
  warm      AdmissionReviews/s and latency for pods whose 3 images are verified, against a trivial endpoint
  cold      one never-seen digest per format, against the reference CLI verifying the same image
  coalesce  registry and lookaside requests for 200 concurrent admissions of one new image, and for one pod
            with 8 containers of one image (counted from the registry's own access log)
  rollout   10,000 admissions over 1,000 distinct images at concurrency 128: errors, p99, peak RSS
  slow      50 distinct cold images behind a proxy adding 200 ms per request: total time
  latency   500 distinct cold images at concurrency 64 behind a proxy adding 50 ms per request: total time,
            errors, and whether any denial came from a deadline the image could have met
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import http.client
import importlib.metadata
import os
import platform
import random
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import load
from bench.proxy import DelayProxy, ProxiedRequest, dependent_rounds, start_delay_proxy
from bench.world import FORMATS, SIGNATURE_FORMATS, Format, Image, World, world
from tests.e2e import infra

RESULTS = Path(__file__).parent / "RESULTS.md"
SCENARIOS = ("warm", "cold", "coalesce", "rollout", "slow", "latency")
# The section of RESULTS.md that `make bench-scale` (bench/scale.py) writes and `make bench` keeps.
SCALE_SECTION = "## Policy scale (`make bench-scale`)"

WARM_ROUNDS = 5
WARM_SECONDS = 5.0
WARM_CONNECTIONS = 32
COLD_IMAGES_PER_FORMAT = 9
COALESCE_ADMISSIONS = 200
POD_CONTAINERS = 8
ROLLOUT_ADMISSIONS = 10_000
ROLLOUT_IMAGES = 1_000
ROLLOUT_CONCURRENCY = 128
SLOW_IMAGES = 50
SLOW_DELAY_SECONDS = 0.2
LATENCY_IMAGES = 500
LATENCY_CONCURRENCY = 64
LATENCY_DELAY_SECONDS = 0.05
# The requests of one cold image by tag that wait for one another, in the longest of the formats' chains: the
# registry's /v2/ ping, the manifest (the digest is the hash of its bytes), then Notation's referrers index,
# signature manifest and envelope (the rounds the cold scenario measures).
LATENCY_CHAIN = 5
# `trustgate serve`'s default per-review budget (--deadline), which the latency scenario keeps.
DEADLINE_SECONDS = 9.0

# The targets of the performance issue.
TARGET_WARM_RATIO = 0.65
TARGET_WARM_P99_MS = 20.0
TARGET_COLD_RATIO = 1 / 3
TARGET_RSS_MIB = 200.0
TARGET_SLOW_SECONDS = 3.0


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    verdicts: list[tuple[str, bool, str]] = field(default_factory=list)  # target, met, how far and why

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)
        print(*lines, sep="\n", flush=True)

    def target(self, name: str, met: bool, detail: str) -> None:
        self.verdicts.append((name, met, detail))
        print(f"target {'MET' if met else 'MISSED'}: {name}: {detail}", flush=True)

    def first_errors(self, result: load.LoadResult) -> None:
        if result.errors:
            self.add(f"First errors: {'; '.join(result.errors[:3])}", "")


def _mib(value: float) -> str:
    return f"{value:.0f} MiB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _pod_images(*images: str) -> bytes:
    return load.review(f"bench-{random.getrandbits(48):012x}", *images)


# --- warm path ----------------------------------------------------------------------------------------------


def warm(report: Report, trustgate: load.Server, floor: load.Server, images: Sequence[Image], work: Path) -> None:
    body = load.review("warm", *(image.by_digest for image in images))

    async def prime() -> load.LoadResult:
        async with load.connections(trustgate, 1) as clients:
            return await load.admit_all(clients, trustgate.url, [body])

    primed = asyncio.run(prime())
    if primed.errors:
        raise RuntimeError(f"warm-path images were not admitted: {primed.errors}")
    rounds: list[tuple[load.WrkResult, load.WrkResult]] = []
    cpu_per_request: dict[int, list[float]] = {trustgate.port: [], floor.port: []}
    for index in range(WARM_ROUNDS):
        # Alternate which goes first, so drift in the machine's speed does not favour either.
        order = (floor, trustgate) if index % 2 == 0 else (trustgate, floor)
        results = {}
        for server in order:
            cpu = server.cpu_seconds()
            results[server.port] = load.wrk(server.url, body, work, connections=WARM_CONNECTIONS, seconds=WARM_SECONDS)
            cpu_per_request[server.port].append((server.cpu_seconds() - cpu) / results[server.port].requests)
        rounds.append((results[trustgate.port], results[floor.port]))
    ratios = [ours.requests_per_second / theirs.requests_per_second for ours, theirs in rounds]
    ratio = statistics.median(ratios)
    p50 = statistics.median(ours.p50_ms for ours, _ in rounds)
    p99 = statistics.median(ours.p99_ms for ours, _ in rounds)
    errors = sum(ours.errors for ours, _ in rounds)
    ours_cpu = statistics.median(cpu_per_request[trustgate.port])
    floor_cpu = statistics.median(cpu_per_request[floor.port])
    floor_p50 = statistics.median(theirs.p50_ms for _, theirs in rounds)
    floor_p99 = statistics.median(theirs.p99_ms for _, theirs in rounds)
    report.add(
        "## Warm path", "",
        f"Pods with 3 verified images (one per format, by digest), {WARM_CONNECTIONS} HTTPS keep-alive connections, "
        f"{WARM_ROUNDS} interleaved rounds of {WARM_SECONDS:g} s each against the trivial endpoint (`bench/floor.py`, "
        "same uvicorn TLS and server options). Load generator: wrk, one thread.", "",
        "| round | trustgate req/s | p50 | p99 | floor req/s | p50 | p99 | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {index + 1} | {ours.requests_per_second:.0f} | {ours.p50_ms:.1f} ms | {ours.p99_ms:.1f} ms | "
          f"{theirs.requests_per_second:.0f} | {theirs.p50_ms:.1f} ms | {theirs.p99_ms:.1f} ms | {r:.2f} |"
          for index, ((ours, theirs), r) in enumerate(zip(rounds, ratios, strict=True))), "",
        f"Median ratio {ratio:.2f}; median p50 {p50:.1f} ms (trivial endpoint {floor_p50:.1f} ms), median p99 "
        f"{p99:.1f} ms (trivial endpoint {floor_p99:.1f} ms); "
        f"socket errors and non-2xx answers: {errors}. Server CPU per request (from /proc, median of rounds): "
        f"trustgate {ours_cpu * 1e6:.0f} us, trivial endpoint {floor_cpu * 1e6:.0f} us.", "")
    why = (f"trustgate's own work (parsing the review, the pipeline's cached lookups, the decision log line, a "
           f"larger answer) costs {(ours_cpu - floor_cpu) * 1e6:.0f} us of CPU per request on top of the "
           f"{floor_cpu * 1e6:.0f} us the trivial endpoint costs (uvicorn and TLS, as for trustgate, and FastAPI)")
    report.target(f"warm path >= {TARGET_WARM_RATIO:.0%} of the trivial endpoint's throughput",
                  ratio >= TARGET_WARM_RATIO, f"median ratio {ratio:.2f} ({ratio / TARGET_WARM_RATIO:.0%} of target)"
                  + ("" if ratio >= TARGET_WARM_RATIO else f"; {why}"))
    report.target(f"warm path p99 <= {TARGET_WARM_P99_MS:g} ms at concurrency {WARM_CONNECTIONS}",
                  p99 <= TARGET_WARM_P99_MS,
                  f"p99 {p99:.1f} ms ({p99 - TARGET_WARM_P99_MS:+.1f} ms); the trivial endpoint's own p99 is "
                  f"{floor_p99:.1f} ms on this machine" + ("" if p99 <= TARGET_WARM_P99_MS else
                  f"; in a closed loop of {WARM_CONNECTIONS} connections, latency is {WARM_CONNECTIONS} / throughput "
                  "plus queueing, so p99 follows the CPU cost per request"))


# --- cold path ----------------------------------------------------------------------------------------------


def _time_cli(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run([infra.tool(command[0]), *command[1:]], env={**os.environ, **env},
                               capture_output=True, check=False, timeout=120)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr.decode(errors='replace')}")
    return elapsed


_REVIEW_SECONDS = re.compile(r'^trustgate_admission_review_duration_seconds_sum\{webhook="validate"\} (\S+)$',
                             re.MULTILINE)


async def _server_seconds(client: httpx.AsyncClient, trustgate: load.Server) -> float:
    """The time trustgate has spent answering validating reviews so far, from its own duration metric."""
    metrics = await client.get(trustgate.url.removesuffix("/validate") + "/metrics")
    return float(_REVIEW_SECONDS.search(metrics.text).group(1))  # type: ignore[union-attr]


# Every registry and lookaside request pays this in the rounds measurement: far longer than the time between
# requests sent together, so those overlap and only requests that waited for an answer chain.
ROUNDS_DELAY_SECONDS = 0.025


@dataclass(frozen=True)
class Rounds:
    """The registry and lookaside requests of one cold verification, by dependent round."""

    image: Image
    rounds: list[list[ProxiedRequest]]

    @property
    def requests(self) -> int:
        return sum(len(requests) for requests in self.rounds)

    def describe(self) -> str:
        """What each round asked, e.g. `manifest + signature-1 + signature-2`, rounds separated by `, then `."""
        return ", then ".join(" + ".join(sorted(_what(request.path, self.image) for request in requests))
                              for requests in self.rounds)


def _what(path: str, image: Image) -> str:
    """A request's path as a reader of the cold table names it."""
    name = path.rsplit("/", 1)[-1].split("?", 1)[0]
    if path == "/v2/":
        return "API version check"
    if "/referrers/" in path:
        return "referrers API"
    if "/blobs/" in path:
        return "blob"
    if name == image.digest:
        return "manifest"
    if name.endswith(".sig"):
        return "`.sig` manifest"
    if name == image.digest.replace(":", "-"):
        return "referrers tag"
    if "/manifests/" in path:
        return "referrer manifest"
    return name  # signature-N on the lookaside


def measure_rounds(world: World, work: Path) -> dict[Format, Rounds]:
    """The requests of one cold verification by digest per format, and the rounds they form, recorded by
    proxies that delay every registry and lookaside request. Each format's first image is admitted unmeasured,
    so trustgate knows which referrers lookup the registry offers, as on every later cold image."""
    wanted = [(image_format, name) for name in ("rounds-first", "rounds") for image_format in SIGNATURE_FORMATS]
    measured: dict[Format, Rounds] = {}
    with behind_delay_proxies(world, work, "rounds-registry", wanted, ROUNDS_DELAY_SECONDS) as (
            images, proxy, lookaside):
        config = world.trustgate_config("config-rounds", [(proxy.host, lookaside.url)])
        with load.serving(load.trustgate_serve(config, [proxy.host]), work / "rounds",
                          work / "trustgate-rounds.log") as trustgate:
            async def run() -> None:
                async with load.connections(trustgate, 1) as clients:
                    await load.warm_up(clients, trustgate.url)
                    for image in images:
                        proxy.requests.clear()
                        lookaside.requests.clear()
                        result = await load.admit_all(clients, trustgate.url, [_pod_images(image.by_digest)])
                        if result.errors:
                            raise RuntimeError(f"image {image.by_digest} not admitted: {result.errors}")
                        measured[image.format] = Rounds(image, dependent_rounds([*proxy.requests, *lookaside.requests]))

            asyncio.run(run())
    return measured


REGISTRY_FLOOR_REQUESTS = 50


def registry_floor_seconds(image: Image) -> float:
    """The registry's own time for one request: the median of sequential GETs of a manifest by digest over
    one keep-alive connection, from the standard library's minimal client."""
    host, _, path = image.by_digest.partition("/")
    connection = http.client.HTTPConnection(host, timeout=10)
    timings = []
    try:
        for _ in range(REGISTRY_FLOOR_REQUESTS):
            started = time.perf_counter()
            connection.request("GET", f"/v2/{path.replace('@', '/manifests/')}",
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            connection.getresponse().read()
            timings.append(time.perf_counter() - started)
    finally:
        connection.close()
    return statistics.median(timings)


def cold(report: Report, trustgate: load.Server, world: World, images: dict[Format, list[Image]],
         rounds: dict[Format, Rounds]) -> None:
    timings: dict[Format, list[tuple[float, float]]] = {image_format: [] for image_format in SIGNATURE_FORMATS}
    round_trips: dict[Format, list[int]] = {image_format: [] for image_format in SIGNATURE_FORMATS}
    client_latencies: dict[Format, list[float]] = {image_format: [] for image_format in SIGNATURE_FORMATS}
    # CPU time of trustgate's process and of the registry's during one admission.
    cpu: dict[Format, list[tuple[float, float]]] = {image_format: [] for image_format in SIGNATURE_FORMATS}

    async def admit_one(clients: list[httpx.AsyncClient], image: Image) -> float:
        before = await _server_seconds(clients[0], trustgate)
        cpu_before = (load.scheduled_cpu_seconds(trustgate.process.pid),
                      load.scheduled_cpu_seconds(world.registry.process.pid))
        result = await load.admit_all(clients, trustgate.url, [_pod_images(image.by_digest)])
        cpu[image.format].append((load.scheduled_cpu_seconds(trustgate.process.pid) - cpu_before[0],
                                  load.scheduled_cpu_seconds(world.registry.process.pid) - cpu_before[1]))
        if result.errors:
            raise RuntimeError(f"cold image {image.by_digest} not admitted: {result.errors}")
        client_latencies[image.format].append(result.latencies[0])
        return await _server_seconds(clients[0], trustgate) - before

    async def run() -> None:
        async with load.connections(trustgate, 1) as clients:
            await load.warm_up(clients, trustgate.url)
            for index in range(COLD_IMAGES_PER_FORMAT):
                for image_format in SIGNATURE_FORMATS:
                    image = images[image_format][index]
                    offset = world.registry.log_path.stat().st_size
                    lookaside_before = len(world.lookaside_requests)
                    ours = await admit_one(clients, image)
                    await asyncio.sleep(0.2)  # the registry writes its access log asynchronously
                    round_trips[image_format].append(len(trustgate_requests(world.registry.log_path, offset))
                                                     + len(world.lookaside_requests) - lookaside_before)
                    theirs = _time_cli(*world.reference_cli(image))
                    timings[image_format].append((ours, theirs))

    asyncio.run(run())
    floor = registry_floor_seconds(images["gpg"][0])
    clis = {"gpg": "`skopeo copy` with a signedBy policy", "cosign": "`cosign verify --key`",
            "notation": "`notation verify`", "cosign-bundle": "`cosign verify --key` of cosign 3"}
    report.add(
        "## Cold path", "",
        f"{COLD_IMAGES_PER_FORMAT} never-seen digests per format (`cosign-bundle`: sigstore bundles signed by "
        "cosign 3 with a key, without log entries, kept as OCI referrers). trustgate: the server-side time of one "
        "AdmissionReview (its `trustgate_admission_review_duration_seconds` metric, read before and after); the "
        "client's round trip over an open HTTPS connection is shown beside it. Reference: the CLI's wall time "
        "verifying the same image right after, process start included (that is what the CLI costs). The "
        f"registry itself takes {_ms(floor)} to answer one request (median of {REGISTRY_FLOOR_REQUESTS} sequential "
        "manifest GETs over one keep-alive connection, Python's http.client). CPU: what trustgate's process and "
        "the registry's ran during the admission (all threads, from the scheduler's counters), medians.", "",
        "| format | reference CLI | trustgate median (server) | client round trip | CLI median | "
        "median ratio (trustgate / CLI) | trustgate's registry + lookaside requests | dependent rounds | "
        "trustgate CPU | registry CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for image_format in SIGNATURE_FORMATS:
        pairs = timings[image_format]
        ratio = statistics.median(ours / theirs for ours, theirs in pairs)
        ours, theirs = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        requests = statistics.median(round_trips[image_format])
        chain = rounds[image_format]
        own_cpu = statistics.median(ours_cpu for ours_cpu, _ in cpu[image_format])
        registry_cpu = statistics.median(registry_cpu for _, registry_cpu in cpu[image_format])
        report.add(f"| {image_format} | {clis[image_format]} | {_ms(ours)} | "
                   f"{_ms(statistics.median(client_latencies[image_format]))} | {_ms(theirs)} | {ratio:.2f} | "
                   f"{requests:g} | {len(chain.rounds)} | {_ms(own_cpu)} | {_ms(registry_cpu)} |")
        why = (f"; trustgate's {_ms(ours)} is {requests:g} registry or lookaside requests in {len(chain.rounds)} "
               f"rounds that wait for one another (at least {_ms(len(chain.rounds) * floor)} of the registry's own "
               f"time; the registry ran {_ms(registry_cpu)} of CPU) and {_ms(own_cpu)} of trustgate's CPU (the "
               f"review, the requests, verification in a worker thread); meeting the target needs "
               f"{_ms(theirs * TARGET_COLD_RATIO)} in all")
        report.target(f"cold {image_format} <= 1/3 of the reference CLI", ratio <= TARGET_COLD_RATIO,
                      f"ratio {ratio:.2f} (target 0.33)" + ("" if ratio <= TARGET_COLD_RATIO else why))
    report.add(
        "", f"Rounds: one more never-seen digest per format, with every registry and lookaside request delayed "
        f"{ROUNDS_DELAY_SECONDS * 1000:.0f} ms by a recording proxy (after one unmeasured image per format, so "
        "trustgate knows which referrers lookup the registry offers); a request is in round n+1 when it was asked "
        "after the answer to a request of round n. What each round asked:", "",
        *(f"- {image_format}: {rounds[image_format].describe()} ({rounds[image_format].requests} requests)"
          for image_format in SIGNATURE_FORMATS), "")


# --- coalescing ---------------------------------------------------------------------------------------------


_ACCESS = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d+) \d+ "[^"]*" "trustgate"')


def trustgate_requests(log: Path, offset: int) -> list[tuple[str, str, str]]:
    """(method, path, status) of every request trustgate sent, from the registry's access log past `offset`."""
    with log.open("rb") as handle:
        handle.seek(offset)
        return [match.groups() for match in _ACCESS.finditer(handle.read().decode(errors="replace"))]  # type: ignore[misc]


def coalesce(report: Report, trustgate: load.Server, world: World, burst: dict[Format, Image],
             pod: dict[Format, Image]) -> None:
    report.add(
        "## Coalescing", "",
        f"Registry requests from trustgate, counted in docker-registry's own access log (and the lookaside's), for "
        f"{COALESCE_ADMISSIONS} concurrent admissions of one new image (by tag, {COALESCE_ADMISSIONS} connections) "
        f"and for one pod with {POD_CONTAINERS} containers of one new image.", "",
        "| case | format | registry requests | manifest GETs | HEADs | repeated paths | lookaside requests | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |")
    all_met = True
    cases: list[tuple[str, dict[Format, Image], Callable[[str], list[bytes]]]] = [
        (f"{COALESCE_ADMISSIONS} admissions", burst,
         lambda reference: [_pod_images(reference) for _ in range(COALESCE_ADMISSIONS)]),
        (f"pod of {POD_CONTAINERS}", pod, lambda reference: [_pod_images(*[reference] * POD_CONTAINERS)]),
    ]
    for case, images, bodies_of in cases:
        for image_format in SIGNATURE_FORMATS:
            image = images[image_format]
            reference = f"{image.repository}:v1"
            bodies = bodies_of(reference)
            offset = world.registry.log_path.stat().st_size
            lookaside_before = len(world.lookaside_requests)

            async def run(bodies: list[bytes] = bodies) -> load.LoadResult:
                async with load.connections(trustgate, len(bodies)) as clients:
                    return await load.admit_all(clients, trustgate.url, bodies)

            result = asyncio.run(run())
            time.sleep(0.5)  # the registry writes its access log asynchronously
            requests = trustgate_requests(world.registry.log_path, offset)
            lookaside = world.lookaside_requests[lookaside_before:]
            paths = collections.Counter((method, path) for method, path, _ in requests)
            paths.update(lookaside)
            repeated = {f"{method} {path}": count for (method, path), count in paths.items() if count > 1}
            path = image.repository.split("/", 1)[1]
            manifest_gets = sum(1 for method, p, _ in requests
                                if method == "GET" and p in (f"/v2/{path}/manifests/v1",
                                                             f"/v2/{path}/manifests/{image.digest}"))
            heads = sum(1 for method, _, _ in requests if method == "HEAD")
            met = manifest_gets == 1 and heads <= 1 and not repeated and not result.errors
            all_met = all_met and met
            report.add(f"| {case} | {image_format} | {len(requests)} | {manifest_gets} | {heads} | "
                       f"{', '.join(f'{p} x{n}' for p, n in repeated.items()) or 'none'} | {len(lookaside)} | "
                       f"{len(result.errors)} |")
    report.add("")
    report.target("exactly one registry round trip set per distinct verification under concurrency", all_met,
                  "one manifest GET, no HEAD beyond one, no path requested twice, no error, in every case"
                  if all_met else "see the coalescing table")


# --- rollout ------------------------------------------------------------------------------------------------


def rollout(report: Report, world: World, config: Path, images: Sequence[Image], work: Path,
            publish_seconds: float) -> None:
    shuffle = random.Random(7)
    references = [f"{images[index % len(images)].repository}:v1" for index in range(ROLLOUT_ADMISSIONS)]
    shuffle.shuffle(references)
    bodies = [_pod_images(reference) for reference in references]
    with load.serving(load.trustgate_serve(config, [world.registry.host]), work / "rollout",
                      work / "trustgate-rollout.log") as trustgate:
        async def run() -> load.LoadResult:
            async with load.connections(trustgate, ROLLOUT_CONCURRENCY) as clients:
                await load.warm_up(clients, trustgate.url)
                return await load.admit_all(clients, trustgate.url, bodies)

        result = asyncio.run(run())
        rss = trustgate.peak_rss_mib()
        rss_after = trustgate.rss_mib()
    formats = collections.Counter(image.format for image in images)
    report.add(
        "## Rollout", "",
        f"{ROLLOUT_ADMISSIONS:,} admissions (one image each, by tag, shuffled) over {len(images):,} distinct new "
        f"images ({', '.join(f'{n} {f}' for f, n in formats.items())}) at concurrency {ROLLOUT_CONCURRENCY}, "
        "against a fresh `trustgate serve` process. Publishing them (pushed over the registry API, signed by "
        "`skopeo standalone-sign`, `cosign sign` in batches of 50 and `notation sign`, 4 signer processes at once) "
        f"took {publish_seconds:.0f} s.", "",
        "| errors | p50 | p99 | max | total | admissions/s | peak RSS (VmHWM) | RSS after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {len(result.errors)} | {_ms(result.median)} | {_ms(result.percentile(0.99))} | "
        f"{_ms(max(result.latencies))} | {result.wall_seconds:.2f} s | "
        f"{ROLLOUT_ADMISSIONS / result.wall_seconds:.0f} | {_mib(rss)} | {_mib(rss_after)} |", "")
    report.first_errors(result)
    report.target(f"rollout of {ROLLOUT_ADMISSIONS:,} admissions over {len(images):,} images with zero errors",
                  not result.errors, f"{len(result.errors)} errors; p99 {_ms(result.percentile(0.99))}")
    report.target(f"rollout peak RSS <= {_mib(TARGET_RSS_MIB)}", rss <= TARGET_RSS_MIB,
                  f"{_mib(rss)} ({rss - TARGET_RSS_MIB:+.0f} MiB)")


# --- slow registry ------------------------------------------------------------------------------------------


@contextmanager
def behind_delay_proxies(world: World, work: Path, name: str, wanted: Sequence[tuple[Format, str]],
                         delay_seconds: float, *, fast: bool = False,
                         ) -> Iterator[tuple[list[Image], DelayProxy, DelayProxy]]:
    """Images signed against a registry at port P; then the registry moves and a delaying proxy takes P, so
    signed identities (which name P) stay right while every request pays the delay. The lookaside is read
    through a delaying proxy too. Yields the images and the registry's and the lookaside's proxies. `fast`
    publishes with `World.publish_fast` (the three formats only)."""
    registry = infra.start_registry(work / name)
    lookaside = start_delay_proxy(world.lookaside.url, 0.0)
    try:
        images = (world.publish_fast(wanted, registry=registry) if fast
                  else world.publish_many(wanted, registry=registry, lookaside_url=lookaside.url))
        port = registry.port
        registry.stop()
        registry = infra.start_registry(work / name)
        proxy = start_delay_proxy(registry.url, delay_seconds, port)
        lookaside.delay_seconds = delay_seconds
        try:
            yield images, proxy, lookaside
        finally:
            proxy.stop()
    finally:
        registry.stop()
        lookaside.stop()


@dataclass
class BehindDelay:
    result: load.LoadResult
    publish_seconds: float


def behind_delay(world: World, work: Path, name: str, count: int, delay_seconds: float,
                 concurrency: int) -> BehindDelay:
    """`count` cold images (formats in turn) admitted over `concurrency` connections, with registry and lookaside
    behind proxies delaying every request by `delay_seconds`."""
    wanted = [(FORMATS[index % len(FORMATS)], f"{name}-{index}") for index in range(count)]
    started = time.monotonic()
    with behind_delay_proxies(world, work, f"{name}-registry", wanted, delay_seconds, fast=True) as (
            images, proxy, lookaside):
        publish_seconds = time.monotonic() - started
        config = world.trustgate_config(f"config-{name}", [(proxy.host, lookaside.url)])
        with load.serving(load.trustgate_serve(config, [proxy.host]), work / name,
                          work / f"trustgate-{name}.log") as trustgate:
            async def run() -> load.LoadResult:
                async with load.connections(trustgate, concurrency) as clients:
                    await load.warm_up(clients, trustgate.url)
                    bodies = [_pod_images(f"{image.repository}:v1") for image in images]
                    return await load.admit_all(clients, trustgate.url, bodies)

            result = asyncio.run(run())
    return BehindDelay(result, publish_seconds)


def slow(report: Report, world: World, work: Path) -> None:
    result = behind_delay(world, work, "slow", SLOW_IMAGES, SLOW_DELAY_SECONDS, SLOW_IMAGES).result
    total = result.wall_seconds
    report.add(
        "## Slow registry", "",
        f"{SLOW_IMAGES} distinct cold images (formats in turn), all admitted at once, with registry and lookaside "
        f"behind a proxy that delays every request by {SLOW_DELAY_SECONDS * 1000:.0f} ms.", "",
        "| errors | total | slowest admission | fastest admission |", "| --- | --- | --- | --- |",
        f"| {len(result.errors)} | {total:.2f} s | {_ms(max(result.latencies))} | {_ms(min(result.latencies))} |", "")
    report.first_errors(result)
    report.target(f"slow registry under {TARGET_SLOW_SECONDS:g} s", total < TARGET_SLOW_SECONDS and not result.errors,
                  f"{total:.2f} s ({total - TARGET_SLOW_SECONDS:+.2f} s), {len(result.errors)} errors")


_DENIAL_CODE = re.compile(r"\[([^]\s]+)\]")


def latency(report: Report, world: World, work: Path) -> None:
    measured = behind_delay(world, work, "latency", LATENCY_IMAGES, LATENCY_DELAY_SECONDS, LATENCY_CONCURRENCY)
    result = measured.result
    slowest_chain = LATENCY_CHAIN
    chain_seconds = slowest_chain * LATENCY_DELAY_SECONDS
    codes = collections.Counter(code for error in result.errors for code in _DENIAL_CODE.findall(error) or ["?"])
    report.add(
        "## High latency", "",
        f"{LATENCY_IMAGES} distinct cold images (formats in turn) over {LATENCY_CONCURRENCY} connections, with "
        f"registry and lookaside behind a proxy that delays every request by {LATENCY_DELAY_SECONDS * 1000:.0f} ms, "
        f"against a fresh `trustgate serve` with its default deadline ({DEADLINE_SECONDS:g} s per review). The "
        f"longest chain of dependent requests of one cold image is {slowest_chain} ({_ms(chain_seconds)} of delay); "
        f"publishing took {measured.publish_seconds:.0f} s.", "",
        "| errors | total | p50 | p99 | slowest admission | denial codes |", "| --- | --- | --- | --- | --- | --- |",
        f"| {len(result.errors)} | {result.wall_seconds:.2f} s | {_ms(result.median)} | "
        f"{_ms(result.percentile(0.99))} | {_ms(max(result.latencies))} | "
        f"{', '.join(f'{code} x{n}' for code, n in codes.items()) or 'none'} |", "")
    report.first_errors(result)
    report.target(f"{LATENCY_IMAGES} cold images behind {LATENCY_DELAY_SECONDS * 1000:.0f} ms: every one admitted",
                  not result.errors,
                  f"{len(result.errors)} errors in {result.wall_seconds:.2f} s; a cold image needs "
                  f"{_ms(chain_seconds)} of delay in a row against a {DEADLINE_SECONDS:g} s deadline")


# --- the run ------------------------------------------------------------------------------------------------


def versions() -> list[str]:
    def version(*command: str, line: str = "") -> str:
        """The first line of a tool's version output (the first one starting with `line`, if given)."""
        try:
            output = subprocess.run([infra.tool(command[0]), *command[1:]], capture_output=True, text=True,
                                    timeout=30, check=False)
        except (infra.MissingToolError, subprocess.TimeoutExpired):
            return "unknown"
        lines = [text.strip() for text in (output.stdout + output.stderr).splitlines() if text.strip()]
        return next((text for text in lines if text.lower().startswith(line.lower())), "unknown")

    import aiohttp
    import fastapi
    import uvicorn

    return [
        f"- Python {platform.python_version()}, FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__} "
        f"(uvloop {importlib.metadata.version('uvloop')}), aiohttp {aiohttp.__version__} (trustgate's registry "
        "client), "
        f"httpx {httpx.__version__} (the benchmark's client)",
        f"- {version('docker-registry', '--version')}",
        f"- {version('skopeo', '--version')}; {version('gpg', '--version')}",
        f"- cosign {version('cosign', 'version', line='GitVersion')}; "
        f"notation {version('notation', 'version', line='Version')}",
        f"- {version('wrk', '--version')}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the results (Markdown)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, metavar="SCENARIO",
                        help=f"run only this scenario (repeatable; one of {', '.join(SCENARIOS)})")
    args = parser.parse_args(argv)
    chosen = set(args.only or SCENARIOS)
    started = time.monotonic()
    report = Report()
    machine = load.machine()
    with tempfile.TemporaryDirectory(prefix="trustgate-bench-") as temporary:
        work = Path(temporary)
        with world(work) as here:
            print("publishing and signing images ...", flush=True)
            wanted: list[tuple[Format, str]] = []
            if "warm" in chosen:
                wanted += [(f, "warm") for f in FORMATS]
            if "cold" in chosen:
                wanted += [(f, f"cold-{index}") for f in SIGNATURE_FORMATS for index in range(COLD_IMAGES_PER_FORMAT)]
            if "coalesce" in chosen:
                wanted += [(f, name) for f in SIGNATURE_FORMATS for name in ("burst", "pod")]
            published = here.publish_many(wanted)
            by_name = {(image.format, image.repository.rsplit("/", 1)[1]): image for image in published}
            config = here.trustgate_config("config")
            print(f"published {len(published)} images in {time.monotonic() - started:.0f} s", flush=True)
            if chosen & {"warm", "cold", "coalesce"}:
                with load.serving(load.trustgate_serve(config, [here.registry.host]), work / "trustgate",
                                  work / "trustgate.log") as trustgate, \
                        load.serving(load.FLOOR, work / "floor", work / "floor.log") as floor:
                    if "warm" in chosen:
                        warm(report, trustgate, floor, [by_name[(f, "warm")] for f in FORMATS], work)
                    if "cold" in chosen:
                        cold(report, trustgate, here, {
                            f: [by_name[(f, f"cold-{index}")] for index in range(COLD_IMAGES_PER_FORMAT)]
                            for f in SIGNATURE_FORMATS}, measure_rounds(here, work))
                    if "coalesce" in chosen:
                        coalesce(report, trustgate, here, {f: by_name[(f, "burst")] for f in SIGNATURE_FORMATS},
                                 {f: by_name[(f, "pod")] for f in SIGNATURE_FORMATS})
            if "rollout" in chosen:
                publishing = time.monotonic()
                images = here.publish_fast([(FORMATS[index % len(FORMATS)], f"rollout-{index}")
                                            for index in range(ROLLOUT_IMAGES)])
                rollout(report, here, config, images, work, time.monotonic() - publishing)
            if "slow" in chosen:
                slow(report, here, work)
            if "latency" in chosen:
                latency(report, here, work)
    write_results(args.output, machine, report, time.monotonic() - started)
    print(f"wrote {args.output}", flush=True)
    return 0


def write_results(path: Path, machine: dict[str, object], report: Report, seconds: float) -> None:
    met = sum(1 for _, ok, _ in report.verdicts if ok)
    header = [
        "# trustgate benchmark results", "",
        "Written by `make bench` (bench/__main__.py); do not edit by hand, run it again.", "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC in {seconds:.0f} s on "
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB "
        f"({platform.system()} {platform.release()}). Everything (registry, signers, trustgate, load generator) "
        "shares these cores, all on 127.0.0.1; plain-HTTP registry; `trustgate serve` with its default settings "
        "(HTTPS, log level info, verdict cache 600 s, tag cache 10 s).", "",
        *versions(), "",
        f"## Targets: {met} of {len(report.verdicts)} met", "",
        "| target | met | detail |", "| --- | --- | --- |",
        *(f"| {name} | {'yes' if ok else '**no**'} | {detail} |" for name, ok, detail in report.verdicts), "",
    ]
    path.write_text("\n".join([*header, *report.lines, *_scale_section(path)]).rstrip() + "\n")


def _scale_section(path: Path) -> list[str]:
    """The section `make bench-scale` wrote into the results file, kept as it is."""
    previous = path.read_text() if path.exists() else ""
    start = previous.find(SCALE_SECTION)
    if start < 0:
        return []
    end = previous.find("\n## ", start + len(SCALE_SECTION))
    return ["", previous[start:end if end >= 0 else len(previous)].rstrip()]


if __name__ == "__main__":
    raise SystemExit(main())
