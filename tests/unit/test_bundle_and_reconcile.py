"""The policy bundle (format, digest, compilation, last-good loading) and the controller's reconciliation pass
against an in-memory cluster: status written only on change, Events, bundle generations."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import tempfile
from collections.abc import Mapping
from typing import Any

import pytest

from controller.kube import StoredSecret
from controller.reconcile import Controller, ControllerSettings
from tests.helpers import trust_policy, trust_store
from webhook.bundle import (
    ANNOTATION_GENERATION,
    BUNDLE_KEY,
    BUNDLE_SECRET,
    BundleContent,
    BundleError,
    UnavailablePolicy,
    compile_bundle,
    decode_bundle,
)
from webhook.cluster import TLS_SECRET, BundleLoader
from webhook.metrics import POLICY_LOAD_ERRORS
from webhook.pipeline import Pipeline
from webhook.policy.compile import PolicySet
from webhook.policy.models import TrustPolicy, TrustStore
from webhook.verifiers.base import discover_verifiers

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def armored_key() -> str:
    with tempfile.TemporaryDirectory(prefix="tg-t-") as home:
        base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run([*base, "--quick-gen-key", "CI <ci@example.com>", "ed25519", "sign", "1y"], check=True,
                       capture_output=True)
        armored = subprocess.run([*base, "--armor", "--export"], check=True, capture_output=True, text=True).stdout
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
    return armored


def _content(armored_key: str, unavailable: tuple[UnavailablePolicy, ...] = ()) -> BundleContent:
    store = TrustStore.model_validate(trust_store("release", {"ci": armored_key}))
    policy = TrustPolicy.model_validate(trust_policy("apps", ["registry.example/apps/**"],
                                                     [{"name": "ci", "gpg": {"trustStore": "release"}}]))
    return BundleContent((store,), (policy,), unavailable)


def test_bundle_round_trip_compiles_with_its_generation(armored_key: str) -> None:
    bundle = decode_bundle(_content(armored_key).encode(7))
    policies = compile_bundle(bundle)
    try:
        assert policies.generation == 7
        assert [policy.name for policy in policies.policies] == ["apps"]
    finally:
        policies.close()


def test_bundle_whose_content_does_not_match_its_digest_is_refused(armored_key: str) -> None:
    document = json.loads(_content(armored_key).encode(2))
    document["trustPolicies"][0]["spec"]["mode"] = "audit"  # a downgrade smuggled past the controller
    with pytest.raises(BundleError, match="does not match its content"):
        decode_bundle(json.dumps(document).encode())


@pytest.mark.parametrize("data", [b"{", b'{"a": 1, "a": 2}', b"[]"])
def test_malformed_bundles_are_refused(data: bytes) -> None:
    with pytest.raises(BundleError):
        decode_bundle(data)


def test_digest_ignores_order(armored_key: str) -> None:
    content = _content(armored_key)
    reordered = BundleContent(content.trust_stores[::-1], content.trust_policies[::-1], ())
    assert content.digest == reordered.digest


def test_unavailable_policy_still_matches_and_denies(armored_key: str) -> None:
    unavailable = UnavailablePolicy(name="payments", images=["registry.example/payments/**"], mode="enforce",
                                    reason="TrustStoreNotReady: TrustStore pay is not Ready")
    policies = compile_bundle(decode_bundle(_content(armored_key, (unavailable,)).encode(3)))
    try:
        (matched,) = policies.matching("registry.example/payments/api")
        assert matched.unavailable is not None
        # No registry: an unavailable policy is decided without any request.
        pipeline = Pipeline(policies, registry=None)  # type: ignore[arg-type]
        verdict = asyncio.run(pipeline.verify_image("registry.example/payments/api:v1"))
        assert not verdict.allowed
        assert "TrustPolicy payments is not Ready: TrustStoreNotReady" in " ".join(verdict.reasons)
    finally:
        policies.close()


# --- the webhook's loader: last good bundle wins -------------------------------------------------------


def test_loader_installs_good_bundles_and_keeps_them_over_bad_ones(armored_key: str) -> None:
    installed: list[PolicySet] = []
    loader = BundleLoader(installed.append, discover_verifiers())
    loader.changed(None)  # no bundle yet: nothing installed
    assert installed == []
    loader.changed({BUNDLE_KEY: _content(armored_key).encode(1)})
    loader.changed({BUNDLE_KEY: _content(armored_key).encode(1)})  # same again: no reinstall
    assert [policies.generation for policies in installed] == [1]
    refused_before = POLICY_LOAD_ERRORS._value.get()
    loader.changed({BUNDLE_KEY: b"garbage"})
    loader.changed({})
    assert POLICY_LOAD_ERRORS._value.get() == refused_before + 2
    loader.changed(None)
    bad_store = json.loads(_content(armored_key).encode(2))
    bad_store["trustStores"][0]["spec"]["keys"][0]["gpg"] = "not a key"
    bad_content = BundleContent(
        (TrustStore.model_validate(bad_store["trustStores"][0]),), _content(armored_key).trust_policies, ())
    loader.changed({BUNDLE_KEY: bad_content.encode(2)})
    assert [policies.generation for policies in installed] == [1]
    assert POLICY_LOAD_ERRORS._value.get() == refused_before + 3
    assert loader.loaded is not None and loader.loaded[0] == 1
    loader.changed({BUNDLE_KEY: _content(armored_key, ()).encode(3)})
    assert [policies.generation for policies in installed] == [1, 3]
    for policies in installed:
        policies.close()


# --- one reconciliation pass against an in-memory cluster ----------------------------------------------


class FakeCluster:
    """The calls Controller makes, on dictionaries."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {"truststores": [], "trustpolicies": []}
        self.data: dict[tuple[str, str, str], dict[str, str]] = {}
        self.secrets: dict[str, StoredSecret] = {}
        self.status_patches: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.ca_bundles: list[bytes] = []

    def list_resources(self, plural: str) -> list[dict[str, Any]]:
        return self.objects[plural]

    def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        self.status_patches.append((plural, name))
        for body in self.objects[plural]:
            if body["metadata"]["name"] == name:
                body["status"] = {key: value for key, value in status.items() if value is not None}

    def read_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        return self.data.get((kind, namespace, name))

    def read_secret(self, name: str) -> StoredSecret | None:
        return self.secrets.get(name)

    def write_secret(self, name: str, data: Mapping[str, bytes], annotations: Mapping[str, str],
                     previous: StoredSecret | None, secret_type: str = "Opaque") -> None:
        assert previous is self.secrets.get(name)
        self.secrets[name] = StoredSecret(dict(data), dict(annotations), str(len(self.status_patches)))

    def set_ca_bundle(self, configuration: str, ca_bundle: bytes) -> list[str]:
        if self.ca_bundles and self.ca_bundles[-1] == ca_bundle:
            return []
        self.ca_bundles.append(ca_bundle)
        return ["ValidatingWebhookConfiguration"]

    def post_event(self, involved: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        self.events.append((involved["metadata"]["name"], reason, message))


def _with_meta(document: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    document["metadata"].update(generation=generation, uid="uid-" + document["metadata"]["name"])
    return document


def _bundle(cluster: FakeCluster) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.secrets[BUNDLE_SECRET].data[BUNDLE_KEY])
    return loaded


def _controller(cluster: FakeCluster) -> Controller:
    settings = ControllerSettings(namespace="trustgate-system", webhook_hosts=("127.0.0.1",))
    return Controller(cluster, settings, discover_verifiers(), clock=lambda: NOW)  # type: ignore[arg-type]


def test_reconcile_writes_status_bundle_and_tls(armored_key: str) -> None:
    cluster = FakeCluster()
    cluster.objects["truststores"].append(_with_meta(trust_store("release", {"ci": armored_key})))
    cluster.objects["trustpolicies"].append(_with_meta(trust_policy(
        "apps", ["registry.example/**"], [{"name": "ci", "gpg": {"trustStore": "release"}}])))
    controller = _controller(cluster)
    controller.reconcile()

    store_status = cluster.objects["truststores"][0]["status"]
    assert store_status["conditions"][0]["status"] == "True"
    assert store_status["keyCount"] == 1 and store_status["observedGeneration"] == 1
    assert cluster.objects["trustpolicies"][0]["status"]["conditions"][0]["status"] == "True"
    bundle = _bundle(cluster)
    assert bundle["generation"] == 1
    assert [policy["metadata"]["name"] for policy in bundle["trustPolicies"]] == ["apps"]
    assert set(cluster.secrets[TLS_SECRET].data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert cluster.ca_bundles == [cluster.secrets[TLS_SECRET].data["ca.crt"].strip() + b"\n"]

    # Nothing changed: no status write, no new bundle generation, no new certificate.
    patches, tls = len(cluster.status_patches), cluster.secrets[TLS_SECRET]
    controller.reconcile()
    assert len(cluster.status_patches) == patches
    assert cluster.secrets[BUNDLE_SECRET].annotations[ANNOTATION_GENERATION] == "1"
    assert cluster.secrets[TLS_SECRET] is tls
    assert cluster.events == []


def test_externally_issued_certificates_are_left_alone(armored_key: str) -> None:
    """With cert-manager, the controller neither writes the TLS Secret nor touches the caBundle."""
    cluster = FakeCluster()
    cluster.objects["truststores"].append(_with_meta(trust_store("release", {"ci": armored_key})))
    settings = ControllerSettings(namespace="trustgate-system", manage_certificates=False)
    Controller(cluster, settings, discover_verifiers(), clock=lambda: NOW).reconcile()  # type: ignore[arg-type]
    assert BUNDLE_SECRET in cluster.secrets
    assert TLS_SECRET not in cluster.secrets
    assert cluster.ca_bundles == []


def test_withdrawn_key_source_takes_the_policy_out_and_fails_closed(armored_key: str) -> None:
    cluster = FakeCluster()
    cluster.objects["truststores"].append(_with_meta({
        "apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "release"},
        "spec": {"keys": [{"name": "ci", "type": "gpg", "valueFrom": {"secretKeyRef": {
            "name": "ci-key", "namespace": "keys", "key": "key.asc"}}}]}}))
    cluster.objects["trustpolicies"].append(_with_meta(trust_policy(
        "apps", ["registry.example/**"], [{"name": "ci", "gpg": {"trustStore": "release"}}])))
    cluster.data[("Secret", "keys", "ci-key")] = {"key.asc": armored_key}
    controller = _controller(cluster)
    controller.reconcile()
    assert controller.watches("Secret", "keys", "ci-key")
    assert not controller.watches("Secret", "keys", "unrelated")
    assert _bundle(cluster)["trustStores"][0]["spec"]["keys"][0]["gpg"] == armored_key

    del cluster.data[("Secret", "keys", "ci-key")]  # trust withdrawn
    controller.reconcile()
    bundle = _bundle(cluster)
    assert bundle["generation"] == 2
    assert bundle["trustStores"] == [] and bundle["trustPolicies"] == []
    (unavailable,) = bundle["unavailablePolicies"]
    assert unavailable["images"] == ["registry.example/**"]
    assert unavailable["reason"].startswith("TrustStoreNotReady")
    policy_condition = cluster.objects["trustpolicies"][0]["status"]["conditions"][0]
    assert (policy_condition["status"], policy_condition["reason"]) == ("False", "TrustStoreNotReady")
    assert [(name, reason) for name, reason, _ in cluster.events] == [
        ("release", "KeySourceUnavailable"), ("apps", "TrustStoreNotReady")]

    controller.reconcile()  # the same faults again: no repeated Events
    assert len(cluster.events) == 2


def test_ca_rotation_trusts_both_cas_before_serving_from_the_new_one(armored_key: str) -> None:
    cluster = FakeCluster()
    controller = _controller(cluster)
    controller.reconcile()
    old_ca = cluster.secrets[TLS_SECRET].data["ca.crt"]
    controller.clock = lambda: NOW + datetime.timedelta(days=300)
    controller.reconcile()
    data = cluster.secrets[TLS_SECRET].data
    assert data["ca-previous.crt"] == old_ca and data["ca.crt"] != old_ca
    assert old_ca.strip() in cluster.ca_bundles[-1] and data["ca.crt"].strip() in cluster.ca_bundles[-1]



def test_revocations_of_a_store_that_is_not_ready_stay_in_force(armored_key: str) -> None:
    revoked = "0123456789ABCDEF0123456789ABCDEF01234567"
    cluster = FakeCluster()
    cluster.objects["truststores"].append(_with_meta({
        "apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "old"},
        "spec": {"keys": [{"name": "gone", "type": "gpg", "valueFrom": {"secretKeyRef": {
            "name": "missing", "namespace": "keys", "key": "key.asc"}}}], "revokedKeys": [revoked]}}))
    _controller(cluster).reconcile()
    bundle = _bundle(cluster)
    assert bundle["trustStores"] == []  # not Ready: its keys are not trusted ...
    assert [key.upper() for key in bundle["revokedKeys"]] == [revoked]  # ... but its revocations count
    policies = compile_bundle(decode_bundle(cluster.secrets[BUNDLE_SECRET].data[BUNDLE_KEY]))
    assert {key.upper() for key in policies.revoked_keys} == {revoked}
