"""The cosign conformance vectors (tests/conformance/cosign, from containers/image and sigstore/cosign).

Every check of cs-01..cs-15 runs through the real verifier with the verdict its case.json gives. The trust
inputs are translated into a TrustStore and a cosign authority:

* `publicKeys` -> `publicKey` entries; `rekorPublicKeys` -> `rekorPublicKey` entries with
  `transparencyLog.require: true` (containers/image requires a SET whenever a Rekor key is configured);
* `fulcio {caPath|caData, oidcIssuer, subjectEmail}` -> an `x509` ca entry and `certificateIdentity`
  `{subject, issuer}`; `pki {caRootsPath, caIntermediatesPath, subjectEmail}` -> an `x509` ca entry with
  roots and intermediates and `certificateIdentity.subject` (a second, hostname constraint has no
  counterpart: a certificateIdentity names one subject);
* `signed_identity` -> `signedIdentity`, cosign's default `matchRepository` when absent.

Checks whose verdict trustgate deliberately does not share, and cases out of scope, are listed in
`DEVIATIONS` and `OUT_OF_SCOPE` with the reason; the tests assert trustgate's own verdict for them, so
neither list can silently go stale.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import key_store, resolved, resources, trust_policy
from webhook.artifacts import ResolvedImage, SignatureMaterial
from webhook.config import ConfigFileError
from webhook.policy.compile import compile_policy_set
from webhook.references import InvalidReferenceError
from webhook.simple_signing import COSIGN_SIGNATURE_TYPE
from webhook.sources.cosign_tag import LayerError, SignatureLayer, parse_layer, signature_material
from webhook.verifiers.cosign import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    CosignAuthorityVerifier,
)

SUITE = Path(__file__).parents[1] / "conformance" / "cosign"
# Cases run check by check through `_verdict`; cs-14 has component-level checks of its own below.
CASES = [SUITE / name for name in (
    "cs-01-key-valid", "cs-02-wrong-key", "cs-03-unknown-key-signature", "cs-04-invalid-signature-value",
    "cs-05-tampered-payload", "cs-06-manifest-digest-mismatch", "cs-07-manifest-digest-error",
    "cs-08-tagged-identity", "cs-09-two-valid-signatures", "cs-10-mixed-unknown-then-valid",
    "cs-11-non-signature-attachment", "cs-12-key-with-rekor-set", "cs-13-fulcio-rekor-keyless",
    "cs-15-pki-bring-your-own-ca",
)]
OUT_OF_SCOPE = {
    "_policy-controller-examples": "ClusterImagePolicy documents of sigstore's policy-controller, a different "
                                   "CRD that trustgate does not read",
}
# (case, check name) -> (trustgate's verdict, why it differs from the vector's)
DEVIATIONS = {
    ("cs-15-pki-bring-your-own-ca", "PKI together with a Rekor key"): (
        "accept-config",
        "containers/image cannot combine a private CA with Rekor; trustgate can (cosign signs with a "
        "certificate and uploads to Rekor), so the configuration is valid",
    ),
}
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
AT_TIME_OF_WRITING = datetime(2026, 1, 1, tzinfo=UTC)


def _checks() -> list[Any]:
    found = []
    for case in CASES:
        document = json.loads((case / "case.json").read_text())
        for check in document["checks"]:
            found.append(pytest.param(case, check, id=f"{case.name}:{check['name']}"))
    return found


def _pem(path: Path) -> str:
    return path.read_text()


def _key_file(case: Path, name: str) -> Path:
    # cs-15 names a `rekor.pub` it does not ship; the suite has one log key, kept in cs-12.
    for candidate in (case / name, case / "keys" / name, SUITE / "cs-12-key-with-rekor-set" / "keys" / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(name)


def _store_and_authority(case: Path, trust: dict[str, Any], rule: dict[str, Any] | None) -> tuple[
        dict[str, Any], dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    authority: dict[str, Any] = {"trustStore": "s"}
    if rule is not None:
        authority["signedIdentity"] = rule
    for index, path in enumerate(trust.get("publicKeys", [])):
        entries.append({"name": f"key-{index}", "publicKey": _pem(_key_file(case, path))})
    for index, path in enumerate(trust.get("rekorPublicKeys", [])):
        entries.append({"name": f"rekor-{index}", "rekorPublicKey": _pem(_key_file(case, path))})
        authority["transparencyLog"] = {"require": True}
    if "fulcio" in trust:
        fulcio = trust["fulcio"]
        certificates = (_annotations(case / "signature-1")[CHAIN_ANNOTATION] if "caData" in fulcio
                        else _pem(case / fulcio["caPath"]))
        entries.append({"name": "fulcio", "x509": {"role": "ca", "certificates": certificates}})
        authority["certificateIdentity"] = {"subject": fulcio["subjectEmail"], "issuer": fulcio["oidcIssuer"]}
    if "pki" in trust:
        pki = trust["pki"]
        certificates = _pem(case / pki["caRootsPath"])
        if pki.get("caIntermediatesPath"):
            certificates += _pem(case / pki["caIntermediatesPath"])
        entries.append({"name": "pki", "x509": {"role": "ca", "certificates": certificates}})
        authority["certificateIdentity"] = {"subject": pki["subjectEmail"]}
    return key_store("s", entries), {"name": "a", "cosign": authority}


def _annotations(directory: Path) -> dict[str, str]:
    annotations: dict[str, str] = json.loads((directory / "annotations.json").read_text())
    return annotations


def _material(directory: Path, label: str, annotations: dict[str, str] | None = None) -> SignatureMaterial:
    """A signature as the `.sig` source hands it over: its layer descriptor checked against the payload."""
    payload = (directory / "payload.json").read_bytes()
    annotations = _annotations(directory) if annotations is None else annotations
    descriptor_file = directory / "layer-descriptor.json"
    if not descriptor_file.exists():  # a derived (tampered) payload: a registry would serve its own digest
        return SignatureMaterial(label, payload, SIMPLE_SIGNING, annotations)
    layer = parse_layer(json.loads(descriptor_file.read_text()))
    return signature_material(label, SignatureLayer(layer.media_type, layer.digest, layer.size, annotations),
                              payload)


def _mutate(case: Path, check: dict[str, Any], annotations: dict[str, str]) -> dict[str, str]:
    mutation: str = check.get("mutation", "")
    if mutation.startswith("delete annotation "):
        annotations.pop(mutation.removeprefix("delete annotation "))
    elif mutation.startswith("set "):
        name, _, value = mutation.removeprefix("set ").partition(" to ")
        annotations[name] = value.strip("'")
    elif mutation:
        raise AssertionError(f"unhandled mutation {mutation!r}")
    return annotations


def _signatures(case: Path, check: dict[str, Any]) -> list[list[SignatureMaterial]]:
    """The signature sets to verify; each set must give the check's verdict (cs-04 has variants)."""
    if check.get("mutation") == "cs-01 signature with this case's dev.sigstore.cosign/bundle annotation":
        donor = SUITE / "cs-01-key-valid" / "signature-1"
        grafted = {**_annotations(donor),
                   BUNDLE_ANNOTATION: _annotations(case / "signature-1")[BUNDLE_ANNOTATION]}
        return [[_material(donor, "signature-1", grafted)]]
    if "variants" in check:
        original = _annotations(case / "original")[SIGNATURE_ANNOTATION]
        values = {"append '=' (extra padding)": original + "=",
                  "drop last character (truncated)": original[:-1],
                  "the string '&'": "&"}
        return [[_material(case / "original", "original", {SIGNATURE_ANNOTATION: values[variant]})]
                for variant in check["variants"]]
    directories = ([case / check["use"].rstrip("/")] if "use" in check
                   else sorted(path for path in case.glob("signature-*") if path.is_dir()))
    return [[_material(directory, directory.name, _mutate(case, check, _annotations(directory)))
             for directory in directories]]


def _compile(case: Path, check: dict[str, Any]) -> Any:
    store, authority = _store_and_authority(case, check["trust"], check.get("signed_identity"))
    return compile_policy_set(resources(store, trust_policy("p", ["**"], [authority])))


def _verdict(case: Path, check: dict[str, Any]) -> str:
    try:
        policy_set = _compile(case, check)
    except ConfigFileError:
        return "config-error"
    if "image_reference" not in check:
        return "accept-config"
    verifier = policy_set.policies[0].authorities[0].verifier
    assert isinstance(verifier, CosignAuthorityVerifier)
    try:
        image = resolved(check["image_reference"], (case / "manifest.json").read_bytes())
    except InvalidReferenceError:
        return "reject"
    verdicts = set()
    for materials in _signatures(case, check):
        results = [verifier.verify_signature(image, material) for material in materials]
        verdicts.add("accept" if any(result.passed for result in results) else "reject")
    assert len(verdicts) == 1, f"variants disagree: {verdicts}"
    return verdicts.pop()


@pytest.mark.parametrize(("case", "check"), _checks())
def test_conformance(case: Path, check: dict[str, Any]) -> None:
    deviation = DEVIATIONS.get((case.name, check["name"]))
    expected = deviation[0] if deviation else check["expected"]
    assert _verdict(case, check) == expected


def test_every_case_is_run_or_reported() -> None:
    stored = {path.name for path in SUITE.iterdir() if path.is_dir()}
    assert stored == ({case.name for case in CASES} | {"cs-14-fulcio-cert-validity-window", CS16.name}
                      | set(OUT_OF_SCOPE))
    assert len(_checks()) == 46


def test_deviations_name_real_checks() -> None:
    for case_name, check_name in DEVIATIONS:
        checks = json.loads((SUITE / case_name / "case.json").read_text())["checks"]
        assert check_name in {check["name"] for check in checks}


def test_non_signature_layer_is_refused_by_the_source() -> None:
    directory = SUITE / "cs-11-non-signature-attachment" / "signature-1"
    layer = parse_layer(json.loads((directory / "layer-descriptor.json").read_text()))
    assert layer.media_type == "text/plain"


def test_payload_not_matching_its_descriptor_is_refused() -> None:
    directory = SUITE / "cs-01-key-valid" / "signature-1"
    layer = parse_layer(json.loads((directory / "layer-descriptor.json").read_text()))
    with pytest.raises(LayerError, match="does not match its descriptor"):
        signature_material("x", layer, (directory / "payload.json").read_bytes() + b" ")


# --- cs-14: a Fulcio certificate checked at the Rekor integrated time ---------------------------------

CS14 = SUITE / "cs-14-fulcio-cert-validity-window"
CS14_INTEGRATED_TIME = datetime.fromtimestamp(1670870899, UTC)


def _cs14_verifier(certificates: str, rekor_key: str | None, *, email: str = "mitr@redhat.com",
                   now: datetime = AT_TIME_OF_WRITING) -> CosignAuthorityVerifier:
    entries: list[dict[str, Any]] = [{"name": "fulcio", "x509": {"role": "ca", "certificates": certificates}}]
    if rekor_key is not None:
        entries.append({"name": "rekor", "rekorPublicKey": rekor_key})
    authority = {"name": "a", "cosign": {
        "trustStore": "s", "keys": ["fulcio"],
        "certificateIdentity": {"subject": email, "issuer": "https://github.com/login/oauth"}}}
    policy_set = compile_policy_set(resources(key_store("s", entries), trust_policy("p", ["**"], [authority])))
    verifier = policy_set.policies[0].authorities[0].verifier
    assert isinstance(verifier, CosignAuthorityVerifier)
    verifier.now = lambda: now
    return verifier


def _cs14_material(*, chain: bool = True, bundle: bool = True, payload: bytes | None = None) -> SignatureMaterial:
    annotations = {SIGNATURE_ANNOTATION: (CS14 / "rekor-sig").read_text().strip(),
                   CERTIFICATE_ANNOTATION: (CS14 / "fulcio-cert").read_text()}
    if chain:
        annotations[CHAIN_ANNOTATION] = (CS14 / "fulcio-chain").read_text()
    if bundle:
        annotations[BUNDLE_ANNOTATION] = (CS14 / "rekor-set").read_text()
    data = (CS14 / "rekor-payload").read_bytes() if payload is None else payload
    return SignatureMaterial("signature", data, SIMPLE_SIGNING, annotations)


def _cs14_image() -> ResolvedImage:
    # The signed manifest was never published: an image with other bytes stands in, so a signature whose
    # every other check passes fails exactly at the digest comparison (code payload.digest).
    signed = json.loads((CS14 / "rekor-payload").read_bytes())["critical"]
    assert signed["type"] == COSIGN_SIGNATURE_TYPE
    return resolved(signed["identity"]["docker-reference"], b"{}")


def test_cs14_set_verifies_and_certificate_is_valid_at_integrated_time() -> None:
    verifier = _cs14_verifier(_pem(CS14 / "fulcio_v1.crt.pem"), _pem(CS14 / "rekor.pub"))
    result = verifier.verify_signature(_cs14_image(), _cs14_material())
    assert result.code == "payload.digest", result.message
    assert "sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f" in result.message


@pytest.mark.parametrize("moment", ["2022-12-12T18:48:17+00:00", "2022-12-12T18:58:19+00:00"])
def test_cs14_certificate_outside_its_validity_window(moment: str) -> None:
    # No Rekor key: the certificate is checked at the verifier's clock, set just outside its window.
    verifier = _cs14_verifier(_pem(CS14 / "fulcio_v1.crt.pem"), None, now=datetime.fromisoformat(moment))
    result = verifier.verify_signature(_cs14_image(), _cs14_material())
    assert result.code == "cosign.certificate", result.message
    inside = _cs14_verifier(_pem(CS14 / "fulcio_v1.crt.pem"), None, now=CS14_INTEGRATED_TIME)
    assert inside.verify_signature(_cs14_image(), _cs14_material()).code == "payload.digest"


def test_cs14_chain_omitted_is_untrusted_unless_configured() -> None:
    root_only = _cs14_verifier(_pem(CS14 / "fulcio_v1.crt.pem"), _pem(CS14 / "rekor.pub"))
    assert root_only.verify_signature(_cs14_image(), _cs14_material(chain=False)).code == "cosign.certificate"
    chain_configured = _cs14_verifier(_pem(CS14 / "fulcio-chain"), _pem(CS14 / "rekor.pub"))
    assert chain_configured.verify_signature(_cs14_image(), _cs14_material(chain=False)).code == "payload.digest"


def test_cs14_wrong_subject_email() -> None:
    verifier = _cs14_verifier(_pem(CS14 / "fulcio_v1.crt.pem"), _pem(CS14 / "rekor.pub"),
                              email="this-does-not-match@example.com")
    assert verifier.verify_signature(_cs14_image(), _cs14_material()).code == "cosign.identity"


def test_cs14_payload_not_matching_signature() -> None:
    verifier = _cs14_verifier(_pem(CS14 / "fulcio_v1.crt.pem"), _pem(CS14 / "rekor.pub"))
    result = verifier.verify_signature(_cs14_image(), _cs14_material(payload=b"this payload does not match"))
    assert result.code == "cosign.signature"


def test_cs14_set_checked_with_a_random_log_key() -> None:
    random_key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = _cs14_verifier(_pem(CS14 / "fulcio_v1.crt.pem"), random_key)
    result = verifier.verify_signature(_cs14_image(), _cs14_material())
    assert result.code == "cosign.tlog"
    assert "untrusted log" in result.message


# --- cs-16: a keyless sigstore bundle v0.3 (DSSE, Fulcio certificate, Rekor SET and inclusion proof) ------------

CS16 = SUITE / "cs-16-sigstore-bundle-v03-dsse"


def _cs16_verdict(check: dict[str, Any]) -> str:
    """One check of cs-16, with the trusted root's Fulcio CAs as x509 roots and its Rekor key as the log key.

    The vector is an attestation, so the authority names its predicateType."""
    root = json.loads((CS16 / "trusted_root.json").read_text())
    certificates = "".join(
        x509.load_der_x509_certificate(base64.b64decode(certificate["rawBytes"])).public_bytes(
            serialization.Encoding.PEM).decode()
        for authority in root["certificateAuthorities"] for certificate in authority["certChain"]["certificates"])
    rekor = serialization.load_der_public_key(base64.b64decode(root["tlogs"][0]["publicKey"]["rawBytes"]))
    entries: list[dict[str, Any]] = [{"name": "fulcio", "x509": {"role": "ca", "certificates": certificates}},
               {"name": "rekor", "rekorPublicKey": rekor.public_bytes(
                   serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()}]
    identity = check.get("trust", {"identities": [{"subjectRegExp": ".*"}]})["identities"][0]
    authority = {"name": "a", "cosign": {"trustStore": "s", "keys": ["fulcio"], "certificateIdentity": identity,
                                         "predicateType": "https://cosign.sigstore.dev/attestation/v1"}}
    policy_set = compile_policy_set(resources(key_store("s", entries), trust_policy("p", ["**"], [authority])))
    verifier = policy_set.policies[0].authorities[0].verifier
    assert isinstance(verifier, CosignAuthorityVerifier)
    manifest = (CS16 / "image" / "manifest.json").read_bytes()
    if check.get("image_digest", "").startswith("sha256:"):
        image = resolved(f"127.0.0.1:60943/repo@{check['image_digest']}", manifest)
    else:  # "<any other manifest digest>"
        other = manifest.replace(b"}", b" }", 1)
        image = resolved(f"127.0.0.1:60943/repo@sha256:{hashlib.sha256(other).hexdigest()}", other)
    data = check.get("bundle_override", "").encode() or (CS16 / "bundle.sigstore.json").read_bytes()
    result = verifier.verify_signature(image, SignatureMaterial(
        "bundle", data, "application/vnd.dev.sigstore.bundle.v0.3+json"))
    return "accept" if result.passed else "reject"


@pytest.mark.parametrize("check", json.loads((CS16 / "case.json").read_text())["checks"], ids=lambda c: c["name"])
def test_cs16_sigstore_bundle(check: dict[str, Any]) -> None:
    assert _cs16_verdict(check) == check["expected"]
