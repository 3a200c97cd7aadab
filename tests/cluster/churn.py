"""Policy churn under load on the real API server: the probe TrustStore and TrustPolicy change every second while
AdmissionReviews go to the in-cluster webhook at a steady rate.

It fails on any answer that is not a review (a 500, a refused connection), on any verdict other than the one of
the generation the answer reports, on a generation more than CONVERGENCE_BOUND_SECONDS behind the published one,
on webhook RSS growing by 10% or more after warm-up, and on open file descriptors or gpg homes that keep growing.
The short form runs in `make e2e-cluster`; `make soak-cluster` runs it for SOAK_CLUSTER_SECONDS (default 600)
on a control plane of its own:

    python -m tests.cluster.churn [--seconds N] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes import client

from tests.cluster import apiserver
from tests.cluster.apiserver import NAMESPACE, ApiServer
from tests.cluster.probe import (
    CONVERGENCE_BOUND_SECONDS,
    PROBE,
    TRUSTED_KEY,
    UNTRUSTED_KEY,
    BundleHistory,
    ProbeImages,
    Reviewer,
    admin_client,
    probe_policy,
    probe_store,
    problems,
    process_figures,
    push_probe_images,
    webhook_tls,
)
from tests.e2e import infra
from tests.soak import report
from webhook.policy.models import GROUP, VERSION

REVIEWS_PER_SECOND = 8
CHANGE_SECONDS = 1.0
SAMPLE_SECONDS = 5.0
MAX_RSS_GROWTH = 0.10


class Load:
    """AdmissionReviews at a steady rate over all `ports`, alternately for the signed and the unsigned probe
    image, from two threads (one slow answer does not stall the other)."""

    THREADS = 2

    def __init__(self, reviewer: Reviewer, ports: list[int], rate: float) -> None:
        self.reviewer, self.ports, self.rate = reviewer, ports, rate
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(first,), daemon=True)
                         for first in range(self.THREADS)]

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _send(self, number: int) -> None:
        while not self._stop.wait(max(0.0, self._started + number / self.rate - time.monotonic())):
            port = self.ports[number % len(self.ports)]
            self.reviewer.review(port, ("signed", "unsigned")[number // len(self.ports) % 2])
            number += self.THREADS


def flat(values: list[int]) -> bool:
    """No upward trend: the median of the last third of the samples is at most 2 above that of the first third
    (medians, because connections opened and closed by the load come and go between samples)."""
    third = max(len(values) // 3, 1)
    return statistics.median(values[-third:]) <= statistics.median(values[:third]) + 2


def run(cluster: ApiServer, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys,
        images: ProbeImages, seconds: float, work: Path) -> dict[str, Any]:
    custom = client.CustomObjectsApi(admin_client(cluster))
    armored = {key: gpg.armored(key) for key in (TRUSTED_KEY, UNTRUSTED_KEY)}
    cluster.apply(probe_store(gpg, trusted=True), probe_policy(images, lookaside, denied=False))
    temporary = {name: Path(tempfile.mkdtemp(prefix="tg-c-", dir=work)) for name in ("controller", "webhook")}
    port = infra.free_port()
    controller = cluster.start_trustgate(
        "trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host", "127.0.0.1",
        log=work / "controller.log", env={"TMPDIR": str(temporary["controller"])})
    webhook = cluster.start_trustgate(
        "trustgate-webhook", "serve", "--namespace", NAMESPACE, "--host", "127.0.0.1", "--port", str(port),
        "--insecure-registry", registry.host, *infra.ALLOW_LOOPBACK, "--log-level", "warning",
        log=work / "webhook.log", env={"TMPDIR": str(temporary["webhook"])})
    warm_up = min(max(seconds * 0.1, 10.0), seconds / 2)
    samples: list[dict[str, dict[str, int]]] = []
    changes = 0
    try:
        infra.wait_until_listening(port, webhook, timeout=60)
        reviewer = Reviewer(webhook_tls(cluster, work)[0], images)
        with BundleHistory(cluster, images) as history:
            history.wait_newer(0)
            first = history.latest()
            while not reviewer.serves(port, first):
                time.sleep(0.2)
            with Load(reviewer, [port], REVIEWS_PER_SECOND):
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < seconds:
                    # Store and policy change independently: the four combinations follow each other.
                    trusted, denied = changes % 4 < 2, changes % 2 == 1
                    key = TRUSTED_KEY if trusted else UNTRUSTED_KEY
                    custom.patch_cluster_custom_object(GROUP, VERSION, "truststores", PROBE, {
                        "spec": {"keys": [{"name": key, "gpg": armored[key]}]}})
                    custom.patch_cluster_custom_object(GROUP, VERSION, "trustpolicies", PROBE, {
                        "spec": {"deniedDigests": [images.digest] if denied else []}})
                    changes += 1
                    if elapsed >= warm_up + len(samples) * SAMPLE_SECONDS:
                        samples.append({"webhook": process_figures(webhook.pid, temporary["webhook"]),
                                        "controller": process_figures(controller.pid, temporary["controller"])})
                    time.sleep(max(0.0, started + changes * CHANGE_SECONDS - time.monotonic()))
            samples.append({"webhook": process_figures(webhook.pid, temporary["webhook"]),
                            "controller": process_figures(controller.pid, temporary["controller"])})
            time.sleep(1)  # the last change reaches the history before the answers are checked
            generations = len([generation for generation in history.published if generation > first])
            found = problems(reviewer.answers, history, CONVERGENCE_BOUND_SECONDS)
        reviewer.close()
        alive = {"controller": controller.poll() is None, "webhook": webhook.poll() is None}
        # trustgate's own gpg homes only: the signing keys' gpg-agent of the test setup lives under `work` too.
        gpg_processes = [command for directory in temporary.values()
                         for command in infra.gpg_processes_naming(directory)]
    finally:
        for process in (webhook, controller):
            infra.stop(process)
    left_behind = [name for directory in temporary.values() for name in infra.trustgate_temporaries(directory)]
    outcomes = Counter("error" if answer.status != 200 else "admitted" if answer.allowed else "denied"
                       for answer in reviewer.answers)

    def series(process: str, figure: str) -> list[int]:
        return [sample[process][figure] for sample in samples]

    rss = series("webhook", "rssKiB")
    growth = (rss[-1] - rss[0]) / rss[0]
    figures = {
        "seconds": round(seconds), "changes": changes, "generations": generations,
        "reviews": len(reviewer.answers), "reviewsPerSecond": REVIEWS_PER_SECOND,
        "admitted": outcomes["admitted"], "denied": outcomes["denied"], "errors": outcomes["error"],
        "problems": found[:50], "problemCount": len(found),
        "rss": {"afterWarmUpKiB": rss[0], "atEndKiB": rss[-1]}, "rssGrowth": round(growth, 4),
        "controllerRss": {"afterWarmUpKiB": series("controller", "rssKiB")[0],
                          "atEndKiB": series("controller", "rssKiB")[-1]},
        "fds": {"afterWarmUp": series("webhook", "fds")[0], "atEnd": series("webhook", "fds")[-1],
                "max": max(series("webhook", "fds")), "samples": series("webhook", "fds")},
        "gpgHomes": {"afterWarmUp": series("webhook", "gpgHomes")[0], "atEnd": series("webhook", "gpgHomes")[-1],
                     "max": max(series("webhook", "gpgHomes")), "samples": series("webhook", "gpgHomes")},
        "controllerFds": {"afterWarmUp": series("controller", "fds")[0], "atEnd": series("controller", "fds")[-1],
                          "samples": series("controller", "fds")},
        "sampleSeconds": SAMPLE_SECONDS,
        "gpgProcesses": len(gpg_processes), "leftBehind": left_behind, "alive": alive,
    }
    figures["passed"] = (not found and outcomes["error"] == 0 and outcomes["admitted"] > 0 and outcomes["denied"] > 0
                         and growth < MAX_RSS_GROWTH and flat(series("webhook", "fds"))
                         and flat(series("webhook", "gpgHomes")) and flat(series("controller", "fds"))
                         and not gpg_processes and not left_behind and all(alive.values()))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_CLUSTER_SECONDS", "600")))
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trustgate-churn-"))
    cluster = apiserver.start(work / "kube")
    registry = infra.start_registry(work / "registry")
    lookaside = infra.start_lookaside(work / "lookaside")
    try:
        apiserver.install_trustgate_resources(cluster)
        with infra.gpg_keys(work / "gnupg") as gpg:
            for key in (TRUSTED_KEY, UNTRUSTED_KEY):
                gpg.generate(key, "ed25519")
            registries_d = lookaside.write_registries_d(work / "registries.d", registry)
            images = push_probe_images(registry, registries_d, gpg, work)
            figures = run(cluster, registry, lookaside, gpg, images, args.seconds, work)
    finally:
        lookaside.stop()
        registry.stop()
        cluster.stop()
    return report(figures, args.output)


if __name__ == "__main__":
    sys.exit(main())
