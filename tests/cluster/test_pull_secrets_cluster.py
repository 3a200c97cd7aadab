"""A pod's own pull credentials through a real kube-apiserver: a private registry (docker-registry with
htpasswd) that only team A's pull Secret can read. Pods in team A are admitted, the same image in team B
(another Secret, or none) is denied with the registry's refusal, whichever namespace asks first and whether
the caches are warm or cold; the Secret is named by the pod or by its ServiceAccount. With
--no-pod-pull-secrets team A is denied too. The password never reaches a log."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.apiserver import ApiServer
from tests.cluster.conftest import NAMESPACE, Process, condition, wait_for
from tests.cluster.test_controller_cluster import Webhook, _validating_configuration
from tests.e2e import infra
from tests.helpers import trust_policy, trust_store

TEAM_A = ("team-a-puller", "team-a-Pull-Passw0rd")
TEAM_B = ("team-b-puller", "team-b-Pull-Passw0rd")


def _pull_secret(namespace: str, registry: str, credentials: tuple[str, str]) -> dict[str, Any]:
    auth = base64.b64encode(":".join(credentials).encode()).decode()
    config = json.dumps({"auths": {f"http://{registry}/v2/": {"auth": auth}}})
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "regcred", "namespace": namespace},
            "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}}


def _service_account(namespace: str, secrets: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "puller", "namespace": namespace},
            "imagePullSecrets": [{"name": name} for name in secrets]}


def _admit(cluster: ApiServer, namespace: str, image: str, *, pull_secret: bool = False,
           service_account: str | None = None) -> tuple[bool, str]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": "regcred"}]
    if service_account:
        spec["serviceAccountName"] = service_account
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": namespace}, "spec": spec}
    completed = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod), check=False)
    return completed.returncode == 0, completed.stderr


def test_only_the_namespace_whose_secret_reads_the_image_admits_it(
        cluster: ApiServer, start_trustgate: Callable[..., Process], lookaside: infra.Lookaside,
        gpg: infra.GpgKeys, tmp_path: Path) -> None:
    private = infra.start_registry(tmp_path / "private", credentials=TEAM_A)
    try:
        registries_d = lookaside.write_registries_d(tmp_path / "registries.d", private)

        def push(repository: str) -> str:
            layout = infra.write_oci_layout(tmp_path / repository.replace("/", "_"), seed=repository)
            infra.push(layout, private, repository, "v1", registries_d=registries_d, gnupg_home=gpg.home,
                       sign_by=gpg.fingerprints["release-ed"])
            return f"{private.host}/{repository}:v1"

        a_first, b_first, by_account = push("private/a-first"), push("private/b-first"), push("private/account")
        for namespace, credentials in (("team-a", TEAM_A), ("team-b", TEAM_B)):
            cluster.kubectl("create", "namespace", namespace)
            # No ServiceAccount admission plugin and no controller-manager here: the accounts are made by hand.
            cluster.apply(_pull_secret(namespace, private.host, credentials), _service_account(namespace, ["regcred"]))
        cluster.kubectl("create", "namespace", "team-c")  # no Secret at all
        cluster.apply(trust_store("private", {"ed": gpg.armored("release-ed")}), trust_policy(
            "private", [f"{private.host}/private/**"],
            [{"name": "release", "gpg": {"trustStore": "private", "lookaside": lookaside.url}}]))
        start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host", "127.0.0.1")
        wait_for("TrustPolicy private Ready",
                 lambda: condition(cluster, "trustpolicy", "private").get("status") == "True")

        def start_webhook(*flags: str) -> tuple[Process, Webhook]:
            port = infra.free_port()
            process = start_trustgate("trustgate-webhook", "serve", "--namespace", NAMESPACE, "--host", "127.0.0.1",
                                      "--port", str(port), "--insecure-registry", private.host, "--log-level",
                                      "debug", *infra.ALLOW_LOOPBACK, *flags)
            infra.wait_until_listening(port, process.process, timeout=60)
            cluster.apply(_validating_configuration(port))
            webhook = Webhook(cluster, port)
            ca = webhook.ca(tmp_path)
            webhook.wait_for_ca_bundle(ca, "validatingwebhookconfiguration")
            wait_for("the webhook to load a bundle", lambda: webhook.generation(ca))
            return process, webhook

        refused = "refused the credentials for manifest"  # the registry's HTTP 401 to team B's Secret
        no_credentials = "requires credentials and none are configured"  # its 401 challenge, nothing to offer
        webhook_process, _ = start_webhook()
        try:
            wait_for("the webhook to take part in admission",
                     lambda: refused in _admit(cluster, "team-b", a_first, pull_secret=True)[1])

            # Team A first (cold), then team B and team C on the caches team A warmed, then team A again (warm).
            assert _admit(cluster, "team-a", a_first, pull_secret=True) == (True, "")
            admitted, error = _admit(cluster, "team-b", a_first, pull_secret=True)
            assert not admitted and refused in error and "HTTP 401" in error, error
            admitted, error = _admit(cluster, "team-c", a_first)
            assert not admitted and no_credentials in error, error
            assert _admit(cluster, "team-a", a_first, pull_secret=True) == (True, "")

            # Team B first (cold), then team A, then team B again on the caches team A warmed.
            admitted, error = _admit(cluster, "team-b", b_first, pull_secret=True)
            assert not admitted and refused in error, error
            assert _admit(cluster, "team-a", b_first, pull_secret=True) == (True, "")
            admitted, error = _admit(cluster, "team-b", b_first, pull_secret=True)
            assert not admitted and refused in error, error

            # The Secret named by the pod's ServiceAccount; the default account (absent here) names none.
            admitted, error = _admit(cluster, "team-b", by_account, service_account="puller")
            assert not admitted and refused in error, error
            assert _admit(cluster, "team-a", by_account, service_account="puller") == (True, "")
            admitted, error = _admit(cluster, "team-a", by_account)
            assert not admitted and no_credentials in error, error
            admitted, error = _admit(cluster, "team-b", by_account, service_account="puller")
            assert not admitted and refused in error, error
        finally:
            webhook_process.stop()

        disabled_process, _ = start_webhook("--no-pod-pull-secrets")
        try:
            wait_for("the webhook without pod pull secrets to take part in admission",
                     lambda: no_credentials in _admit(cluster, "team-a", a_first, pull_secret=True)[1])
            admitted, error = _admit(cluster, "team-a", by_account, service_account="puller")
            assert not admitted and no_credentials in error, error
        finally:
            disabled_process.stop()

        # At debug level the webhook logs its API requests: the Secrets were read, their contents never logged.
        assert "/api/v1/namespaces/team-a/secrets/regcred" in webhook_process.output()
        for process in (webhook_process, disabled_process):
            for secret in (TEAM_A[1], TEAM_B[1], base64.b64encode(":".join(TEAM_A).encode()).decode()):
                assert secret not in process.output()
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", "trustgate", check=False)
        cluster.kubectl("delete", "trustpolicy,truststore", "private", check=False)
        private.stop()
