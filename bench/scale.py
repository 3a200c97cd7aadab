"""`make bench-scale`: trustgate with a thousand TrustPolicies, against itself with one, in one run.

Writes its own section of bench/RESULTS.md (`make bench` keeps it): configuration load and compile, warm
admission throughput, policy matching, memory, and a bundle swap that changes one policy, each as a ratio
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import load
from bench.__main__ import RESULTS, SCALE_SECTION, Report, versions
from bench.scale_config import scale_documents
from bench.world import FORMATS, Image, world
from tests.e2e.conftest import write_config
from tests.helpers import trust_policy
from webhook.config import load_resources
from webhook.policy.compile import PolicySet, compile_policy_set

POLICIES = 1_000
STORES = 100
KEYS = 1_000
LOAD_RUNS = 3
WARM_ROUNDS = 5
WARM_SECONDS = 5.0
WARM_CONNECTIONS = 32
MATCH_REPOSITORIES = 2_000

# The targets of the policy-scale issue.
TARGET_LOAD_RATIO = 4.0
TARGET_WARM_RATIO = 0.9


def _median_seconds(run: Callable[[], object], times: int) -> float:
    timings = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _cli_load(config: Path) -> None:
    """`trustgate verify --no-match allow` of an image no policy covers: process start, load and compile."""
    subprocess.run([sys.executable, "-m", "webhook", "verify", "--config", str(config), "--no-match", "allow",
                    "nothing.scale.example/none:1"], check=True, capture_output=True, timeout=600)


def _compile(config: Path, previous: PolicySet | None = None) -> PolicySet:
    return compile_policy_set(load_resources(config), previous=previous)


def load_and_compile(report: Report, one: Path, scale: Path, changed: Path) -> None:
    cli: dict[Path, list[float]] = {one: [], scale: []}
    for _ in range(LOAD_RUNS):  # interleaved, so that drift in the machine's speed favours neither
        for config, timings in cli.items():
            started = time.perf_counter()
            _cli_load(config)
            timings.append(time.perf_counter() - started)
    one_cli, scale_cli = statistics.median(cli[one]), statistics.median(cli[scale])

    def compiled_and_closed(config: Path) -> None:
        _compile(config).close()

    one_compile = _median_seconds(lambda: compiled_and_closed(one), LOAD_RUNS)
    scale_compile = _median_seconds(lambda: compiled_and_closed(scale), LOAD_RUNS)

    swaps, fulls = [], []
    for _ in range(LOAD_RUNS):
        serving = _compile(scale)
        resources = load_resources(changed)
        started = time.perf_counter()
        swapped = compile_policy_set(resources, previous=serving)
        swaps.append(time.perf_counter() - started)
        started = time.perf_counter()
        full = compile_policy_set(resources)
        fulls.append(time.perf_counter() - started)
        for policies in (serving, swapped, full):
            policies.close()
    swap, full_compile = statistics.median(swaps), statistics.median(fulls)
    ratio = scale_cli / one_cli
    report.add(
        "### Configuration load and compile", "",
        f"`trustgate verify --no-match allow` of an image no policy covers (process start, YAML load, compile), "
        f"{LOAD_RUNS} interleaved runs each, median; and the same load and compile inside one process "
        f"(`load_resources` + `compile_policy_set`, median of {LOAD_RUNS}).", "",
        "| configuration | CLI wall time | in-process load + compile |", "| --- | --- | --- |",
        f"| one TrustPolicy (1 TrustStore, 3 keys) | {one_cli:.2f} s | {one_compile * 1000:.0f} ms |",
        f"| {POLICIES} TrustPolicies, {STORES} TrustStores, {KEYS} keys | {scale_cli:.2f} s | "
        f"{scale_compile * 1000:.0f} ms |",
        f"| ratio | {ratio:.1f}x | {scale_compile / one_compile:.1f}x |", "",
        "### Bundle swap", "",
        f"The {POLICIES}-policy configuration with one TrustPolicy changed, compiled against the generation being "
        f"served (unchanged TrustStores and policies reused) and from nothing; YAML already loaded; median of "
        f"{LOAD_RUNS}.", "",
        f"Swap {swap * 1000:.1f} ms, full compile {full_compile * 1000:.0f} ms: the swap costs "
        f"{swap / full_compile:.1%} of a full compile.", "")
    report.target(f"{POLICIES}-policy load and compile <= {TARGET_LOAD_RATIO:g}x one policy's (CLI)",
                  ratio <= TARGET_LOAD_RATIO, f"{ratio:.1f}x ({scale_cli:.2f} s vs {one_cli:.2f} s)")


def matching(report: Report, scale: Path) -> None:
    policies = _compile(scale)
    try:
        rng = random.Random(7)
        repositories = [f"registry-{rng.randrange(12)}.scale.example/"
                        + rng.choice([f"team-{rng.randrange(POLICIES)}/app", f"shared/team-{rng.randrange(POLICIES)}-x",
                                      "elsewhere/app"]) for _ in range(MATCH_REPOSITORIES)]
        for repository in repositories:  # every candidate glob's regular expression built once
            policies.matching(repository)
        indexed = _median_seconds(lambda: [policies.matching(repository) for repository in repositories], 3)
        scanned = _median_seconds(lambda: [[policy for policy in policies.policies if policy.matches(repository)]
                                           for repository in repositories], 3)
        same = all(policies.matching(repository) == [policy for policy in policies.policies
                                                      if policy.matches(repository)] for repository in repositories)
    finally:
        policies.close()
    report.add(
        "### Policy matching", "",
        f"{MATCH_REPOSITORIES} repositories (covered by one policy, by none on a covered registry, and on registries "
        f"no policy names) matched against {POLICIES} TrustPolicies ({2 * POLICIES} globs), median of 3 passes.", "",
        f"Index: {indexed / MATCH_REPOSITORIES * 1e6:.1f} us per repository; trying every glob: "
        f"{scanned / MATCH_REPOSITORIES * 1e6:.0f} us ({scanned / indexed:.0f}x the index). Same answers: "
        f"{'yes' if same else '**no**'}.", "")


def warm(report: Report, servers: dict[str, load.Server], images: Sequence[Image], work: Path) -> None:
    body = load.review("warm", *(image.by_digest for image in images))

    async def prime(server: load.Server) -> None:
        async with load.connections(server, 1) as clients:
            primed = await load.admit_all(clients, server.url, [body])
        if primed.errors:
            raise RuntimeError(f"warm-path images were not admitted: {primed.errors}")

    for server in servers.values():
        asyncio.run(prime(server))
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for index in range(WARM_ROUNDS):
        order = list(servers) if index % 2 == 0 else list(reversed(servers))
        for name in order:
            result = load.wrk(servers[name].url, body, work, connections=WARM_CONNECTIONS, seconds=WARM_SECONDS)
            rates[name].append(result.requests_per_second)
    ratios = [scale / one for scale, one in zip(rates["scale"], rates["one"], strict=True)]
    ratio = statistics.median(ratios)
    rss = {name: (server.rss_mib(), server.peak_rss_mib()) for name, server in servers.items()}
    report.add(
        "### Warm admission and memory", "",
        f"`trustgate serve` (production settings) with the one-policy configuration and with {POLICIES} more "
        f"TrustPolicies beside it; pods with 3 verified images (one per format, by digest), {WARM_CONNECTIONS} "
        f"HTTPS keep-alive connections (wrk), {WARM_ROUNDS} interleaved rounds of {WARM_SECONDS:g} s.", "",
        "| configuration | req/s per round | RSS after the rounds | peak RSS |", "| --- | --- | --- | --- |",
        *(f"| {label} | {', '.join(f'{rate:.0f}' for rate in rates[name])} | {rss[name][0]:.0f} MiB | "
          f"{rss[name][1]:.0f} MiB |" for name, label in (("one", "one-policy set"),
                                                           ("scale", f"{POLICIES} more TrustPolicies"))), "",
        f"Median ratio of throughput {ratio:.2f}; memory for the {POLICIES} policies and {KEYS} keys: "
        f"{rss['scale'][0] - rss['one'][0]:+.0f} MiB.", "")
    report.target(f"warm throughput with {POLICIES} policies >= {TARGET_WARM_RATIO:.0%} of one policy's",
                  ratio >= TARGET_WARM_RATIO, f"median ratio {ratio:.2f}")


def write_section(path: Path, machine: dict[str, Any], report: Report, seconds: float) -> None:
    """Replace this benchmark's section of RESULTS.md (or add it), leaving the rest as `make bench` wrote it."""
    text = path.read_text() if path.exists() else "# trustgate benchmark results\n"
    before, _, after = text.partition(SCALE_SECTION)
    following = after.find("\n## ")
    rest = after[following:] if following >= 0 else ""
    met = sum(1 for _, ok, _ in report.verdicts if ok)
    section = [
        SCALE_SECTION, "",
        f"Written by `make bench-scale` (bench/scale.py); do not edit by hand. Run "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC in {seconds:.0f} s on {machine['cpu']}, "
        f"{machine['cores']} cores (load average {os.getloadavg()[0]:.1f} at the end: the ratios compare runs made "
        "side by side on a machine shared with other work); everything on 127.0.0.1. The configuration: "
        f"{STORES} TrustStores holding {KEYS} "
        f"keys in all (Ed25519 OpenPGP keys, ECDSA P-256 cosign keys and self-signed CA certificates, in turn), "
        f"{POLICIES} TrustPolicies, each with a GPG, a cosign and a Notation authority naming one store (the GPG and "
        f"cosign ones selecting half its keys of their kind) and two globs on one of ten registries.", "",
        *versions(), "",
        f"Targets: {met} of {len(report.verdicts)} met.", "",
        "| target | met | detail |", "| --- | --- | --- |",
        *(f"| {name} | {'yes' if ok else '**no**'} | {detail} |" for name, ok, detail in report.verdicts), "",
        *report.lines,
    ]
    path.write_text(before.rstrip() + "\n\n" + "\n".join(section).rstrip() + "\n" + rest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=RESULTS, help="the results file whose section is written")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = Report()
    machine = load.machine()
    with tempfile.TemporaryDirectory(prefix="trustgate-bench-scale-") as temporary:
        work = Path(temporary)
        print(f"generating {KEYS} keys for {POLICIES} policies ...", flush=True)
        documents = scale_documents(work, policies=POLICIES, stores=STORES, keys=KEYS)
        one = write_config(work / "one", *scale_documents(work / "one-keys", policies=1, stores=1, keys=3))
        scale = write_config(work / "scale", *documents)
        changed_policy = trust_policy("team-0", ["registry-0.scale.example/team-0/**"],
                                      documents[STORES]["spec"]["authorities"], threshold=1)
        changed = write_config(work / "changed", *documents[:STORES], changed_policy, *documents[STORES + 1:])
        load_and_compile(report, one, scale, changed)
        matching(report, scale)
        with world(work / "world") as here:
            images = here.publish_many([(image_format, "warm") for image_format in FORMATS])
            served = here.trustgate_config("served")
            scale_served = write_config(work / "served-scale", *documents)
            (scale_served / "world.yaml").write_text((served / "trust.yaml").read_text())
            with load.serving(load.trustgate_serve(served, [here.registry.host]), work / "one-serve",
                              work / "one-serve.log") as one_server, \
                    load.serving(load.trustgate_serve(scale_served, [here.registry.host]), work / "scale-serve",
                                 work / "scale-serve.log", startup_seconds=300) as scale_server:
                warm(report, {"one": one_server, "scale": scale_server}, images, work)
    write_section(args.output, machine, report, time.monotonic() - started)
    print(f"wrote the policy-scale section of {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
