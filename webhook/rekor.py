"""Offline checks of Rekor transparency-log bundles: no request ever goes to Rekor.

cosign attaches what Rekor answered when the signature was logged as the `dev.sigstore.cosign/bundle`
annotation: `{"SignedEntryTimestamp": base64, "Payload": {"body", "integratedTime", "logIndex", "logID"}}`.
The signed entry timestamp (SET) is the log's ECDSA signature over the RFC 8785 canonical JSON of `Payload`;
`logID` is the SHA-256 of the log key's DER SubjectPublicKeyInfo. A verified SET proves the log recorded the
entry in `body` at `integratedTime`; the entry must then be shown to be this very signature (same payload
hash, same signature bytes, same key or certificate), or a bundle could be grafted onto another signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook import strictjson
from webhook.trust import PublicKey

MAX_BUNDLE_DEPTH = 8
_MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 serializes numbers as IEEE 754 doubles
_HASHEDREKORD = ("hashedrekord", "0.0.1")


class RekorError(ValueError):
    """A bundle that does not prove this signature was logged by a trusted log."""


@dataclass(frozen=True, slots=True)
class RekorLogKey:
    name: str
    key: ec.EllipticCurvePublicKey
    log_id: str


@dataclass(frozen=True, slots=True)
class RekorEntry:
    """A log entry whose SET verified: when and where it was logged, and what was logged."""

    integrated_time: datetime
    log_index: int
    log_key: str
    body: dict[str, Any]


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def rekor_log_key(name: str, key: PublicKey) -> RekorLogKey:
    """A TrustStore `rekorPublicKey` as a log key; Rekor signs entry timestamps with ECDSA only."""
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"Rekor key {name!r} is {type(key).__name__.removeprefix('_')}; Rekor keys must be ECDSA")
    return RekorLogKey(name, key, hashlib.sha256(spki_der(key)).hexdigest())


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise RekorError(f"{what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise RekorError(f"{what} is not base64") from None


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SAFE_INTEGER:
        raise RekorError(f"{what} is not a non-negative integer")
    return value


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RekorError(f"{what} is not a JSON object")
    return value


def canonical_payload(body: str, integrated_time: int, log_index: int, log_id: str) -> bytes:
    """RFC 8785 form of the SET payload: sorted keys, no whitespace (the values here need no escaping)."""
    document = {"body": body, "integratedTime": integrated_time, "logID": log_id, "logIndex": log_index}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_bundle(text: str, log_keys: dict[str, RekorLogKey]) -> RekorEntry:
    """Verify a bundle's SET with the trusted log keys (by log ID); return the entry it vouches for."""
    try:
        bundle = _object(strictjson.loads(text.encode(), MAX_BUNDLE_DEPTH), "bundle")
    except (strictjson.StrictJSONError, UnicodeEncodeError) as exc:
        raise RekorError(f"bundle is not valid JSON: {exc}") from None
    signed_entry_timestamp = _b64(bundle.get("SignedEntryTimestamp"), "SignedEntryTimestamp")
    payload = _object(bundle.get("Payload"), "bundle Payload")
    body = payload.get("body")
    if not isinstance(body, str):
        raise RekorError("bundle Payload.body is not a string")
    integrated_time = _integer(payload.get("integratedTime"), "Payload.integratedTime")
    log_index = _integer(payload.get("logIndex"), "Payload.logIndex")
    log_id = payload.get("logID")
    if not isinstance(log_id, str):
        raise RekorError("Payload.logID is not a string")
    log_key = log_keys.get(log_id)
    if log_key is None:
        raise RekorError(f"logged by an untrusted log (log ID {log_id[:64]}); no rekorPublicKey of the "
                         "TrustStore has that ID")
    try:
        log_key.key.verify(signed_entry_timestamp, canonical_payload(body, integrated_time, log_index, log_id),
                           ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise RekorError(f"signed entry timestamp does not verify with Rekor key {log_key.name!r}") from None
    try:
        entry = _object(strictjson.loads(_b64(body, "Payload.body"), MAX_BUNDLE_DEPTH), "log entry")
    except strictjson.StrictJSONError as exc:
        raise RekorError(f"log entry is not valid JSON: {exc}") from None
    return RekorEntry(datetime.fromtimestamp(integrated_time, UTC), log_index, log_key.name, entry)


def check_entry_matches(entry: RekorEntry, payload: bytes, signature: bytes,
                        signer: PublicKey | x509.Certificate) -> None:
    """Raise RekorError unless the logged entry records this payload, signature and key or certificate."""
    kind = (entry.body.get("kind"), entry.body.get("apiVersion"))
    if kind != _HASHEDREKORD:
        raise RekorError(f"log entry of kind {kind[0]!r} version {kind[1]!r}; only hashedrekord 0.0.1 is "
                         "understood")
    spec = _object(entry.body.get("spec"), "log entry spec")
    data_hash = _object(_object(spec.get("data"), "log entry data").get("hash"), "log entry hash")
    if data_hash.get("algorithm") != "sha256" or data_hash.get("value") != hashlib.sha256(payload).hexdigest():
        raise RekorError("the log entry records a different payload")
    logged = _object(spec.get("signature"), "log entry signature")
    if _b64(logged.get("content"), "logged signature") != signature:
        raise RekorError("the log entry records a different signature")
    logged_key = _b64(_object(logged.get("publicKey"), "logged public key").get("content"), "logged public key")
    if not _same_signer(logged_key, signer):
        raise RekorError("the log entry records a different key or certificate")


def _same_signer(logged_pem: bytes, signer: PublicKey | x509.Certificate) -> bool:
    try:
        if isinstance(signer, x509.Certificate):
            return x509.load_pem_x509_certificate(logged_pem) == signer
        return spki_der(serialization.load_pem_public_key(logged_pem)) == spki_der(signer)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
