"""cosign verifier units: configuration faults, Rekor bundles made here, hash algorithms, identities, the source."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.helpers import key_store, resolved, resources, trust_policy
from webhook.artifacts import SignatureMaterial
from webhook.config import ConfigFileError
from webhook.policy.compile import compile_policy_set
from webhook.policy.models import CertificateIdentity
from webhook.registry.client import OCI_MANIFEST, Manifest, RegistrySettings
from webhook.rekor import RekorError, canonical_payload, check_entry_matches, rekor_log_key, verify_bundle
from webhook.sources.cosign_tag import SIMPLE_SIGNING_MEDIA_TYPE, CosignSignatureTag, signature_tag
from webhook.verifiers.cosign import (
    BUNDLE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    CosignAuthorityVerifier,
)
from webhook.verifiers.cosign_trust import IdentityConstraint, _der_utf8_string, certificate_issuer

CS13 = Path(__file__).parents[1] / "conformance" / "cosign" / "cs-13-fulcio-rekor-keyless"
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
REFERENCE = "registry.example.com/team/app"


def pem(private_key: Any) -> str:
    text: str = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return text


def payload(reference: str = REFERENCE, manifest: bytes = MANIFEST) -> bytes:
    digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": {"team": "payments"}}).encode()


def compile_authority(entries: list[dict[str, Any]], **authority: Any) -> CosignAuthorityVerifier:
    policy = trust_policy("p", ["**"], [{"name": "a", "cosign": {"trustStore": "s", **authority}}])
    verifier = compile_policy_set(resources(key_store("s", entries), policy)).policies[0].authorities[0].verifier
    assert isinstance(verifier, CosignAuthorityVerifier)
    return verifier


def material(data: bytes, signature: bytes, **annotations: str) -> SignatureMaterial:
    return SignatureMaterial("layer 0", data, SIMPLE_SIGNING_MEDIA_TYPE,
                             {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(), **annotations})


# --- configuration -------------------------------------------------------------------------------------

P256 = ec.generate_private_key(ec.SECP256R1())
ROOT_PEM = (CS13 / "fulcio_v1.crt.pem").read_text()


@pytest.mark.parametrize(("entries", "authority", "message"), [
    ([{"name": "k", "publicKey": pem(P256)}], {"trustStore": "missing"}, "TrustStore 'missing' not found"),
    ([{"name": "k", "publicKey": pem(P256)}], {"keys": ["nope"]}, "no publicKey or x509 (role ca) entry 'nope'"),
    ([{"name": "r", "rekorPublicKey": pem(P256)}], {}, "holds no publicKey or x509"),
    ([{"name": "k", "publicKey": pem(P256)}, {"name": "ca", "x509": {"role": "ca", "certificates": ROOT_PEM}}],
     {}, "either with public keys or with x509 roots"),
    ([{"name": "ca", "x509": {"role": "ca", "certificates": ROOT_PEM}}], {}, "certificateIdentity: required"),
    ([{"name": "k", "publicKey": pem(P256)}], {"certificateIdentity": {"subject": "a@b"}}, "applies to x509 roots"),
    ([{"name": "k", "publicKey": pem(P256)}], {"transparencyLog": {"require": True}}, "holds no rekorPublicKey"),
    ([{"name": "k", "publicKey": pem(P256)},
      {"name": "r", "rekorPublicKey": pem(rsa.generate_private_key(65537, 2048))}], {}, "Rekor keys must be ECDSA"),
    ([{"name": "k", "publicKey": pem(P256)}], {"signaturesRepository": "registry.example.com/sigs:v1"},
     "must not have a tag or digest"),
    ([{"name": "ca", "x509": {"role": "ca", "certificates": ROOT_PEM}}],
     {"certificateIdentity": {"subjectRegExp": "("}}, "not a valid regular expression"),
    ([{"name": "ca", "x509": {"role": "ca", "certificates": ROOT_PEM}}],
     {"certificateIdentity": {"issuer": "https://issuer"}}, "exactly one of subject, subjectRegExp"),
    ([{"name": "k", "publicKey": pem(ed25519.Ed25519PrivateKey.generate()), "hashAlgorithm": "sha384"}], {},
     "a hashAlgorithm does not apply"),
    ([{"name": "r", "rekorPublicKey": pem(P256), "hashAlgorithm": "sha384"}], {}, "publicKey entries only"),
])
def test_configuration_faults(entries: list[dict[str, Any]], authority: dict[str, Any], message: str) -> None:
    with pytest.raises((ConfigFileError, ValueError), match=re.escape(message)):
        compile_authority(entries, **authority)


def test_x509_entry_without_a_self_signed_root_is_refused() -> None:
    chain = json.loads((CS13 / "signature-1" / "annotations.json").read_text())["dev.sigstore.cosign/chain"]
    intermediate = chain.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    with pytest.raises(ConfigFileError, match="no self-signed root"):
        compile_authority([{"name": "ca", "x509": {"role": "ca", "certificates": intermediate}}],
                          certificateIdentity={"subject": "a@b"})


# --- keys and hash algorithms ----------------------------------------------------------------------------


def test_p384_key_verifies_with_the_hash_its_entry_names() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    data = payload()
    signed_sha384 = material(data, key.sign(data, ec.ECDSA(hashes.SHA384())))
    image = resolved(REFERENCE + ":v1", MANIFEST)
    default = compile_authority([{"name": "k", "publicKey": pem(key)}])
    assert default.verify_signature(image, signed_sha384).code == "cosign.signature"
    sha384 = compile_authority([{"name": "k", "publicKey": pem(key), "hashAlgorithm": "sha384"}])
    assert sha384.verify_signature(image, signed_sha384).passed


def test_signature_by_a_trusted_key_reports_its_fingerprint_and_ignores_optional() -> None:
    data = payload()
    verifier = compile_authority([{"name": "k", "publicKey": pem(P256)}])
    result = verifier.verify_signature(resolved(REFERENCE + ":v1", MANIFEST),
                                       material(data, P256.sign(data, ec.ECDSA(hashes.SHA256()))))
    assert result.passed, result.message
    der = P256.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert result.signer == f"sha256:{hashlib.sha256(der).hexdigest()}"


def test_material_of_another_media_type_is_not_a_signature() -> None:
    data = payload()
    signed = material(data, P256.sign(data, ec.ECDSA(hashes.SHA256())))
    other = SignatureMaterial(signed.label, data, "application/octet-stream", signed.annotations)
    verifier = compile_authority([{"name": "k", "publicKey": pem(P256)}])
    assert verifier.verify_signature(resolved(REFERENCE + ":v1", MANIFEST), other).code == "cosign.media_type"


# --- Rekor bundles made here -----------------------------------------------------------------------------

LOG = ec.generate_private_key(ec.SECP256R1())


def hashedrekord(data: bytes, signature: bytes, public_pem: str) -> dict[str, Any]:
    return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()}},
        "signature": {"content": base64.b64encode(signature).decode(),
                      "publicKey": {"content": base64.b64encode(public_pem.encode()).decode()}}}}


def bundle(entry: dict[str, Any], *, integrated_time: int = 1_700_000_000, log: Any = LOG,
           signed_time: int | None = None) -> str:
    body = base64.b64encode(json.dumps(entry).encode()).decode()
    log_id = rekor_log_key("log", log.public_key()).log_id
    signed = canonical_payload(body, signed_time or integrated_time, 7, log_id)
    return json.dumps({"SignedEntryTimestamp": base64.b64encode(log.sign(signed, ec.ECDSA(hashes.SHA256()))).decode(),
                       "Payload": {"body": body, "integratedTime": integrated_time, "logIndex": 7, "logID": log_id}})


def log_keys() -> dict[str, Any]:
    key = rekor_log_key("log", LOG.public_key())
    return {key.log_id: key}


def test_bundle_made_like_rekor_verifies_and_matches() -> None:
    data = payload()
    signature = P256.sign(data, ec.ECDSA(hashes.SHA256()))
    entry = verify_bundle(bundle(hashedrekord(data, signature, pem(P256))), log_keys())
    assert entry.integrated_time.timestamp() == 1_700_000_000 and entry.log_index == 7
    check_entry_matches(entry, data, signature, P256.public_key())


def test_integrated_time_is_covered_by_the_set() -> None:
    data = payload()
    signature = P256.sign(data, ec.ECDSA(hashes.SHA256()))
    forged = bundle(hashedrekord(data, signature, pem(P256)), integrated_time=1_800_000_000,
                    signed_time=1_700_000_000)
    with pytest.raises(RekorError, match="does not verify"):
        verify_bundle(forged, log_keys())


@pytest.mark.parametrize("field", ["payload", "signature", "key"])
def test_entry_must_record_this_signature(field: str) -> None:
    data = payload()
    signature = P256.sign(data, ec.ECDSA(hashes.SHA256()))
    other_key = ec.generate_private_key(ec.SECP256R1())
    logged = {"payload": (b"other", signature, pem(P256)), "signature": (data, b"other", pem(P256)),
              "key": (data, signature, pem(other_key))}[field]
    entry = verify_bundle(bundle(hashedrekord(*logged)), log_keys())
    with pytest.raises(RekorError, match="records a different"):
        check_entry_matches(entry, data, signature, P256.public_key())


def test_entry_of_another_kind_is_not_understood() -> None:
    entry = verify_bundle(bundle({"apiVersion": "0.0.1", "kind": "intoto", "spec": {}}), log_keys())
    with pytest.raises(RekorError, match="only hashedrekord"):
        check_entry_matches(entry, b"", b"", P256.public_key())


def test_bundle_is_checked_whenever_a_log_key_is_trusted() -> None:
    data = payload()
    signature = P256.sign(data, ec.ECDSA(hashes.SHA256()))
    verifier = compile_authority([{"name": "k", "publicKey": pem(P256)}, {"name": "log", "rekorPublicKey": pem(LOG)}])
    image = resolved(REFERENCE + ":v1", MANIFEST)
    good = material(data, signature, **{BUNDLE_ANNOTATION: bundle(hashedrekord(data, signature, pem(P256)))})
    result = verifier.verify_signature(image, good)
    assert result.passed and result.details["rekorLogIndex"] == "7"
    grafted = material(data, signature, **{BUNDLE_ANNOTATION: bundle(hashedrekord(b"x", signature, pem(P256)))})
    assert verifier.verify_signature(image, grafted).code == "cosign.tlog"
    assert verifier.verify_signature(image, material(data, signature)).passed  # optional unless required


# --- certificate identities ------------------------------------------------------------------------------

CS13_LEAF = x509.load_pem_x509_certificate(
    json.loads((CS13 / "signature-1" / "annotations.json").read_text())["dev.sigstore.cosign/certificate"].encode())


def test_identity_regular_expressions_are_anchored() -> None:
    assert certificate_issuer(CS13_LEAF) == "https://github.com/login/oauth"
    partial = IdentityConstraint.compile(CertificateIdentity(subjectRegExp="mitr@redhat", issuerRegExp=".*"))
    with pytest.raises(ValueError, match="not /mitr@redhat/"):
        partial.check(CS13_LEAF)
    issuer_prefix = IdentityConstraint.compile(CertificateIdentity(subject="mitr@redhat.com",
                                                                   issuerRegExp="https://github.com"))
    with pytest.raises(ValueError, match=re.escape("issuer https://github.com/login/oauth is not")):
        issuer_prefix.check(CS13_LEAF)
    whole = IdentityConstraint.compile(CertificateIdentity(subjectRegExp=r"[a-z]+@redhat\.com",
                                                           issuerRegExp=r"https://github\.com/.*"))
    assert whole.check(CS13_LEAF) == "mitr@redhat.com"


def test_der_utf8_string() -> None:
    assert _der_utf8_string(b"\x0c\x05hello") == "hello"
    long_value = "x" * 200
    assert _der_utf8_string(b"\x0c\x81\xc8" + long_value.encode()) == long_value
    assert _der_utf8_string(b"\x0c\x06hello") is None
    assert _der_utf8_string(b"\x13\x05hello") is None


# --- the .sig tag source ---------------------------------------------------------------------------------


class FakeRegistry:
    """Serves one signature manifest and its blobs, as the registry client would after hashing them."""

    def __init__(self, layers: list[dict[str, Any]], blobs: dict[str, bytes]) -> None:
        self.document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "layers": layers}
        self.blobs = blobs
        self.asked: list[str] = []
        self.settings = RegistrySettings()

    async def get_manifest(self, reference: Any, tag: str) -> Manifest | None:
        self.asked.append(f"{reference.repository}:{tag}")
        data = json.dumps(self.document).encode()
        return Manifest(data, f"sha256:{hashlib.sha256(data).hexdigest()}", OCI_MANIFEST, self.document)

    async def get_blob(self, reference: Any, digest: str, limit: int | None = None) -> bytes:
        return self.blobs[digest]


def layer(data: bytes, media_type: str = SIMPLE_SIGNING_MEDIA_TYPE, size: int | None = None) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
            "size": len(data) if size is None else size, "annotations": {SIGNATURE_ANNOTATION: "c2ln"}}


def collect(registry: FakeRegistry, source: CosignSignatureTag) -> Any:
    return asyncio.run(source.collect(resolved(REFERENCE + ":v1", MANIFEST), registry))  # type: ignore[arg-type]


def test_source_reads_signature_layers_and_reports_the_rest() -> None:
    data = payload()
    registry = FakeRegistry([layer(data), layer(b"other", "text/plain"), layer(data, size=10**6)],
                            {f"sha256:{hashlib.sha256(data).hexdigest()}": data})
    found = collect(registry, CosignSignatureTag())
    digest = f"sha256:{hashlib.sha256(MANIFEST).hexdigest()}"
    assert registry.asked == [f"{REFERENCE}:{signature_tag(digest)}"]
    assert [item.data for item in found.materials] == [data]
    assert [message for _, message in found.problems] == [
        f"media type text/plain is not {SIMPLE_SIGNING_MEDIA_TYPE}; not a signature",
        "payload of 1000000 bytes exceeds 65536"]


def test_source_caps_the_number_of_layers_and_uses_the_signatures_repository() -> None:
    from webhook.references import parse_reference

    data = payload()
    registry = FakeRegistry([layer(data)] * 5, {f"sha256:{hashlib.sha256(data).hexdigest()}": data})
    found = collect(registry, CosignSignatureTag(parse_reference("sigs.example.com/store"), limit=3))
    assert len(found.materials) == 3
    assert found.problems[-1][1] == "holds 5 layers; only the first 3 were examined"
    assert registry.asked[0].startswith("sigs.example.com/store:sha256-")
