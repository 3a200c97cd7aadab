"""Envelope checks that no conformance vector exercises: critical headers, plugins, schemes, algorithms."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from tests.certificates import Issued, issue
from webhook.verifiers.notary_envelope import JWS_MEDIA_TYPE, EnvelopeError, open_envelope

PAYLOAD = json.dumps({"targetArtifact": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                         "digest": "sha256:" + "a" * 64, "size": 1}}).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(signer: Issued, **protected: Any) -> bytes:
    header = {"alg": "ES256", "cty": "application/vnd.cncf.notary.payload.v1+json",
              "crit": ["io.cncf.notary.signingScheme"], "io.cncf.notary.signingScheme": "notary.x509",
              "io.cncf.notary.signingTime": "2026-01-15T12:00:00Z", **protected}
    protected_b64, payload_b64 = _b64(json.dumps(header).encode()), _b64(PAYLOAD)
    der = signer.key.sign(f"{protected_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    x5c = [base64.b64encode(signer.certificate.public_bytes(Encoding.DER)).decode()]
    return json.dumps({"payload": payload_b64, "protected": protected_b64, "header": {"x5c": x5c},
                       "signature": _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}).encode()


@pytest.fixture(scope="module")
def signer() -> Issued:
    return issue("release")


def test_valid_es256_envelope(signer: Issued) -> None:
    envelope = open_envelope(JWS_MEDIA_TYPE, jws(signer))
    assert envelope.algorithm == "ES256" and envelope.payload == PAYLOAD


@pytest.mark.parametrize(("protected", "message"), [
    ({"crit": ["io.cncf.notary.signingScheme", "com.example.mustUnderstand"],
      "com.example.mustUnderstand": 1}, "not understood"),
    ({"crit": []}, "critical header list"),
    ({"crit": ["io.cncf.notary.expiry"], "io.cncf.notary.expiry": "2027-01-01T00:00:00Z"}, "signingScheme must be"),
    ({"io.cncf.notary.expiry": "2027-01-01T00:00:00Z"}, "not marked critical"),
    ({"io.cncf.notary.verificationPlugin": "com.example.plugin"}, "verification plugin"),
    ({"io.cncf.notary.signingScheme": "notary.default.x509"}, "unsupported signing scheme"),
    ({"io.cncf.notary.signingTime": None}, "RFC 3339"),
    ({"cty": "application/json"}, "content type"),
    ({"alg": "ES384"}, "P-384"),
    ({"alg": "none"}, "not supported"),
])
def test_refused_envelopes(signer: Issued, protected: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        open_envelope(JWS_MEDIA_TYPE, jws(signer, **protected))


def test_signing_authority_scheme_needs_authentic_signing_time(signer: Issued) -> None:
    with pytest.raises(EnvelopeError, match=r"requires io\.cncf\.notary\.authenticSigningTime"):
        open_envelope(JWS_MEDIA_TYPE, jws(signer, **{"io.cncf.notary.signingScheme": "notary.x509.signingAuthority"}))


def test_unknown_media_type_and_garbage(signer: Issued) -> None:
    with pytest.raises(EnvelopeError, match="media type"):
        open_envelope("application/vnd.oci.image.layer.v1.tar", jws(signer))
    with pytest.raises(EnvelopeError, match=r"valid CBOR|COSE"):
        open_envelope("application/cose", b"invalid signature\n")
