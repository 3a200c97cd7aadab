"""trustgate against a real kube-apiserver 1.20 + etcd: controller, bundle, webhook TLS, admission, leadership.

The controller and the webhook run as separate processes under their own (RBAC-limited) identities, exactly
as in a cluster; pods are created with kubectl and decided by the webhook through the API server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import json
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controller.handlers import STANDBY_ROUND_SECONDS
from controller.leader import LEASE_DURATION_SECONDS, RENEW_SECONDS
from tests.cluster.apiserver import ApiServer
from tests.cluster.conftest import NAMESPACE, Process, PushImage, condition, wait_for
from tests.e2e import infra
from tests.helpers import trust_policy, trust_store

WEBHOOK_NAME = "validate.trustgate.dev"


def _pod(name: str, image: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": image}]}}


def _validating_configuration(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "trustgate"},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": {"url": f"https://127.0.0.1:{port}/validate"},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]}]},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 15,
        }],
    }


def _mutating_configuration(port: int, resource: str = "limitranges") -> dict[str, Any]:
    """By default registered only to show its caBundle is managed too, matching nothing the tests create."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "trustgate"},
        "webhooks": [{
            "name": "mutate.trustgate.dev",
            "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate"},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": [resource]}],
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]}]},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        }],
    }


def _store(gpg: infra.GpgKeys, *, with_rsa: bool = True) -> dict[str, Any]:
    keys: list[dict[str, Any]] = [{"name": "ed", "gpg": gpg.armored("release-ed")}]
    if with_rsa:
        keys.insert(0, {"name": "rsa", "type": "gpg", "valueFrom": {"secretKeyRef": {
            "name": "release-rsa", "namespace": "keys", "key": "key.asc"}}})
    return {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "release"},
            "spec": {"keys": keys}}


def _key_secret(armored: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release-rsa", "namespace": "keys"},
            "stringData": {"key.asc": armored}}


def _key_fingerprints(cluster: ApiServer) -> dict[str, str]:
    status = cluster.get("truststore", "release").get("status") or {}
    return {key["name"]: key.get("fingerprint", "") for key in status.get("keys") or []}


class Webhook:
    def __init__(self, cluster: ApiServer, port: int) -> None:
        self.cluster, self.port = cluster, port

    def ca(self, tmp_path: Path) -> Path:
        secret = self.cluster.get("secret", "-n", NAMESPACE, "trustgate-webhook-tls")
        path = tmp_path / "webhook-ca.pem"
        path.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
        return path

    def wait_for_ca_bundle(self, ca: Path, *kinds: str) -> None:
        """Wait until each of the webhook configurations (`kinds`, all named trustgate) trusts the CA `ca`."""
        for kind in kinds:
            wait_for(f"caBundle of the {kind}", functools.partial(self._trusts, kind, ca.read_bytes()))

    def _trusts(self, kind: str, ca: bytes) -> bool:
        client_config = self.cluster.get(kind, "trustgate")["webhooks"][0]["clientConfig"]
        return base64.b64decode(client_config.get("caBundle", "")) == ca

    def generation(self, ca: Path) -> int | None:
        response = httpx.get(f"https://127.0.0.1:{self.port}/readyz", verify=ssl.create_default_context(cafile=str(ca)),
                             timeout=5)
        return response.json().get("policyGeneration") if response.status_code == 200 else None

    def bundle_generation(self) -> int:
        secret = self.cluster.get("secret", "-n", NAMESPACE, "trustgate-policy-bundle")
        return int(secret["metadata"]["annotations"]["trustgate.dev/bundle-generation"])

    def wait_for_new_bundle(self, ca: Path, after: int) -> int:
        """Wait until the controller published a bundle newer than `after` and the webhook serves it."""
        generation: int = wait_for(f"a bundle newer than generation {after}",
                                   lambda: self.bundle_generation() > after and self.bundle_generation())
        wait_for(f"the webhook to serve bundle generation {generation}",
                 lambda: (self.generation(ca) or 0) >= generation)
        return generation


def _create_pod(cluster: ApiServer, name: str, image: str, *, dry_run: bool = False,
                namespace: str = "default") -> tuple[bool, str]:
    args = ["create", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    completed = cluster.kubectl(*args, input=yaml.safe_dump(_pod(name, image, namespace)), check=False)
    return completed.returncode == 0, completed.stderr


def test_signed_pod_is_admitted_unsigned_refused_and_revocation_takes_effect(
        cluster: ApiServer, start_trustgate: Callable[..., Process], registry: infra.Registry,
        lookaside: infra.Lookaside, gpg: infra.GpgKeys, push_image: PushImage,
        tmp_path: Path) -> None:
    (signed, _), (unsigned, _) = push_image("cluster/app", "release-rsa"), push_image("cluster/unsigned", None)

    cluster.kubectl("create", "namespace", "keys")
    cluster.apply(_key_secret(gpg.armored("release-rsa")), _store(gpg), trust_policy(
        "release", [f"{registry.host}/cluster/**"],
        [{"name": "release", "gpg": {"trustStore": "release", "lookaside": lookaside.url}}]))
    controller = start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE,
                                 "--webhook-host", "127.0.0.1")

    # Status: Ready, with each key's fingerprint; printer columns; an Event for keys expiring within 30 days.
    wait_for("TrustStore release Ready", lambda: condition(cluster, "truststore", "release").get("status") == "True")
    wait_for("TrustPolicy release Ready",
             lambda: condition(cluster, "trustpolicy", "release").get("status") == "True")
    assert _key_fingerprints(cluster) == {"rsa": gpg.fingerprints["release-rsa"],
                                          "ed": gpg.fingerprints["release-ed"]}
    store_table = cluster.kubectl("get", "truststores").stdout.splitlines()
    assert store_table[0].split() == ["NAME", "KEYS", "READY", "AGE"]
    assert store_table[1].split()[:3] == ["release", "2", "True"]
    policy_table = cluster.kubectl("get", "trustpolicies").stdout.splitlines()
    assert policy_table[0].split() == ["NAME", "MODE", "AUTHORITIES", "READY", "AGE"]
    assert policy_table[1].split()[:4] == ["release", "enforce", "1", "True"]
    events = wait_for("a KeyExpiringSoon Event", lambda: [
        event for event in cluster.get("events", "-n", "default")["items"]
        if event["involvedObject"]["name"] == "release" and event["reason"] == "KeyExpiringSoon"])
    assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["kind"] == "TrustStore"

    # The webhook: in-cluster mode, TLS from the controller, caBundle filled in by the controller.
    port = infra.free_port()
    webhook_process = start_trustgate("trustgate-webhook", "serve", "--namespace", NAMESPACE, "--host",
                                      "127.0.0.1", "--port", str(port), "--insecure-registry", registry.host,
                                      *infra.ALLOW_LOOPBACK)
    infra.wait_until_listening(port, webhook_process.process, timeout=60)
    cluster.apply(_validating_configuration(port), _mutating_configuration(port))
    webhook = Webhook(cluster, port)
    ca = webhook.ca(tmp_path)
    webhook.wait_for_ca_bundle(ca, "validatingwebhookconfiguration", "mutatingwebhookconfiguration")
    generation = wait_for("the webhook to load a bundle", lambda: webhook.generation(ca))
    assert generation == webhook.bundle_generation()
    # Registration takes a moment to reach the API server's admission chain: probe with a dry run.
    wait_for("the webhook to take part in admission",
             lambda: not _create_pod(cluster, "probe", unsigned, dry_run=True)[0])

    admitted, error = _create_pod(cluster, "signed", signed)
    assert admitted, error
    admitted, error = _create_pod(cluster, "unsigned", unsigned)
    assert not admitted
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in error
    assert f"image {unsigned} (spec.containers[0].image) denied" in error
    assert "no signatures found" in error

    # The key's Secret changes: the controller follows it, the webhook swaps policies without a restart.
    cluster.apply(_key_secret(gpg.armored("rogue")))
    wait_for("the TrustStore to show the new key",
             lambda: _key_fingerprints(cluster).get("rsa") == gpg.fingerprints["rogue"])
    generation = webhook.wait_for_new_bundle(ca, generation)
    admitted, error = _create_pod(cluster, "signed-after-secret-change", signed)
    assert not admitted
    assert f"signed by key {gpg.fingerprints['release-rsa']}, not in TrustStore release" in error

    cluster.apply(_key_secret(gpg.armored("release-rsa")))
    generation = webhook.wait_for_new_bundle(ca, generation)
    admitted, error = _create_pod(cluster, "signed-again", signed)
    assert admitted, error

    # Revoke: the rsa key leaves the TrustStore; the next pod signed with it is refused.
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_store(gpg, with_rsa=False)))
    wait_for("the TrustStore without the rsa key", lambda: list(_key_fingerprints(cluster)) == ["ed"])
    webhook.wait_for_new_bundle(ca, generation)
    admitted, error = _create_pod(cluster, "signed-after-revocation", signed)
    assert not admitted
    assert f"signed by key {gpg.fingerprints['release-rsa']}, not in TrustStore release" in error

    # Certificate rotation: a new CA (here: the Secret was deleted) reaches caBundle and the running webhook.
    old_ca = ca.read_bytes()
    cluster.kubectl("delete", "secret", "-n", NAMESPACE, "trustgate-webhook-tls")
    wait_for("a new webhook CA", lambda: webhook.ca(tmp_path).read_bytes() != old_ca)
    new_ca = webhook.ca(tmp_path)
    wait_for("the webhook to serve a certificate of the new CA", lambda: webhook.generation(new_ca))
    admitted, error = _create_pod(cluster, "unsigned-after-rotation", unsigned)
    assert not admitted
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in error, error
    assert "Traceback" not in controller.output() + webhook_process.output()


def test_faulty_objects_get_not_ready_status_and_warning_events(
        cluster: ApiServer, start_trustgate: Callable[..., Process]) -> None:
    cluster.apply(
        {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "broken"},
         "spec": {"keys": [{"name": "k", "publicKey": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]}},
        trust_policy("orphan", ["registry.example/orphan/**"],
                     [{"name": "a", "gpg": {"trustStore": "missing"}}]),
    )
    start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host", "127.0.0.1")
    store = wait_for("TrustStore broken not Ready",
                     lambda: condition(cluster, "truststore", "broken").get("status") == "False"
                     and condition(cluster, "truststore", "broken"))
    assert store["reason"] == "InvalidKeyMaterial" and "spec.keys[0].publicKey" in store["message"]
    policy = wait_for("TrustPolicy orphan not Ready",
                      lambda: condition(cluster, "trustpolicy", "orphan").get("status") == "False"
                      and condition(cluster, "trustpolicy", "orphan"))
    assert policy["reason"] == "TrustStoreNotReady"
    assert cluster.get("trustpolicy", "orphan")["status"]["observedGeneration"] == 1
    reasons = wait_for("Warning Events for both", lambda: (found := {
        (event["involvedObject"]["name"], event["reason"])
        for event in cluster.get("events", "-n", "default")["items"] if event["type"] == "Warning"})
        >= {("broken", "InvalidKeyMaterial"), ("orphan", "TrustStoreNotReady")} and found)
    assert ("broken", "InvalidKeyMaterial") in reasons
    assert "InvalidKeyMaterial" in cluster.kubectl("describe", "truststore", "broken").stdout
    # A not-Ready policy still stands in the bundle, denying what it matches.
    bundle = json.loads(base64.b64decode(cluster.get("secret", "-n", NAMESPACE, "trustgate-policy-bundle")
                                         ["data"]["bundle.json"]))
    assert [entry["name"] for entry in bundle["unavailablePolicies"]] == ["orphan"]
    cluster.kubectl("delete", "truststore", "broken")
    cluster.kubectl("delete", "trustpolicy", "orphan")


def test_one_controller_leads_and_a_standby_takes_over(
        cluster: ApiServer, start_trustgate: Callable[..., Process]) -> None:
    def holder() -> str:
        lease = cluster.get("lease", "-n", NAMESPACE, "trustgate-controller")
        return str(lease["spec"].get("holderIdentity") or "")

    first = start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host",
                            "127.0.0.1", name="first")
    wait_for("the first controller to lead", lambda: "is now the leader" in first.output())
    leader = wait_for("a Lease holder", holder)
    second = start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host",
                             "127.0.0.1", name="second")
    # The standby keeps trying; the leader keeps renewing: two renewals later the holder is unchanged.
    renewals: set[str] = set()

    def renewed_twice() -> bool:
        renewals.add(cluster.get("lease", "-n", NAMESPACE, "trustgate-controller")["spec"]["renewTime"])
        return len(renewals) >= 3

    wait_for("two renewals by the leader", renewed_twice, timeout=60)
    assert holder() == leader
    assert "is now the leader" not in second.output()
    first.stop()
    new_leader = wait_for("the standby to take over", lambda: holder() not in ("", leader) and holder())
    assert new_leader != leader
    wait_for("the standby to say it leads", lambda: "is now the leader" in second.output())


def test_a_standby_takes_over_a_killed_leader_and_resumes_bundles_and_certificates(
        cluster: ApiServer, start_trustgate: Callable[..., Process], gpg: infra.GpgKeys) -> None:
    """SIGKILL leaves the Lease held: the standby waits it out, then publishes the change made meanwhile as the
    next bundle generation and issues certificates again. No bundle generation is skipped or goes back."""
    def policy(*images: str) -> dict[str, Any]:
        return trust_policy("failover", list(images), [{"name": "release", "gpg": {"trustStore": "failover"}}])

    def holder() -> str:
        lease = cluster.get("lease", "-n", NAMESPACE, "trustgate-controller")
        return str(lease["spec"].get("holderIdentity") or "")

    def bundle() -> tuple[int, str]:
        secret = cluster.get("secret", "-n", NAMESPACE, "trustgate-policy-bundle")
        return (int(secret["metadata"]["annotations"]["trustgate.dev/bundle-generation"]),
                base64.b64decode(secret["data"]["bundle.json"]).decode())

    def ca() -> str:
        return str(cluster.get("secret", "-n", NAMESPACE, "trustgate-webhook-tls")["data"]["ca.crt"])

    cluster.apply(trust_store("failover", {"ed": gpg.armored("release-ed")}), policy("registry.example/before/**"))
    controllers = [start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE, "--webhook-host",
                                   "127.0.0.1", name=name) for name in ("first", "second")]
    try:
        first = wait_for("a controller to lead",
                         lambda: next((c for c in controllers if "is now the leader" in c.output()), None))
        second = next(c for c in controllers if c is not first)
        leader = wait_for("a Lease holder", holder)
        wait_for("the bundle with the first policy", lambda: "registry.example/before/**" in bundle()[1])
        renewals: set[str] = set()

        def renewed_twice() -> bool:
            renewals.add(cluster.get("lease", "-n", NAMESPACE, "trustgate-controller")["spec"]["renewTime"])
            return len(renewals) >= 3

        wait_for("two renewals seen by the standby too", renewed_twice)
        generation_before, certificate_before = bundle()[0], ca()

        seen: list[int] = []
        stop_watching = threading.Event()

        def watch_generations() -> None:
            while not stop_watching.is_set():
                with contextlib.suppress(Exception):
                    seen.append(bundle()[0])
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_generations)
        watcher.start()
        first.process.kill()
        first.process.wait()
        killed = time.monotonic()
        last_renewal = datetime.datetime.fromisoformat(
            cluster.get("lease", "-n", NAMESPACE, "trustgate-controller")["spec"]["renewTime"])
        expires_after = (last_renewal - datetime.datetime.now(datetime.UTC)).total_seconds() + LEASE_DURATION_SECONDS
        cluster.apply(policy("registry.example/before/**", "registry.example/during/**"))  # nobody leads now
        new_leader = wait_for("the standby to take the Lease", lambda: holder() not in ("", leader) and holder(),
                              timeout=60, interval=0.1)
        takeover = time.monotonic() - killed
        generation, content = wait_for("the change made without a leader to be published",
                                       lambda: bundle()[0] > generation_before and bundle(), interval=0.1)
        published = time.monotonic() - killed
        cluster.kubectl("delete", "secret", "-n", NAMESPACE, "trustgate-webhook-tls")
        wait_for("the new leader to issue a new webhook CA", lambda: ca() != certificate_before)
        stop_watching.set()
        watcher.join()
    finally:
        cluster.kubectl("delete", "trustpolicy", "failover", "--ignore-not-found")
        cluster.kubectl("delete", "truststore", "failover", "--ignore-not-found")
    print(f"takeover {takeover:.1f}s after SIGKILL (the Lease expired {expires_after:.1f}s after it), bundle "
          f"published {published:.1f}s after it (Lease duration {LEASE_DURATION_SECONDS}s, renewed every "
          f"{RENEW_SECONDS}s, read every {STANDBY_ROUND_SECONDS}s by the standby)")
    assert new_leader != leader and "is now the leader" in second.output()
    assert generation == generation_before + 1 and "registry.example/during/**" in content
    assert seen == sorted(seen) and seen[0] == generation_before and seen[-1] == generation
    # The standby sees the last renewal within one round and takes the Lease within a round of its expiry.
    assert takeover <= expires_after + 2 * STANDBY_ROUND_SECONDS + 2


@pytest.fixture(autouse=True)
def _clean_lease(cluster: ApiServer) -> None:
    """Each test starts without a leader from a previous test's (stopped) controller."""
    cluster.kubectl("delete", "lease", "-n", NAMESPACE, "trustgate-controller", "--ignore-not-found")
