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
_DSSE = ("dsse", "0.0.1")


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
    return verify_signed_entry(signed_entry_timestamp, body, integrated_time, log_index, log_id, log_keys)


def find_log_key(log_id: str, log_keys: dict[str, RekorLogKey]) -> RekorLogKey:
    log_key = log_keys.get(log_id)
    if log_key is None:
        raise RekorError(f"logged by an untrusted log (log ID {log_id[:64]}); no rekorPublicKey of the "
                         "TrustStore has that ID")
    return log_key


def verify_signed_entry(signed_entry_timestamp: bytes, body: str, integrated_time: int, log_index: int,
                        log_id: str, log_keys: dict[str, RekorLogKey]) -> RekorEntry:
    """Verify a SET over (base64 `body`, time, index, hex log ID); return the entry it vouches for."""
    log_key = find_log_key(log_id, log_keys)
    try:
        log_key.key.verify(signed_entry_timestamp, canonical_payload(body, integrated_time, log_index, log_id),
                           ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise RekorError(f"signed entry timestamp does not verify with Rekor key {log_key.name!r}") from None
    return RekorEntry(datetime.fromtimestamp(integrated_time, UTC), log_index, log_key.name, parse_body(body))


def parse_body(body: str) -> dict[str, Any]:
    """A log entry body (base64 canonical JSON) as a JSON object."""
    try:
        return _object(strictjson.loads(_b64(body, "log entry body"), MAX_BUNDLE_DEPTH), "log entry")
    except strictjson.StrictJSONError as exc:
        raise RekorError(f"log entry is not valid JSON: {exc}") from None


def check_entry_matches(entry: RekorEntry, payload: bytes, signature: bytes,
                        signer: PublicKey | x509.Certificate) -> None:
    """Raise RekorError unless the logged entry records this payload, signature and key or certificate."""
    check_logged_signature(entry.body, hashlib.sha256(payload).hexdigest(), signature, signer)


def check_logged_signature(body: dict[str, Any], payload_sha256: str, signature: bytes,
                           signer: PublicKey | x509.Certificate, *, dsse: bool = False) -> None:
    """Raise RekorError unless a log entry body records this signature by this signer over content whose
    SHA-256 is `payload_sha256`: a `hashedrekord` 0.0.1 entry or, for DSSE envelopes, a `dsse` 0.0.1 entry."""
    kind = (body.get("kind"), body.get("apiVersion"))
    expected = _DSSE if dsse else _HASHEDREKORD
    if kind != expected:
        raise RekorError(f"log entry of kind {kind[0]!r} version {kind[1]!r}; only {' '.join(expected)} is "
                         "understood here")
    if dsse:
        _check_dsse_entry(body, payload_sha256, signature, signer)
        return
    spec = _object(body.get("spec"), "log entry spec")
    data_hash = _object(_object(spec.get("data"), "log entry data").get("hash"), "log entry hash")
    if data_hash.get("algorithm") != "sha256" or data_hash.get("value") != payload_sha256:
        raise RekorError("the log entry records a different payload")
    logged = _object(spec.get("signature"), "log entry signature")
    if _b64(logged.get("content"), "logged signature") != signature:
        raise RekorError("the log entry records a different signature")
    logged_key = _b64(_object(logged.get("publicKey"), "logged public key").get("content"), "logged public key")
    if not _same_signer(logged_key, signer):
        raise RekorError("the log entry records a different key or certificate")


def _check_dsse_entry(body: dict[str, Any], payload_sha256: str, signature: bytes,
                      signer: PublicKey | x509.Certificate) -> None:
    spec = _object(body.get("spec"), "log entry spec")
    payload_hash = _object(spec.get("payloadHash"), "log entry payloadHash")
    if payload_hash.get("algorithm") != "sha256" or payload_hash.get("value") != payload_sha256:
        raise RekorError("the log entry records a different DSSE payload")
    signatures = spec.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise RekorError("the log entry does not record exactly one DSSE signature")
    logged = _object(signatures[0], "logged DSSE signature")
    if _b64(logged.get("signature"), "logged signature") != signature:
        raise RekorError("the log entry records a different signature")
    if not _same_signer(_b64(logged.get("verifier"), "logged verifier"), signer):
        raise RekorError("the log entry records a different key or certificate")


# --- inclusion proofs and checkpoints (RFC 6962 Merkle trees, signed notes) -----------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: list[bytes], root: bytes) -> None:
    """Raise RekorError unless `proof` shows the leaf hash `leaf` at `index` of the tree of `tree_size` leaves
    whose root hash is `root` (the RFC 9162 section 2.1.3.2 algorithm)."""
    if not 0 <= index < tree_size:
        raise RekorError(f"inclusion proof index {index} is outside a tree of {tree_size} entries")
    inner = (index ^ (tree_size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    if len(proof) != inner + border:
        raise RekorError(f"inclusion proof has {len(proof)} hashes; a tree of {tree_size} entries needs "
                         f"{inner + border} for index {index}")
    node = leaf
    for level, sibling in enumerate(proof[:inner]):
        node = _node_hash(node, sibling) if (index >> level) & 1 == 0 else _node_hash(sibling, node)
    for sibling in proof[inner:]:
        node = _node_hash(sibling, node)
    if node != root:
        raise RekorError("inclusion proof does not lead to the recorded root hash")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes


def verify_checkpoint(envelope: str, log_key: RekorLogKey) -> Checkpoint:
    """A Rekor checkpoint (a signed note: origin, tree size, base64 root hash, optional lines, a blank line,
    then `— <name> <base64 key hint + signature>` lines), with one signature verifying with `log_key`."""
    note, separator, signature_block = envelope.partition("\n\n")
    if not separator or not signature_block:
        raise RekorError("checkpoint is not a signed note (no signature block)")
    lines = note.split("\n")
    if len(lines) < 3:
        raise RekorError("checkpoint note has fewer than 3 lines (origin, size, root hash)")
    try:
        tree_size = int(lines[1]) if lines[1].isdigit() else -1
        root_hash = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        raise RekorError("checkpoint root hash is not base64") from None
    if tree_size < 0 or len(root_hash) != hashlib.sha256().digest_size:
        raise RekorError("checkpoint tree size or root hash is malformed")
    signed = (note + "\n").encode()
    key_hint = bytes.fromhex(log_key.log_id)[:4]
    for line in signature_block.rstrip("\n").split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014":
            raise RekorError("checkpoint signature line is malformed")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise RekorError("checkpoint signature is not base64") from None
        if blob[:4] != key_hint:
            continue
        try:
            log_key.key.verify(blob[4:], signed, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise RekorError(f"checkpoint signature does not verify with Rekor key {log_key.name!r}") from None
        return Checkpoint(lines[0], tree_size, root_hash)
    raise RekorError(f"checkpoint carries no signature by Rekor key {log_key.name!r}")


def _same_signer(logged_pem: bytes, signer: PublicKey | x509.Certificate) -> bool:
    try:
        if isinstance(signer, x509.Certificate):
            return x509.load_pem_x509_certificate(logged_pem) == signer
        return spki_der(serialization.load_pem_public_key(logged_pem)) == spki_der(signer)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
