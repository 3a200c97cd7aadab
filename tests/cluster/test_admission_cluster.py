"""Admission through a real kube-apiserver: the mutating webhook pins verified digests into the stored pod, and
TrustPolicy namespaceSelectors see the namespace labels the webhook watches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.cluster.apiserver import ApiServer
from tests.cluster.conftest import NAMESPACE, Process, PushImage, condition, wait_for
from tests.cluster.test_controller_cluster import (
    Webhook,
    _create_pod,
    _mutating_configuration,
    _validating_configuration,
)
from tests.e2e import infra
from tests.helpers import trust_policy, trust_store


def test_mutating_webhook_pins_digests_and_namespace_selectors_apply(
        cluster: ApiServer, start_trustgate: Callable[..., Process], registry: infra.Registry,
        lookaside: infra.Lookaside, gpg: infra.GpgKeys, push_image: PushImage,
        tmp_path: Path) -> None:
    (signed, digest), (unsigned, _) = push_image("pinning/app", "release-ed"), push_image("pinning/unsigned", None)
    for namespace, env in (("prod", "prod"), ("dev", "dev")):
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("label", "namespace", namespace, f"env={env}")
    cluster.apply(trust_store("pinning", {"ed": gpg.armored("release-ed")}), trust_policy(
        "pinning", [f"{registry.host}/pinning/**"],
        [{"name": "release", "gpg": {"trustStore": "pinning", "lookaside": lookaside.url}}],
        namespaceSelector={"matchLabels": {"env": "prod"}}))
    start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host", "127.0.0.1")
    wait_for("TrustPolicy pinning Ready", lambda: condition(cluster, "trustpolicy", "pinning").get("status") == "True")

    port = infra.free_port()
    # Images no policy covers are admitted here, so the namespace selector's effect is visible.
    webhook_process = start_trustgate("trustgate-webhook", "serve", "--namespace", NAMESPACE, "--host", "127.0.0.1",
                                      "--port", str(port), "--insecure-registry", registry.host, "--no-match", "allow",
                                      *infra.ALLOW_LOOPBACK)
    infra.wait_until_listening(port, webhook_process.process, timeout=60)
    cluster.apply(_validating_configuration(port), _mutating_configuration(port, resource="pods"))
    try:
        webhook = Webhook(cluster, port)
        ca = webhook.ca(tmp_path)
        webhook.wait_for_ca_bundle(ca, "validatingwebhookconfiguration", "mutatingwebhookconfiguration")
        wait_for("the webhook to load a bundle", lambda: webhook.generation(ca))
        wait_for("the webhooks to take part in admission", lambda: "no signatures found" in _create_pod(
            cluster, "probe", unsigned, dry_run=True, namespace="prod")[1])

        admitted, error = _create_pod(cluster, "signed", signed, namespace="prod")
        assert admitted, error
        stored = cluster.get("pod", "-n", "prod", "signed")
        assert stored["spec"]["containers"][0]["image"] == f"{signed}@{digest}"

        admitted, error = _create_pod(cluster, "unsigned", unsigned, namespace="prod")
        assert not admitted and "no signatures found" in error, error
        # In a namespace outside the selector the policy does not apply (and no-match is allow here).
        admitted, error = _create_pod(cluster, "unsigned", unsigned, namespace="dev")
        assert admitted, error
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "trustgate")
        cluster.kubectl("delete", "trustpolicy,truststore", "pinning")
