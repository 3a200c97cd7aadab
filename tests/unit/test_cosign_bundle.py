"""sigstore bundles built here with `cryptography` (own keys, test CA, test Rekor key, signed checkpoint), each
check of webhook/verifiers/cosign_bundle.py shown to accept the good bundle and refuse one broken input."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.certificates import NOW, Issued, issue
from tests.helpers import key_store, resolved, resources, trust_policy
from tests.tsa import timestamp_authority
from webhook.artifacts import SignatureMaterial
from webhook.policy.compile import compile_policy_set
from webhook.rekor import canonical_payload, leaf_hash
from webhook.timestamp import token_of_response
from webhook.verifiers.cosign import CosignAuthorityVerifier
from webhook.verifiers.cosign_bundle import pae

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
IMAGE = resolved(f"registry.example.com/team/app@{DIGEST}", MANIFEST)
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
CS16 = Path(__file__).parents[1] / "conformance" / "cosign" / "cs-16-sigstore-bundle-v03-dsse"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pem(key: Any) -> str:
    text: str = key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return text


SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
REKOR_KEY = ec.generate_private_key(ec.SECP256R1())
REKOR_ID = hashlib.sha256(REKOR_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
ROOT = issue("Bundle Root", ca=True)


def with_email(issued: Issued, issuer: Issued, email: str) -> Issued:
    """`issued` re-signed by `issuer` with an email subject alternative name, as cosign identities need."""
    builder = x509.CertificateBuilder(
        issuer.certificate.subject, issued.certificate.subject, issued.key.public_key(),
        issued.certificate.serial_number, issued.certificate.not_valid_before_utc,
        issued.certificate.not_valid_after_utc, [*issued.certificate.extensions]
    ).add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    return Issued(builder.sign(issuer.key, hashes.SHA256()), issued.key)


LEAF = with_email(issue("release", issuer=ROOT), ROOT, "release@example.com")


def statement(digest: str = DIGEST, predicate_type: str = SIGN_PREDICATE) -> bytes:
    return json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": predicate_type,
                       "subject": [{"digest": {"sha256": digest.removeprefix("sha256:")}}], "predicate": {}}).encode()


def dsse_bundle(key: ec.EllipticCurvePrivateKey = SIGNING_KEY, payload: bytes | None = None, *,
                certificate: bool = False) -> dict[str, Any]:
    payload = statement() if payload is None else payload
    signature = key.sign(pae("application/vnd.in-toto+json", payload), ec.ECDSA(hashes.SHA256()))
    material: dict[str, Any] = {"publicKey": {"hint": "ignored"}}
    if certificate:
        material = {"certificate": {"rawBytes": b64(LEAF.certificate.public_bytes(serialization.Encoding.DER))}}
    return {"mediaType": BUNDLE_V03, "verificationMaterial": material,
            "dsseEnvelope": {"payload": b64(payload), "payloadType": "application/vnd.in-toto+json",
                             "signatures": [{"sig": b64(signature)}]}}


def message_bundle(artifact: bytes = MANIFEST) -> dict[str, Any]:
    signature = SIGNING_KEY.sign(artifact, ec.ECDSA(hashes.SHA256()))
    return {"mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.2",
            "verificationMaterial": {"publicKey": {"hint": "ignored"}},
            "messageSignature": {"messageDigest": {"algorithm": "SHA2_256",
                                                   "digest": b64(hashlib.sha256(artifact).digest())},
                                 "signature": b64(signature)}}


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def with_tlog(bundle: dict[str, Any], *, promise: bool = True, proof: bool = True,
              checkpoint_key: ec.EllipticCurvePrivateKey = REKOR_KEY) -> dict[str, Any]:
    """Log the bundle's signature as a dsse 0.0.1 entry at index 2 of a 4-entry tree, with a SET and a proof."""
    bundle = copy.deepcopy(bundle)
    envelope = bundle["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    verifier = pem(SIGNING_KEY) if "publicKey" in bundle["verificationMaterial"] else LEAF.pem
    body = json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "envelopeHash": {"algorithm": "sha256", "value": "00"},
        "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
        "signatures": [{"signature": envelope["signatures"][0]["sig"], "verifier": b64(verifier.encode())}]}},
        separators=(",", ":"), sort_keys=True).encode()
    integrated_time = int((NOW - timedelta(days=1)).timestamp())
    entry: dict[str, Any] = {"logIndex": "2", "logId": {"keyId": b64(REKOR_ID)},
                             "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                             "integratedTime": str(integrated_time), "canonicalizedBody": b64(body)}
    if promise:
        signed = canonical_payload(b64(body), integrated_time, 2, REKOR_ID.hex())
        entry["inclusionPromise"] = {"signedEntryTimestamp": b64(REKOR_KEY.sign(signed, ec.ECDSA(hashes.SHA256())))}
    if proof:
        leaves = [leaf_hash(b"entry 0"), leaf_hash(b"entry 1"), leaf_hash(body), leaf_hash(b"entry 3")]
        root = _node(_node(leaves[0], leaves[1]), _node(leaves[2], leaves[3]))
        note = f"rekor.example.com - 1\n4\n{b64(root)}\n"
        signature = checkpoint_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        entry["inclusionProof"] = {
            "logIndex": "2", "treeSize": "4", "rootHash": b64(root),
            "hashes": [b64(leaves[3]), b64(_node(leaves[0], leaves[1]))],
            "checkpoint": {"envelope": f"{note}\n\u2014 rekor.example.com {b64(REKOR_ID[:4] + signature)}\n"}}
    bundle["verificationMaterial"]["tlogEntries"] = [entry]
    return bundle


TSA = timestamp_authority()


def with_timestamp(bundle: dict[str, Any], response: bytes) -> dict[str, Any]:
    bundle = copy.deepcopy(bundle)
    bundle["verificationMaterial"]["timestampVerificationData"] = {"rfc3161Timestamps": [
        {"signedTimestamp": b64(response)}]}
    return bundle


def signature_of(bundle: dict[str, Any]) -> bytes:
    return base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"])


def verifier(*, certificate: bool = False, rekor: bool = False, tsa: bool = False,
             **authority: Any) -> CosignAuthorityVerifier:
    entries: list[dict[str, Any]] = [{"name": "signer", "publicKey": pem(SIGNING_KEY)}]
    spec: dict[str, Any] = {"trustStore": "s", "keys": ["signer"], **authority}
    if certificate:
        entries = [{"name": "ca", "x509": {"role": "ca", "certificates": ROOT.pem}}]
        spec = {"trustStore": "s", "keys": ["ca"], "certificateIdentity": {"subjectRegExp": ".*"}, **authority}
    if rekor:
        entries.append({"name": "rekor", "rekorPublicKey": pem(REKOR_KEY)})
    if tsa:
        entries.append({"name": "tsa", "x509": {"role": "tsa", "certificates": TSA.root_pem}})
    policy_set = compile_policy_set(resources(key_store("s", entries),
                                              trust_policy("p", ["**"], [{"name": "a", "cosign": spec}])))
    compiled = policy_set.policies[0].authorities[0].verifier
    assert isinstance(compiled, CosignAuthorityVerifier)
    compiled.now = lambda: NOW
    return compiled


def check(bundle: dict[str, Any] | bytes, compiled: CosignAuthorityVerifier | None = None) -> tuple[bool, str, str]:
    data = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    result = (compiled or verifier()).verify_signature(IMAGE, SignatureMaterial("bundle", data, BUNDLE_V03))
    return result.passed, result.code, result.message


# --- key, DSSE statement, messageSignature ----------------------------------------------------------------


def test_dsse_bundle_by_a_trusted_key_passes() -> None:
    assert check(dsse_bundle())[:2] == (True, "signature.valid")


def test_dsse_bundle_by_another_key_fails_whatever_its_hint() -> None:
    assert check(dsse_bundle(OTHER_KEY))[:2] == (False, "cosign.signature")


def test_statement_for_another_digest_fails() -> None:
    passed, code, message = check(dsse_bundle(payload=statement("sha256:" + "ab" * 32)))
    assert (passed, code) == (False, "payload.digest") and f"not the admitted manifest {DIGEST}" in message


def test_predicate_type_must_be_cosigns_unless_the_authority_names_another() -> None:
    attestation = dsse_bundle(payload=statement(predicate_type="https://slsa.dev/provenance/v1"))
    assert check(attestation)[:2] == (False, "payload.invalid")
    assert check(attestation, verifier(predicateType="https://slsa.dev/provenance/v1"))[0]
    assert not check(dsse_bundle(), verifier(predicateType="https://slsa.dev/provenance/v1"))[0]


def test_payload_changed_after_signing_fails() -> None:
    bundle = dsse_bundle()
    bundle["dsseEnvelope"]["payload"] = b64(statement().replace(b"Statement/v1", b"Statement/v0.1"))
    assert check(bundle)[:2] == (False, "cosign.signature")


def test_message_signature_over_the_manifest_passes_and_over_another_artifact_fails() -> None:
    assert check(message_bundle())[0]
    passed, code, _ = check(message_bundle(b'{"schemaVersion":2}'))
    assert (passed, code) == (False, "payload.digest")


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: text.replace('"mediaType"', '"mediaType": "x", "mediaType"', 1), "duplicate JSON key"),
    (lambda text: text.replace(BUNDLE_V03, "application/vnd.dev.sigstore.bundle.v0.9+json"), "is not a sigstore"),
    (lambda text: text.replace('"publicKey"', '"publicKeyX"'), "unknown field"),
])
def test_malformed_bundles_are_refused_with_a_reason(mutate: Callable[[str], str], reason: str) -> None:
    passed, code, message = check(mutate(json.dumps(dsse_bundle())).encode())
    assert (passed, code) == (False, "cosign.bundle") and reason in message, message


# --- certificates -------------------------------------------------------------------------------------------


def test_certificate_chaining_to_the_trusted_root_passes_and_identity_is_applied() -> None:
    assert check(dsse_bundle(LEAF.key, certificate=True), verifier(certificate=True))[0]
    wrong = verifier(certificate=True, certificateIdentity={"subject": "someone@example.com"})
    assert check(dsse_bundle(LEAF.key, certificate=True), wrong)[:2] == (False, "cosign.identity")


def test_certificate_of_another_ca_fails() -> None:
    other_root = issue("Other Root", ca=True)
    stranger = with_email(issue("release", issuer=other_root), other_root, "release@example.com")
    bundle = dsse_bundle(stranger.key, certificate=True)
    bundle["verificationMaterial"]["certificate"]["rawBytes"] = b64(
        stranger.certificate.public_bytes(serialization.Encoding.DER))
    assert check(bundle, verifier(certificate=True))[:2] == (False, "cosign.certificate")


# --- transparency log ---------------------------------------------------------------------------------------


def test_logged_bundle_passes_with_its_integrated_time_as_the_signed_time() -> None:
    compiled = verifier(rekor=True)
    result = compiled.verify_signature(IMAGE, SignatureMaterial(
        "b", json.dumps(with_tlog(dsse_bundle())).encode(), BUNDLE_V03))
    assert result.passed, result.message
    assert result.signed_at == int((NOW - timedelta(days=1)).timestamp())


def test_proof_only_entry_passes_but_gives_no_signed_time() -> None:
    compiled = verifier(rekor=True)
    result = compiled.verify_signature(IMAGE, SignatureMaterial(
        "b", json.dumps(with_tlog(dsse_bundle(), promise=False)).encode(), BUNDLE_V03))
    assert result.passed and result.signed_at is None, result.message


def _entry(bundle: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = bundle["verificationMaterial"]["tlogEntries"][0]
    return entry


def _set_of_another_entry(bundle: dict[str, Any]) -> None:
    _entry(bundle)["integratedTime"] = "12345"


def _proof_hash_changed(bundle: dict[str, Any]) -> None:
    _entry(bundle)["inclusionProof"]["hashes"][0] = b64(b"\0" * 32)


def _checkpoint_for_another_root(bundle: dict[str, Any]) -> None:
    _entry(bundle)["inclusionProof"]["rootHash"] = b64(b"\1" * 32)


def _body_of_another_signature(bundle: dict[str, Any]) -> None:
    entry = _entry(bundle)
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    body["spec"]["payloadHash"]["value"] = "00" * 32
    entry["canonicalizedBody"] = b64(json.dumps(body).encode())
    del entry["inclusionProof"]
    signed = canonical_payload(entry["canonicalizedBody"], int(entry["integratedTime"]), 2, REKOR_ID.hex())
    entry["inclusionPromise"]["signedEntryTimestamp"] = b64(REKOR_KEY.sign(signed, ec.ECDSA(hashes.SHA256())))


@pytest.mark.parametrize(("break_entry", "reason"), [
    (_set_of_another_entry, "signed entry timestamp does not verify"),
    (_proof_hash_changed, "inclusion proof does not lead to the recorded root hash"),
    (_checkpoint_for_another_root, "inclusion proof does not lead"),
    (_body_of_another_signature, "records a different DSSE payload"),
])
def test_broken_log_entries_fail(break_entry: Callable[[dict[str, Any]], None], reason: str) -> None:
    bundle = with_tlog(dsse_bundle())
    break_entry(bundle)
    passed, code, message = check(bundle, verifier(rekor=True))
    assert (passed, code) == (False, "cosign.tlog") and reason in message, message


def test_checkpoint_signed_by_another_key_fails() -> None:
    bundle = with_tlog(dsse_bundle(), promise=False, checkpoint_key=OTHER_KEY)
    passed, code, message = check(bundle, verifier(rekor=True))
    assert (passed, code) == (False, "cosign.tlog") and "checkpoint signature does not verify" in message, message


def test_required_log_entry_missing_fails() -> None:
    compiled = verifier(rekor=True, transparencyLog={"require": True})
    assert check(dsse_bundle(), compiled)[:2] == (False, "cosign.tlog")
    assert check(with_tlog(dsse_bundle()), compiled)[0]


# --- RFC 3161 timestamps ------------------------------------------------------------------------------------

STAMPED_AT = NOW - timedelta(days=2)


def test_timestamp_of_a_trusted_tsa_is_the_signed_time() -> None:
    bundle = dsse_bundle()
    result = verifier(tsa=True).verify_signature(IMAGE, SignatureMaterial(
        "b", json.dumps(with_timestamp(bundle, TSA.stamp(signature_of(bundle), STAMPED_AT))).encode(), BUNDLE_V03))
    assert result.passed, result.message
    assert result.signed_at == int(STAMPED_AT.timestamp())
    assert result.details["signedTime"] == STAMPED_AT.isoformat()


def test_timestamps_are_ignored_without_tsa_roots() -> None:
    bundle = dsse_bundle()
    result = verifier().verify_signature(IMAGE, SignatureMaterial(
        "b", json.dumps(with_timestamp(bundle, TSA.stamp(signature_of(bundle), STAMPED_AT))).encode(), BUNDLE_V03))
    assert result.passed and result.signed_at is None, result.message


def test_certificate_is_checked_at_the_timestamp_not_now() -> None:
    """The leaf expired long before `now`, but was valid when the TSA saw the signature."""
    bundle = dsse_bundle(LEAF.key, certificate=True)
    compiled = verifier(certificate=True, tsa=True)
    compiled.now = lambda: LEAF.certificate.not_valid_after_utc + timedelta(days=30)
    assert check(with_timestamp(bundle, TSA.stamp(signature_of(bundle), STAMPED_AT)), compiled)[0]
    passed, code, message = check(bundle, compiled)
    assert (passed, code) == (False, "cosign.certificate") and "now (no verified signed time)" in message, message


def test_certificate_expired_at_the_timestamp_fails() -> None:
    """Valid now (as `now` is set), but expired when the TSA saw the signature: a signature made with a key
    whose certificate had lapsed."""
    expired = with_email(issue("release", issuer=ROOT, not_before=NOW - timedelta(days=30),
                               not_after=STAMPED_AT - timedelta(days=1)), ROOT, "release@example.com")
    bundle = dsse_bundle(expired.key, certificate=True)
    bundle["verificationMaterial"]["certificate"]["rawBytes"] = b64(
        expired.certificate.public_bytes(serialization.Encoding.DER))
    compiled = verifier(certificate=True, tsa=True)
    compiled.now = lambda: NOW - timedelta(days=20)
    assert check(bundle, compiled)[0]  # without the timestamp it is checked now, when it is valid
    passed, code, message = check(with_timestamp(bundle, TSA.stamp(signature_of(bundle), STAMPED_AT)), compiled)
    assert (passed, code) == (False, "cosign.certificate") and "at its signed time" in message, message


def _backdated(response: bytes) -> bytes:
    """The TSTInfo's genTime moved a year back, the TSA's signature left as it was."""
    stamped = STAMPED_AT.strftime("%Y%m%d%H%M%SZ").encode()
    assert response.count(stamped) == 1
    return response.replace(stamped, (STAMPED_AT - timedelta(days=365)).strftime("%Y%m%d%H%M%SZ").encode())


def _signature_flipped(response: bytes) -> bytes:
    """The last byte of the DER is the last byte of the TSA's signature (no unsigned attributes follow)."""
    return response[:-1] + bytes([response[-1] ^ 0x01])


def _token_only(response: bytes) -> bytes:
    """The bare TimeStampToken (as a Notary Project countersignature holds it), not the TimeStampResp."""
    return token_of_response(response)


OTHER_TSA = timestamp_authority("Other TSA")


@pytest.mark.parametrize(("make", "reason"), [
    (lambda signature: TSA.stamp(b"other bytes", STAMPED_AT), "does not cover this signature"),
    (lambda signature: OTHER_TSA.stamp(signature, STAMPED_AT), "timestamp authority is not trusted"),
    (lambda signature: _backdated(TSA.stamp(signature, STAMPED_AT)), "message-digest attribute does not match"),
    (lambda signature: _signature_flipped(TSA.stamp(signature, STAMPED_AT)), "signature does not verify"),
    (lambda signature: _token_only(TSA.stamp(signature, STAMPED_AT)), "timestamp response cannot be parsed"),
], ids=["other-bytes", "untrusted-tsa", "backdated-tstinfo", "flipped-signature", "token-not-response"])
def test_bad_timestamps_fail(make: Callable[[bytes], bytes], reason: str) -> None:
    bundle = dsse_bundle()
    passed, code, message = check(with_timestamp(bundle, make(signature_of(bundle))), verifier(tsa=True))
    assert (passed, code) == (False, "cosign.timestamp") and reason in message, message


# --- the upstream vector ------------------------------------------------------------------------------------


def test_cs16_keyless_bundle_is_grafted_onto_no_other_image() -> None:
    """The vector's statement names one digest: any other manifest is refused even with the same bundle."""
    data = (CS16 / "bundle.sigstore.json").read_bytes()
    other = resolved(f"registry.example.com/repo@{DIGEST}", MANIFEST)
    result = verifier().verify_signature(other, SignatureMaterial("b", data, BUNDLE_V03))
    assert not result.passed
