"""Kubernetes Events from the webhook on a real kube-apiserver: a denial is an Event with its public code on the
namespace (CREATE) or on the object (UPDATE), and a burst of identical denials is one Event whose count rises,
costing the API server a bounded number of writes without slowing admission."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.cluster.apiserver import ApiServer
from tests.cluster.conftest import NAMESPACE, Process, PushImage, condition, wait_for
from tests.cluster.test_controller_cluster import Webhook, _create_pod, _pod, _validating_configuration
from tests.e2e import infra
from tests.helpers import trust_policy, trust_store

BURST = 200


def _event_writes(cluster: ApiServer) -> int:
    """Event creates and patches the API server has served so far, from its own request metrics."""
    metrics = cluster.kubectl("get", "--raw", "/metrics").stdout
    return sum(int(float(value)) for labels, value in re.findall(r"^apiserver_request_total\{([^}]*)\} (\S+)$",
                                                                  metrics, re.MULTILINE)
               if 'resource="events"' in labels and re.search(r'verb="(POST|PATCH|CREATE)"', labels))


def _denied_events(cluster: ApiServer, namespace: str) -> list[dict[str, Any]]:
    return [event for event in cluster.get("events", "-n", namespace)["items"] if event["reason"] == "ImageDenied"]


def test_denials_become_aggregated_events_with_their_code(
        cluster: ApiServer, start_trustgate: Callable[..., Process], registry: infra.Registry,
        lookaside: infra.Lookaside, gpg: infra.GpgKeys, push_image: PushImage,
        tmp_path: Path) -> None:
    (signed, _), (unsigned, _) = push_image("events/app", "release-ed"), push_image("events/unsigned", None)
    cluster.kubectl("create", "namespace", "shop")
    cluster.apply(trust_store("events", {"ed": gpg.armored("release-ed")}), trust_policy(
        "events", [f"{registry.host}/events/**"],
        [{"name": "release", "gpg": {"trustStore": "events", "lookaside": lookaside.url}}]))
    start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host", "127.0.0.1")
    wait_for("TrustPolicy events Ready", lambda: condition(cluster, "trustpolicy", "events").get("status") == "True")
    port = infra.free_port()
    # As the webhook's own user: the Events are written with the permissions deploy/rbac.yaml grants.
    webhook_process = start_trustgate("trustgate-webhook", "serve", "--namespace", NAMESPACE, "--host", "127.0.0.1",
                                      "--port", str(port), "--insecure-registry", registry.host,
                                      *infra.ALLOW_LOOPBACK)
    infra.wait_until_listening(port, webhook_process.process, timeout=60)
    cluster.apply(_validating_configuration(port))
    api = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig("admin"))))
    try:
        webhook = Webhook(cluster, port)
        ca = webhook.ca(tmp_path)
        webhook.wait_for_ca_bundle(ca, "validatingwebhookconfiguration")
        wait_for("the webhook to load a bundle", lambda: webhook.generation(ca))
        wait_for("the webhook to take part in admission", lambda: "no signatures found" in _create_pod(
            cluster, "probe", unsigned, dry_run=True, namespace="shop")[1])

        def create(name: str, dry_run: bool) -> float:
            started = time.perf_counter()
            try:
                api.create_namespaced_pod("shop", _pod(name, unsigned, "shop"), dry_run="All" if dry_run else None)
            except ApiException as exc:
                assert "TG-SIG-NONE" in str(exc.body), exc.body
            else:
                raise AssertionError(f"pod {name} with an unsigned image was admitted")
            return time.perf_counter() - started

        # Dry runs write no Event: their latency is the baseline a denial has without any.
        baseline = [create(f"dry-{index}", True) for index in range(20)]
        assert _denied_events(cluster, "shop") == []

        writes_before = _event_writes(cluster)
        durations = [create(f"web-{index}", False) for index in range(BURST)]
        [event] = wait_for(f"one Event counting {BURST} denials", lambda: [
            event for event in _denied_events(cluster, "shop") if event.get("count") == BURST])
        writes = _event_writes(cluster) - writes_before

        assert event["type"] == "Warning" and event["source"]["component"] == "trustgate-webhook"
        assert event["involvedObject"]["kind"] == "Namespace" and event["involvedObject"]["name"] == "shop"
        assert "[TG-SIG-NONE]" in event["message"] and unsigned in event["message"], event["message"]
        assert len(_denied_events(cluster, "shop")) == 1
        # One create, then at most one patch per second of the burst (and the per-object token bucket's burst).
        assert 1 <= writes <= 26, writes
        # Not slowed: recording the Events happens off the admission path.
        assert statistics.median(durations) <= 3 * statistics.median(baseline) + 0.05, (durations, baseline)

        # An existing object: the Event is on the object itself.
        admitted, error = _create_pod(cluster, "web", signed, namespace="shop")
        assert admitted, error
        update = cluster.kubectl("set", "image", "-n", "shop", "pod/web", f"app={unsigned}", check=False)
        assert update.returncode != 0 and "TG-SIG-NONE" in update.stderr, update.stderr
        on_pod = wait_for("an Event on pod web", lambda: [
            event for event in _denied_events(cluster, "shop") if event["involvedObject"]["kind"] == "Pod"])
        assert on_pod[0]["involvedObject"]["name"] == "web"
        assert on_pod[0]["involvedObject"]["uid"] == cluster.get("pod", "-n", "shop", "web")["metadata"]["uid"]
    finally:
        api.api_client.close()
        cluster.kubectl("delete", "validatingwebhookconfiguration", "trustgate")
        cluster.kubectl("delete", "trustpolicy,truststore", "events")
        cluster.kubectl("delete", "namespace", "shop", "--wait=false")
