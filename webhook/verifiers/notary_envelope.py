"""Notary Project signature envelopes: JWS JSON serialization and COSE_Sign1, parsed and integrity-checked.

`open_envelope` takes the bytes of a signature layer and returns its signed content only after the signature
verifies with the key of the first certificate of its chain. Trust in that certificate is decided elsewhere
(webhook.verifiers.notation): this module answers "was this exact content signed by this certificate".

Both formats carry the same signed attributes; every header listed as critical must be one this verifier
understands, and the verification-plugin attributes are refused because trustgate runs no plugins.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from webhook import strictjson

JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
PAYLOAD_CONTENT_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"

SIGNING_SCHEME = "io.cncf.notary.signingScheme"
SIGNING_TIME = "io.cncf.notary.signingTime"
EXPIRY = "io.cncf.notary.expiry"
AUTHENTIC_SIGNING_TIME = "io.cncf.notary.authenticSigningTime"
VERIFICATION_PLUGIN = "io.cncf.notary.verificationPlugin"
VERIFICATION_PLUGIN_MIN_VERSION = "io.cncf.notary.verificationPluginMinVersion"
SIGNING_AGENT = "io.cncf.notary.signingAgent"
TIMESTAMP_SIGNATURE = "io.cncf.notary.timestampSignature"

_UNDERSTOOD_CRITICAL = {SIGNING_SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME}
_PLUGIN_ATTRIBUTES = (VERIFICATION_PLUGIN, VERIFICATION_PLUGIN_MIN_VERSION)
MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_CERTIFICATES = 10


class EnvelopeError(ValueError):
    """The envelope is malformed, uses something unsupported, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str
    hash: hashes.HashAlgorithm
    # The ECDSA curve size the algorithm is defined for; None for RSASSA-PSS, which fits any RSA key >= 2048.
    curve_bits: int | None


_ALGORITHMS: dict[str, Algorithm] = {
    "PS256": Algorithm("PS256", hashes.SHA256(), None),
    "PS384": Algorithm("PS384", hashes.SHA384(), None),
    "PS512": Algorithm("PS512", hashes.SHA512(), None),
    "ES256": Algorithm("ES256", hashes.SHA256(), 256),
    "ES384": Algorithm("ES384", hashes.SHA384(), 384),
    "ES512": Algorithm("ES512", hashes.SHA512(), 521),
}
_COSE_ALGORITHMS = {-37: "PS256", -38: "PS384", -39: "PS512", -7: "ES256", -35: "ES384", -36: "ES512"}


@dataclass(frozen=True, slots=True)
class Envelope:
    """The verified content of one signature envelope."""

    media_type: str
    payload: bytes
    signing_scheme: str
    algorithm: str
    certificates: tuple[x509.Certificate, ...]
    signature: bytes  # the raw signature value: what an RFC 3161 countersignature timestamps
    signing_time: datetime | None = None
    authentic_signing_time: datetime | None = None
    expiry: datetime | None = None
    timestamp_token: bytes | None = None
    signing_agent: str | None = None
    extended_attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]


def open_envelope(media_type: str, data: bytes) -> Envelope:
    """Parse an envelope of `media_type` and verify its signature; raise EnvelopeError otherwise."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope of {len(data)} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte limit")
    if media_type == JWS_MEDIA_TYPE:
        return _open_jws(data)
    if media_type == COSE_MEDIA_TYPE:
        return _open_cose(data)
    raise EnvelopeError(f"unsupported signature envelope media type {media_type!r}")


# --- shared checks --------------------------------------------------------------------------------------


def _certificates(encoded: list[bytes]) -> tuple[x509.Certificate, ...]:
    if not encoded:
        raise EnvelopeError("the envelope carries no certificate chain")
    if len(encoded) > MAX_CERTIFICATES:
        raise EnvelopeError(f"certificate chain of {len(encoded)} certificates exceeds {MAX_CERTIFICATES}")
    try:
        return tuple(x509.load_der_x509_certificate(der) for der in encoded)
    except ValueError as exc:
        raise EnvelopeError(f"certificate chain: not a DER certificate: {exc}") from None


def _verify(algorithm_name: str, leaf: x509.Certificate, signature: bytes, signed: bytes) -> None:
    algorithm = _ALGORITHMS.get(algorithm_name)
    if algorithm is None:
        raise EnvelopeError(f"signature algorithm {algorithm_name!r} is not supported "
                            f"(supported: {', '.join(_ALGORITHMS)})")
    key = leaf.public_key()
    try:
        if algorithm.curve_bits is None:
            if not isinstance(key, rsa.RSAPublicKey):
                raise EnvelopeError(f"{algorithm.name} needs an RSA key; the signing certificate has another type")
            if key.key_size < 2048:
                raise EnvelopeError(f"RSA key of {key.key_size} bits is too small")
            key.verify(signature, signed,
                       padding.PSS(mgf=padding.MGF1(algorithm.hash), salt_length=algorithm.hash.digest_size),
                       algorithm.hash)
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.key_size != algorithm.curve_bits:
                raise EnvelopeError(f"{algorithm.name} needs an ECDSA P-{algorithm.curve_bits} key; "
                                    "the signing certificate has another key")
            width = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * width:
                raise EnvelopeError(f"{algorithm.name} signature has {len(signature)} bytes, expected {2 * width}")
            der = encode_dss_signature(int.from_bytes(signature[:width], "big"),
                                       int.from_bytes(signature[width:], "big"))
            key.verify(der, signed, ec.ECDSA(algorithm.hash))
    except InvalidSignature:
        raise EnvelopeError(f"{algorithm.name} signature does not verify with the signing certificate's key") from None


def _check_attributes(protected: Mapping[Any, Any], critical: Any) -> None:
    if not isinstance(critical, list | tuple) or not critical or not all(isinstance(name, str) for name in critical):
        raise EnvelopeError("the critical header list is missing or not a list of names")
    for plugin in _PLUGIN_ATTRIBUTES:
        if plugin in protected:
            raise EnvelopeError(f"the signature requires a verification plugin ({plugin}={protected[plugin]!r}); "
                                "trustgate runs no plugins")
    not_understood = [name for name in critical if name not in _UNDERSTOOD_CRITICAL]
    if not_understood:
        raise EnvelopeError(f"critical attributes not understood: {', '.join(not_understood)}")
    if SIGNING_SCHEME not in critical:
        raise EnvelopeError(f"{SIGNING_SCHEME} must be marked critical")
    for name in (EXPIRY, AUTHENTIC_SIGNING_TIME):
        if name in protected and name not in critical:
            raise EnvelopeError(f"{name} is present but not marked critical")


def _check_scheme(scheme: Any, signing_time: datetime | None, authentic_time: datetime | None) -> str:
    if scheme == SCHEME_X509:
        if signing_time is None:
            raise EnvelopeError(f"scheme {SCHEME_X509} requires {SIGNING_TIME}")
        if authentic_time is not None:
            raise EnvelopeError(f"scheme {SCHEME_X509} must not carry {AUTHENTIC_SIGNING_TIME}")
    elif scheme == SCHEME_SIGNING_AUTHORITY:
        if authentic_time is None:
            raise EnvelopeError(f"scheme {SCHEME_SIGNING_AUTHORITY} requires {AUTHENTIC_SIGNING_TIME}")
    else:
        raise EnvelopeError(f"unsupported signing scheme {scheme!r}")
    return str(scheme)


# --- JWS ----------------------------------------------------------------------------------------------

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_JWS_PROTECTED_NAMES = {"alg", "crit", "cty", SIGNING_SCHEME, SIGNING_TIME, EXPIRY, AUTHENTIC_SIGNING_TIME,
                        VERIFICATION_PLUGIN, VERIFICATION_PLUGIN_MIN_VERSION}


def _b64url(value: Any, what: str) -> bytes:
    # JWS uses unpadded base64url (RFC 7515 section 2); padding or other alphabets are malformed input.
    if not isinstance(value, str) or not _BASE64URL.match(value) or len(value) % 4 == 1:
        raise EnvelopeError(f"{what} is not unpadded base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64std(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise EnvelopeError(f"{what} is not base64") from None


def _signed_times(protected: Mapping[Any, Any], parse: Callable[[Any, str], datetime],
                  ) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(signing time, authentic signing time, expiry) from the protected header, each optional, read with the
    envelope format's own time encoding."""
    def read(name: str) -> datetime | None:
        return parse(protected[name], name) if name in protected else None

    return read(SIGNING_TIME), read(AUTHENTIC_SIGNING_TIME), read(EXPIRY)


def _rfc3339(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise EnvelopeError(f"{what} is not an RFC 3339 time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EnvelopeError(f"{what} {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise EnvelopeError(f"{what} {value!r} has no time zone")
    return moment.astimezone(UTC)


def _open_jws(data: bytes) -> Envelope:
    try:
        document = strictjson.loads(data)
    except strictjson.StrictJSONError as exc:
        raise EnvelopeError(f"JWS envelope is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"payload", "protected", "header", "signature"}:
        raise EnvelopeError("JWS envelope must be a flattened JSON serialization with exactly payload, "
                            "protected, header and signature")
    payload = _b64url(document["payload"], "JWS payload")
    protected_bytes = _b64url(document["protected"], "JWS protected header")
    signature = _b64url(document["signature"], "JWS signature")
    header = document["header"]
    if not isinstance(header, dict):
        raise EnvelopeError("JWS unprotected header is not an object")
    try:
        protected = strictjson.loads(protected_bytes)
    except strictjson.StrictJSONError as exc:
        raise EnvelopeError(f"JWS protected header is not valid JSON: {exc}") from None
    if not isinstance(protected, dict):
        raise EnvelopeError("JWS protected header is not an object")

    chain = header.get("x5c")
    if not isinstance(chain, list):
        raise EnvelopeError("JWS header has no x5c certificate chain")
    certificates = _certificates([_b64std(entry, "x5c entry") for entry in chain])
    algorithm = protected.get("alg")
    if not isinstance(algorithm, str):
        raise EnvelopeError("JWS protected header has no alg")
    signing_input = document["protected"].encode() + b"." + document["payload"].encode()
    _verify(algorithm, certificates[0], signature, signing_input)

    # Only signed content is interpreted from here on.
    if protected.get("cty") != PAYLOAD_CONTENT_TYPE:
        raise EnvelopeError(f"payload content type {protected.get('cty')!r} is not {PAYLOAD_CONTENT_TYPE}")
    _check_attributes(protected, protected.get("crit"))
    signing_time, authentic_time, expiry = _signed_times(protected, _rfc3339)
    scheme = _check_scheme(protected.get(SIGNING_SCHEME), signing_time, authentic_time)
    token = header.get(TIMESTAMP_SIGNATURE)
    agent = header.get(SIGNING_AGENT)
    return Envelope(
        media_type=JWS_MEDIA_TYPE, payload=payload, signing_scheme=scheme, algorithm=algorithm,
        certificates=certificates, signature=signature, signing_time=signing_time,
        authentic_signing_time=authentic_time, expiry=expiry,
        timestamp_token=_b64std(token, TIMESTAMP_SIGNATURE) if token is not None else None,
        signing_agent=agent if isinstance(agent, str) else None,
        extended_attributes={k: v for k, v in protected.items() if k not in _JWS_PROTECTED_NAMES},
    )


# --- COSE ---------------------------------------------------------------------------------------------

_COSE_SIGN1_TAG = 18
_COSE_ALG, _COSE_CRIT, _COSE_CONTENT_TYPE, _COSE_X5CHAIN = 1, 2, 3, 33
_COSE_PROTECTED_NAMES = {_COSE_ALG, _COSE_CRIT, _COSE_CONTENT_TYPE, SIGNING_SCHEME, SIGNING_TIME, EXPIRY,
                         AUTHENTIC_SIGNING_TIME, VERIFICATION_PLUGIN, VERIFICATION_PLUGIN_MIN_VERSION}


def _cose_time(value: Any, what: str) -> datetime:
    # Notary COSE times are CBOR tag 1 (epoch seconds), which cbor2 decodes to an aware datetime.
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    raise EnvelopeError(f"{what} is not a CBOR epoch time (tag 1)")


def _open_cose(data: bytes) -> Envelope:
    try:
        message = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise EnvelopeError(f"COSE envelope is not valid CBOR: {exc}") from None
    if not isinstance(message, cbor2.CBORTag) or message.tag != _COSE_SIGN1_TAG:
        raise EnvelopeError("COSE envelope is not a tagged COSE_Sign1 message")
    body = message.value
    if not isinstance(body, list | tuple) or len(body) != 4:
        raise EnvelopeError("COSE_Sign1 must be an array of 4 elements")
    protected_bytes, unprotected, payload, signature = body
    if not isinstance(protected_bytes, bytes) or not isinstance(unprotected, Mapping) \
            or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise EnvelopeError("COSE_Sign1 elements have the wrong types (detached payloads are not supported)")
    try:
        protected = cbor2.loads(protected_bytes)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise EnvelopeError(f"COSE protected header is not valid CBOR: {exc}") from None
    if not isinstance(protected, Mapping):
        raise EnvelopeError("COSE protected header is not a map")

    chain = unprotected.get(_COSE_X5CHAIN)
    if isinstance(chain, bytes):
        chain = [chain]
    if not isinstance(chain, list | tuple) or not all(isinstance(entry, bytes) for entry in chain):
        raise EnvelopeError("COSE unprotected header has no x5chain certificate chain")
    certificates = _certificates(list(chain))
    algorithm = _COSE_ALGORITHMS.get(protected.get(_COSE_ALG))  # type: ignore[arg-type]
    if algorithm is None:
        raise EnvelopeError(f"COSE algorithm {protected.get(_COSE_ALG)!r} is not supported")
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
    _verify(algorithm, certificates[0], signature, to_be_signed)

    if protected.get(_COSE_CONTENT_TYPE) != PAYLOAD_CONTENT_TYPE:
        raise EnvelopeError(f"payload content type {protected.get(_COSE_CONTENT_TYPE)!r} is not "
                            f"{PAYLOAD_CONTENT_TYPE}")
    critical = protected.get(_COSE_CRIT)
    _check_attributes(protected, critical)
    signing_time, authentic_time, expiry = _signed_times(protected, _cose_time)
    scheme = _check_scheme(protected.get(SIGNING_SCHEME), signing_time, authentic_time)
    token = unprotected.get(TIMESTAMP_SIGNATURE)
    if token is not None and not isinstance(token, bytes):
        raise EnvelopeError(f"{TIMESTAMP_SIGNATURE} is not a byte string")
    agent = unprotected.get(SIGNING_AGENT)
    return Envelope(
        media_type=COSE_MEDIA_TYPE, payload=payload, signing_scheme=scheme, algorithm=algorithm,
        certificates=certificates, signature=signature, signing_time=signing_time,
        authentic_signing_time=authentic_time, expiry=expiry, timestamp_token=token,
        signing_agent=agent if isinstance(agent, str) else None,
        extended_attributes={str(k): v for k, v in protected.items() if k not in _COSE_PROTECTED_NAMES},
    )
