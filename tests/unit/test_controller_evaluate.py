"""TrustStore and TrustPolicy validation as the controller does it, with real gpg keys and real certificates."""

from __future__ import annotations

import datetime
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from controller import evaluate
from controller.evaluate import (
    REASON_INVALID_AUTHORITY,
    REASON_INVALID_KEY,
    REASON_INVALID_SPEC,
    REASON_KEY_EXPIRED,
    REASON_KEY_SOURCE,
    REASON_NOT_YET_VALID,
    REASON_STORE_NOT_READY,
    StoreEvaluation,
    evaluate_policy,
    evaluate_store,
    ready_condition,
)
from tests.helpers import record_store_compiles, trust_policy, trust_store
from webhook.config import ConfigFileError, load_resources
from webhook.policy.compile import compile_policy_set
from webhook.policy.models import TrustStoreKey
from webhook.verifiers.base import discover_verifiers

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def _gpg_key(expire: str, *, created_days_ago: int = 0) -> str:
    """A fresh armored OpenPGP public key made by real gpg; `created_days_ago` backdates its creation."""
    with tempfile.TemporaryDirectory(prefix="tg-t-") as home:
        faked = []
        if created_days_ago:
            created = NOW - created_days_ago * DAY
            faked = ["--faked-system-time", created.strftime("%Y%m%dT%H%M%S")]
        base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run([*base, *faked, "--quick-gen-key", "Test <test@example.com>", "ed25519", "sign", expire],
                       check=True, capture_output=True)
        armored = subprocess.run([*base, "--armor", "--export"], check=True, capture_output=True,
                                 text=True).stdout
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
    return armored


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {
        "valid": _gpg_key("1y"),
        "expiring": _gpg_key("10d"),
        "expired": _gpg_key("1d", created_days_ago=3),
    }


def _certificate(not_before: datetime.datetime, not_after: datetime.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(not_before).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _public_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _no_objects(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
    return None


def _store_body(name: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore",
            "metadata": {"name": name, "generation": 3, "uid": "u-" + name}, "spec": {"keys": entries}}


def test_valid_gpg_store_reports_each_key(keys: dict[str, str]) -> None:
    evaluation = evaluate_store(trust_store("release", {"k1": keys["valid"]}), _no_objects, NOW)
    assert evaluation.ready, evaluation.message
    (status,) = evaluation.keys
    assert status.type == "gpg"
    assert status.fingerprint is not None and len(status.fingerprint) == 40
    assert status.algorithm == "EdDSA/ed25519"
    assert status.expires is not None
    assert evaluation.notices == ()


def test_expired_gpg_key_makes_the_store_not_ready(keys: dict[str, str]) -> None:
    evaluation = evaluate_store(trust_store("release", {"ok": keys["valid"], "old": keys["expired"]}),
                                _no_objects, NOW)
    assert not evaluation.ready
    assert evaluation.reason == REASON_KEY_EXPIRED
    assert "key old" in evaluation.message
    assert evaluation.resolved is None  # so it never reaches the bundle


def test_key_expiring_within_30_days_is_ready_with_a_warning(keys: dict[str, str]) -> None:
    evaluation = evaluate_store(trust_store("release", {"soon": keys["expiring"]}), _no_objects, NOW)
    assert evaluation.ready
    assert [notice.reason for notice in evaluation.notices] == ["KeyExpiringSoon"]
    assert "key soon" in evaluation.notices[0].message


def test_damaged_key_material_is_reported() -> None:
    evaluation = evaluate_store(_store_body("s", [{"name": "k", "publicKey": "-----BEGIN PUBLIC KEY-----\nAA\n"
                                                                             "-----END PUBLIC KEY-----"}]),
                                _no_objects, NOW)
    assert not evaluation.ready
    assert evaluation.reason == REASON_INVALID_KEY
    assert "spec.keys[0].publicKey" in evaluation.message


def test_invalid_spec_is_reported_with_its_path() -> None:
    evaluation = evaluate_store(_store_body("s", [{"name": "k", "gpg": "x", "publicKey": "y"}]), _no_objects, NOW)
    assert (evaluation.ready, evaluation.reason) == (False, REASON_INVALID_SPEC)
    assert "exactly one of" in evaluation.message


def test_public_key_status_has_fingerprint_and_algorithm() -> None:
    evaluation = evaluate_store(_store_body("s", [{"name": "k", "publicKey": _public_key_pem()}]), _no_objects, NOW)
    assert evaluation.ready
    (status,) = evaluation.keys
    assert status.algorithm == "ECDSA secp256r1"
    assert status.fingerprint is not None and status.fingerprint.startswith("SHA256:")


@pytest.mark.parametrize(("not_before", "not_after", "reason"), [
    (NOW - 10 * DAY, NOW - DAY, REASON_KEY_EXPIRED),
    (NOW + DAY, NOW + 100 * DAY, REASON_NOT_YET_VALID),
])
def test_certificates_outside_their_validity_make_the_store_not_ready(
        not_before: datetime.datetime, not_after: datetime.datetime, reason: str) -> None:
    body = _store_body("s", [{"name": "root", "x509": {"role": "ca",
                                                        "certificates": _certificate(not_before, not_after)}}])
    evaluation = evaluate_store(body, _no_objects, NOW)
    assert (evaluation.ready, evaluation.reason) == (False, reason)


def test_certificate_within_validity_reports_its_expiry() -> None:
    body = _store_body("s", [{"name": "root", "x509": {"role": "ca",
                                                        "certificates": _certificate(NOW - DAY, NOW + 20 * DAY)}}])
    evaluation = evaluate_store(body, _no_objects, NOW)
    assert evaluation.ready
    assert evaluation.keys[0].expires is not None
    assert [notice.reason for notice in evaluation.notices] == ["KeyExpiringSoon"]


# --- valueFrom -----------------------------------------------------------------------------------------


def _value_from_entry(kind: str = "secretKeyRef") -> dict[str, Any]:
    return {"name": "k", "type": "gpg",
            "valueFrom": {kind: {"name": "release-key", "namespace": "trustgate-system", "key": "key.asc"}}}


def test_value_from_secret_is_resolved_inline(keys: dict[str, str]) -> None:
    seen = []

    def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        seen.append((kind, namespace, name))
        return {"key.asc": keys["valid"]}

    evaluation = evaluate_store(_store_body("s", [_value_from_entry()]), lookup, NOW)
    assert evaluation.ready, evaluation.message
    assert seen == [("Secret", "trustgate-system", "release-key")]
    assert evaluation.resolved is not None
    (entry,) = evaluation.resolved.spec.keys
    assert entry.gpg == keys["valid"] and entry.valueFrom is None
    assert {(ref.kind, ref.name) for ref in evaluation.references} == {("Secret", "release-key")}


@pytest.mark.parametrize(("data", "expected"), [
    (None, "Secret trustgate-system/release-key not found"),
    ({"other": "x"}, "key key.asc not found"),
])
def test_missing_value_from_source_is_reported(data: Mapping[str, str] | None, expected: str) -> None:
    evaluation = evaluate_store(_store_body("s", [_value_from_entry()]), lambda *_: data, NOW)
    assert (evaluation.ready, evaluation.reason) == (False, REASON_KEY_SOURCE)
    assert expected in evaluation.message
    assert evaluation.references  # still watched, so creating the Secret re-evaluates the store


def test_value_from_outside_the_key_source_namespaces_is_refused_unread(keys: dict[str, str]) -> None:
    seen = []

    def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        seen.append(namespace)
        return {"key.asc": keys["valid"]}

    body = _store_body("s", [_value_from_entry()])
    refused = evaluate_store(body, lookup, NOW, frozenset({"keys", "ci"}))
    assert (refused.ready, refused.reason) == (False, REASON_KEY_SOURCE)
    assert "Secret trustgate-system/release-key" in refused.message
    assert "only from namespaces ci, keys" in refused.message
    assert seen == []
    assert evaluate_store(body, lookup, NOW, frozenset({"trustgate-system"})).ready


def test_value_from_config_map_is_looked_up_as_config_map(keys: dict[str, str]) -> None:
    kinds = []

    def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        kinds.append(kind)
        return {"key.asc": keys["valid"]}

    assert evaluate_store(_store_body("s", [_value_from_entry("configMapKeyRef")]), lookup, NOW).ready
    assert kinds == ["ConfigMap"]


@pytest.mark.parametrize("entry", [
    {"name": "k", "valueFrom": {"secretKeyRef": {"name": "a", "namespace": "b", "key": "c"}}},
    {"name": "k", "type": "gpg", "gpg": "inline"},
    {"name": "k", "type": "gpg", "valueFrom": {}},
    {"name": "k", "type": "gpg", "valueFrom": {"secretKeyRef": {"name": "a", "namespace": "b", "key": "c"},
                                               "configMapKeyRef": {"name": "a", "namespace": "b", "key": "c"}}},
    {"name": "k", "type": "gpg", "valueFrom": {"secretKeyRef": {"name": "a", "key": "c"}}},
])
def test_value_from_model_refuses_ambiguous_entries(entry: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrustStoreKey.model_validate(entry)


def test_cli_configuration_refuses_value_from(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "store.yaml").write_text(yaml.safe_dump(_store_body("release", [_value_from_entry()])))
    with pytest.raises(ConfigFileError, match=r"spec\.keys\[0\]\.valueFrom: key material in a Secret is read only "
                                              r"by `trustgate controller`"):
        compile_policy_set(load_resources(tmp_path))


# --- TrustPolicy ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ready_store(keys: dict[str, str]) -> StoreEvaluation:
    evaluation = evaluate_store(trust_store("release", {"k1": keys["valid"]}), _no_objects, NOW)
    assert evaluation.ready
    return evaluation


def _policy(store: str = "release", **gpg: Any) -> dict[str, Any]:
    return trust_policy("apps", ["registry.example/**"], [{"name": "ci", "gpg": {"trustStore": store, **gpg}}])


def test_policy_over_a_ready_store_is_ready(ready_store: StoreEvaluation) -> None:
    evaluation = evaluate_policy(_policy(), {"release": ready_store}, discover_verifiers())
    assert evaluation.ready, evaluation.message
    assert evaluation.authority_count == 1
    assert evaluation.trust_stores == {"release"}


def test_policy_with_missing_store_is_not_ready(ready_store: StoreEvaluation) -> None:
    evaluation = evaluate_policy(_policy("absent"), {"release": ready_store}, discover_verifiers())
    assert (evaluation.ready, evaluation.reason) == (False, REASON_STORE_NOT_READY)
    assert "TrustStore absent not found" in evaluation.message


def test_policy_with_store_not_ready_is_not_ready(keys: dict[str, str]) -> None:
    broken = evaluate_store(trust_store("release", {"old": keys["expired"]}), _no_objects, NOW)
    evaluation = evaluate_policy(_policy(), {"release": broken}, discover_verifiers())
    assert (evaluation.ready, evaluation.reason) == (False, REASON_STORE_NOT_READY)
    assert "TrustStore release is not Ready" in evaluation.message


def test_policy_naming_an_unknown_key_is_not_ready(ready_store: StoreEvaluation) -> None:
    evaluation = evaluate_policy(_policy(keys=["nope"]), {"release": ready_store}, discover_verifiers())
    assert (evaluation.ready, evaluation.reason) == (False, REASON_INVALID_AUTHORITY)
    assert "spec.authorities[0].gpg.keys[0]" in evaluation.message


def test_policy_threshold_above_authorities_is_invalid(ready_store: StoreEvaluation) -> None:
    body = _policy()
    body["spec"]["threshold"] = 2
    evaluation = evaluate_policy(body, {"release": ready_store}, discover_verifiers())
    assert (evaluation.ready, evaluation.reason) == (False, REASON_INVALID_SPEC)
    assert "threshold 2 exceeds" in evaluation.message


def test_ready_condition_keeps_transition_time_while_status_holds() -> None:
    first = ready_condition(True, "Valid", "ok", 1, None, NOW)
    later = ready_condition(True, "Valid", "ok", 2, [first], NOW + DAY)
    flipped = ready_condition(False, "KeyExpired", "gone", 3, [later], NOW + 2 * DAY)
    assert later["lastTransitionTime"] == first["lastTransitionTime"]
    assert flipped["lastTransitionTime"] != first["lastTransitionTime"]
    assert (flipped["status"], flipped["reason"], flipped["observedGeneration"]) == ("False", "KeyExpired", 3)


def test_value_from_keeps_the_entry_hash_algorithm() -> None:
    entry = {"name": "k", "type": "publicKey", "hashAlgorithm": "sha384",
             "valueFrom": {"configMapKeyRef": {"name": "keys", "namespace": "ci", "key": "cosign.pub"}}}
    evaluation = evaluate_store(_store_body("s", [entry]), lambda *_: {"cosign.pub": _public_key_pem()}, NOW)
    assert evaluation.ready, evaluation.message
    assert evaluation.resolved is not None
    assert evaluation.resolved.spec.keys[0].hashAlgorithm == "sha384"


def test_a_store_compiled_before_from_the_same_content_is_not_compiled_again(
        keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    body = trust_store("release", {"k1": keys["valid"]})
    first = evaluate_store(body, _no_objects, NOW)
    assert first.ready and first.compiled is not None
    compiled = record_store_compiles(monkeypatch, evaluate)
    again = evaluate_store(body, _no_objects, NOW, compiled_before={"release": first.compiled})
    assert again.ready and again.compiled is first.compiled and compiled == []
    # Validity is checked at each evaluation's own time, reused or not.
    later = evaluate_store(body, _no_objects, NOW + datetime.timedelta(days=400),
                           compiled_before={"release": first.compiled})
    assert not later.ready and compiled == []
    changed = evaluate_store(trust_store("release", {"k2": keys["valid"]}), _no_objects, NOW,
                             compiled_before={"release": first.compiled})
    assert changed.ready and changed.compiled is not first.compiled and compiled == ["release"]
