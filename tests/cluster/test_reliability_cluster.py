"""Reliability on the real API server: an API server outage, replicas converging on a new generation, policy
churn under admission load.

Every AdmissionReview goes straight to a webhook replica; its answer must be the verdict of the policy generation
it reports (tests/cluster/probe.py). Figures are printed, and written as JSON to $CLUSTER_FIGURES when set
(`make soak-cluster` collects them into docs/reliability.md).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import churn
from tests.cluster.apiserver import ApiServer
from tests.cluster.conftest import NAMESPACE, Process, wait_for
from tests.cluster.probe import (
    CONVERGENCE_BOUND_SECONDS,
    PROBE,
    BundleHistory,
    ProbeImages,
    Reviewer,
    percentiles,
    probe_policy,
    probe_store,
    problems,
    push_probe_images,
    webhook_tls,
)
from tests.e2e import infra

OUTAGE_SECONDS = float(os.environ.get("CLUSTER_OUTAGE_SECONDS", "30"))
CONVERGENCE_CHANGES = 20


def record_figures(name: str, figures: dict[str, Any]) -> None:
    print(f"{name}: {json.dumps(figures)}")
    target = os.environ.get("CLUSTER_FIGURES")
    if target:
        path = Path(target)
        recorded = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**recorded, name: figures}, indent=2) + "\n")


@pytest.fixture
def images(registry: infra.Registry, registries_d: Path, gpg: infra.GpgKeys,
           tmp_path_factory: pytest.TempPathFactory) -> ProbeImages:
    return push_probe_images(registry, registries_d, gpg, tmp_path_factory.mktemp("probe"))


@pytest.fixture(autouse=True)
def _clean(cluster: ApiServer) -> Any:
    cluster.kubectl("delete", "lease", "-n", NAMESPACE, "trustgate-controller", "--ignore-not-found")
    yield
    cluster.kubectl("delete", "trustpolicies", PROBE, "after-outage", "--ignore-not-found")
    cluster.kubectl("delete", "truststore", PROBE, "--ignore-not-found")


def _serve(start_trustgate: Callable[..., Process], registry: infra.Registry, port: int, *extra: str,
           name: str) -> Process:
    return start_trustgate("trustgate-webhook", "serve", "--namespace", NAMESPACE, "--host", "127.0.0.1", "--port",
                           str(port), "--insecure-registry", registry.host, *infra.ALLOW_LOOPBACK, *extra, name=name)


def test_webhooks_ride_out_an_api_server_outage_and_follow_changes_made_after_it(
        cluster: ApiServer, start_trustgate: Callable[..., Process], registry: infra.Registry,
        lookaside: infra.Lookaside, gpg: infra.GpgKeys, images: ProbeImages, tmp_path: Path) -> None:
    cluster.apply(probe_store(gpg, trusted=True), probe_policy(images, lookaside, denied=False))
    controller = start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE,
                                 "--webhook-host", "127.0.0.1")
    with BundleHistory(cluster, images) as history:
        running_port = infra.free_port()
        running = _serve(start_trustgate, registry, running_port, name="running")
        infra.wait_until_listening(running_port, running.process, timeout=60)
        ca, cert, key = webhook_tls(cluster, tmp_path)
        reviewer = Reviewer(ca, images)
        wait_for("the running replica to serve the bundle admitting the signed image",
                 lambda: (generation := reviewer.ready_generation(running_port)) is not None
                 and generation == history.latest() and history.published[generation].admits_signed)
        assert reviewer.review(running_port, "signed").allowed

        cluster.stop_api()
        stopped = time.monotonic()
        before = reviewer.ready_generation(running_port)  # no bundle can arrive from now on
        assert before is not None and history.published[before].admits_signed
        # Started during the outage: one with its certificate from files (it listens, but has no bundle), one
        # that reads its certificate from the cluster (it waits for the API server).
        file_tls_port, cluster_tls_port = infra.free_port(), infra.free_port()
        file_tls = _serve(start_trustgate, registry, file_tls_port, "--tls-cert", str(cert), "--tls-key", str(key),
                          name="started-during-outage")
        cluster_tls = _serve(start_trustgate, registry, cluster_tls_port, name="started-during-outage-cluster-tls")
        infra.wait_until_listening(file_tls_port, file_tls.process, timeout=60)
        rounds = 0
        while time.monotonic() - stopped < OUTAGE_SECONDS:
            for image in ("signed", "unsigned"):
                answer = reviewer.review(running_port, image)
                assert answer.generation == before, answer
            assert reviewer.ready_generation(running_port) == before
            assert reviewer.ready_generation(file_tls_port) is None
            not_ready = reviewer.review(file_tls_port, "signed")
            assert (not_ready.status, not_ready.allowed) == (200, False), not_ready
            assert "not ready: no policy loaded" in not_ready.message
            assert [process.process.poll() for process in (controller, running, file_tls, cluster_tls)] == [None] * 4
            rounds += 1
            time.sleep(1)

        cluster.start_api()
        back = time.monotonic()
        cluster.apply(probe_policy(images, lookaside, denied=True, name="after-outage"))
        changed = time.monotonic()
        after = history.wait_newer(before, timeout=120)
        published = time.monotonic()
        assert not history.published[after].admits_signed
        infra.wait_until_listening(cluster_tls_port, cluster_tls.process, timeout=60)
        enforced = {}
        for port in (running_port, file_tls_port, cluster_tls_port):
            wait_for(f"replica on port {port} to serve generation {after}",
                     functools.partial(reviewer.serves, port, after), timeout=60, interval=0.1)
            enforced[port] = time.monotonic()
            answer = reviewer.review(port, "signed")
            assert not answer.allowed and answer.generation is not None and answer.generation >= after, answer
        reviewer.close()

    checked = [answer for answer in reviewer.answers if answer.port != file_tls_port or answer.sent > back]
    assert problems(checked, history, CONVERGENCE_BOUND_SECONDS) == []
    assert [process.process.poll() for process in (controller, running, file_tls, cluster_tls)] == [None] * 4
    for process in (controller, running, file_tls, cluster_tls):
        assert "Traceback" not in process.output()
    record_figures("outage", {
        "outageSeconds": round(back - stopped, 1), "reviewsDuringOutage": 2 * rounds,
        "apiBackToPublishedSeconds": round(published - back, 2),
        "changeToPublishedSeconds": round(published - changed, 2),
        "apiBackToEnforcedSeconds": round(max(enforced.values()) - back, 2),
    })


def test_replicas_converge_on_each_new_generation_within_the_bound(
        cluster: ApiServer, start_trustgate: Callable[..., Process], registry: infra.Registry,
        lookaside: infra.Lookaside, gpg: infra.GpgKeys, images: ProbeImages, tmp_path: Path) -> None:
    cluster.apply(probe_store(gpg, trusted=True), probe_policy(images, lookaside, denied=False))
    start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host", "127.0.0.1")
    ports = [infra.free_port() for _ in range(3)]
    replicas = [_serve(start_trustgate, registry, port, name=f"replica-{index}") for index, port in enumerate(ports)]
    for port, replica in zip(ports, replicas, strict=True):
        infra.wait_until_listening(port, replica.process, timeout=60)
    ca, _, _ = webhook_tls(cluster, tmp_path)
    reviewer = Reviewer(ca, images)
    publish, converge = [], []
    with BundleHistory(cluster, images) as history:
        # The controller may first publish what an earlier test left: wait for the bundle of this test's objects.
        generation = wait_for("every replica to serve the bundle admitting the signed image", lambda: (
            history.latest() and history.published[history.latest()].admits_signed
            and all(reviewer.ready_generation(port) == history.latest() for port in ports) and history.latest()))
        with churn.Load(reviewer, ports, rate=6):
            for change in range(CONVERGENCE_CHANGES):
                changed = time.monotonic()
                cluster.apply(probe_policy(images, lookaside, denied=change % 2 == 0))
                generation = history.wait_newer(generation)
                seen = history.published[generation].seen
                assert history.published[generation].admits_signed == (change % 2 == 1)
                for port in ports:
                    wait_for(f"replica on port {port} to serve generation {generation}",
                             functools.partial(reviewer.serves, port, generation), interval=0.05)
                converge.append(time.monotonic() - seen)
                publish.append(seen - changed)
    reviewer.close()
    found = problems(reviewer.answers, history, CONVERGENCE_BOUND_SECONDS)
    assert found == [], "\n".join(found[:20])
    assert max(converge) < CONVERGENCE_BOUND_SECONDS
    record_figures("convergence", {
        "replicas": len(ports), "changes": CONVERGENCE_CHANGES, "reviews": len(reviewer.answers),
        "changeToPublishedSeconds": percentiles(publish), "publishedToAllReplicasSeconds": percentiles(converge),
        "boundSeconds": CONVERGENCE_BOUND_SECONDS,
    })


def test_policy_churn_under_load_for_a_minute(
        cluster: ApiServer, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys,
        images: ProbeImages, tmp_path: Path) -> None:
    figures = churn.run(cluster, registry, lookaside, gpg, images, seconds=float(os.environ.get("CHURN_SECONDS", "60")),
                        work=tmp_path)
    record_figures("churn", figures)
    assert figures["problems"] == [], "\n".join(figures["problems"])
    assert figures["passed"], figures
