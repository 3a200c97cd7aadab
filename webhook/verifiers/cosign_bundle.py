"""cosign's sigstore bundles (v0.1 to v0.3), checked offline with the trust of a cosign authority.

cosign 3 signs an image by default with a bundle kept as an OCI referrer of the image: a DSSE envelope over
an in-toto statement (`predicateType` https://sigstore.dev/cosign/sign/v1, subject = the manifest digest),
or a `messageSignature` over the manifest itself, plus verification material (a key hint, a certificate or
chain), transparency-log entries and RFC 3161 timestamps. A bundle is accepted when, in this order:

1. its JSON is strict and of the documented shape (unknown fields refused);
2. the signature verifies with a trusted key (the bundle's `publicKey` hint is ignored), or with the
   bundle's certificate, over the DSSE pre-authentication encoding or over the admitted manifest bytes;
3. with a trusted `rekorPublicKey`, every log entry proves itself (signed entry timestamp and/or inclusion
   proof up to a checkpoint the log key signed) and records this signature by this signer over this
   content; with `transparencyLog.require`, at least one does;
4. with trusted `tsa` roots, every RFC 3161 timestamp (a TimeStampResp, as the bundle specification says)
   covers the signature bytes and chains to a TSA root;
5. a certificate chains to a trusted root and names the configured identity at every verified signed time
   (log integrated time, timestamp), or now when there is none;
6. the content names the admitted manifest: the statement's subject digest (and its predicateType), or
   the message digest. Where the bundle was found (the referrer's `subject`) proves nothing.

The signed time reported for `maxSignatureAge` comes only from verified timestamps and log entries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from webhook import strictjson
from webhook.artifacts import ResolvedImage, SignatureMaterial
from webhook.policy.models import CosignAuthority
from webhook.rekor import (
    RekorError,
    check_logged_signature,
    find_log_key,
    leaf_hash,
    parse_body,
    verify_checkpoint,
    verify_inclusion,
    verify_signed_entry,
)
from webhook.results import Result
from webhook.sources.referrers import SIGSTORE_BUNDLE_MEDIA_TYPES
from webhook.timestamp import TimestampError, token_of_response, verify_timestamp
from webhook.verifiers.cosign_trust import CosignTrust, SignatureRejected, Signer

BUNDLE_MEDIA_TYPES = frozenset(SIGSTORE_BUNDLE_MEDIA_TYPES)
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1")
MAX_BUNDLE_DEPTH = 16
MAX_CERTIFICATES = 8
MAX_TLOG_ENTRIES = 8
MAX_TIMESTAMPS = 8
MAX_PROOF_HASHES = 64
MAX_STATEMENT_SUBJECTS = 64
_INT64_MAX = 2**63 - 1
_MAX_SAFE_INTEGER = 2**53 - 1


class BundleError(ValueError):
    """A bundle that is not of the documented shape."""


# --- the bundle's shape ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InclusionProof:
    log_index: int
    tree_size: int
    root_hash: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str


@dataclass(frozen=True, slots=True)
class TlogEntry:
    log_index: int
    log_id: str  # hex, as Rekor's SET payload names it
    kind: str
    version: str
    integrated_time: int
    canonicalized_body: str  # base64, as logged
    signed_entry_timestamp: bytes | None
    inclusion_proof: InclusionProof | None


@dataclass(frozen=True, slots=True)
class DsseContent:
    payload: bytes
    payload_type: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class MessageContent:
    algorithm: str
    digest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Bundle:
    media_type: str
    certificates: tuple[x509.Certificate, ...]  # the signing certificate first; empty for a key
    tlog_entries: tuple[TlogEntry, ...]
    timestamps: tuple[bytes, ...]  # DER TimeStampResp of each RFC 3161 timestamp
    content: DsseContent | MessageContent


def _object(value: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where} is not a JSON object")
    missing = [name for name in required if name not in value]
    if missing:
        raise BundleError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise BundleError(f"{where} has unknown field {unknown[0]!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BundleError(f"{where} is not a non-empty string")
    return value


def _bytes(value: Any, where: str) -> bytes:
    try:
        decoded = base64.b64decode(_string(value, where), validate=True)
    except binascii.Error:
        raise BundleError(f"{where} is not base64") from None
    if not decoded:
        raise BundleError(f"{where} is empty")
    return decoded


def _int64(value: Any, where: str) -> int:
    """A protobuf int64 in JSON: a decimal string (as written) or a number."""
    if isinstance(value, str) and value.isdigit() and value.isascii():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise BundleError(f"{where} is not an integer")
    if not 0 <= number <= min(_INT64_MAX, _MAX_SAFE_INTEGER):
        raise BundleError(f"{where} is out of range")
    return number


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise BundleError(f"{where} is not a list")
    if len(value) > limit:
        raise BundleError(f"{where} holds {len(value)} entries, more than {limit}")
    return value


def _certificate(value: Any, where: str) -> x509.Certificate:
    raw = _bytes(_object(value, where, ("rawBytes",))["rawBytes"], f"{where}.rawBytes")
    try:
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise BundleError(f"{where} is not a DER certificate: {exc}") from None


def _tlog_entry(value: Any, where: str) -> TlogEntry:
    entry = _object(value, where, ("logIndex", "logId", "kindVersion", "integratedTime", "canonicalizedBody"),
                    ("inclusionPromise", "inclusionProof"))
    log_id = _bytes(_object(entry["logId"], f"{where}.logId", ("keyId",))["keyId"], f"{where}.logId.keyId")
    kind_version = _object(entry["kindVersion"], f"{where}.kindVersion", ("kind", "version"))
    body = _string(entry["canonicalizedBody"], f"{where}.canonicalizedBody")
    _bytes(body, f"{where}.canonicalizedBody")
    promise = None
    if "inclusionPromise" in entry:
        promise = _bytes(_object(entry["inclusionPromise"], f"{where}.inclusionPromise",
                                 ("signedEntryTimestamp",))["signedEntryTimestamp"],
                         f"{where}.inclusionPromise.signedEntryTimestamp")
    proof = None
    if "inclusionProof" in entry:
        at = f"{where}.inclusionProof"
        fields = _object(entry["inclusionProof"], at, ("logIndex", "rootHash", "treeSize", "hashes", "checkpoint"))
        checkpoint = _object(fields["checkpoint"], f"{at}.checkpoint", ("envelope",))
        proof = InclusionProof(
            _int64(fields["logIndex"], f"{at}.logIndex"), _int64(fields["treeSize"], f"{at}.treeSize"),
            _bytes(fields["rootHash"], f"{at}.rootHash"),
            tuple(_bytes(item, f"{at}.hashes[]") for item in _list(fields["hashes"], f"{at}.hashes",
                                                                    MAX_PROOF_HASHES)),
            _string(checkpoint["envelope"], f"{at}.checkpoint.envelope"))
    if promise is None and proof is None:
        raise BundleError(f"{where} has neither an inclusionPromise nor an inclusionProof")
    return TlogEntry(_int64(entry["logIndex"], f"{where}.logIndex"), log_id.hex(),
                     _string(kind_version["kind"], f"{where}.kindVersion.kind"),
                     _string(kind_version["version"], f"{where}.kindVersion.version"),
                     _int64(entry["integratedTime"], f"{where}.integratedTime"), body, promise, proof)


def _content(bundle: dict[str, Any]) -> DsseContent | MessageContent:
    if ("dsseEnvelope" in bundle) == ("messageSignature" in bundle):
        raise BundleError("a bundle holds exactly one of dsseEnvelope and messageSignature")
    if "dsseEnvelope" in bundle:
        envelope = _object(bundle["dsseEnvelope"], "dsseEnvelope", ("payload", "payloadType", "signatures"))
        signatures = _list(envelope["signatures"], "dsseEnvelope.signatures", 1)
        if len(signatures) != 1:
            raise BundleError("dsseEnvelope must hold exactly one signature")
        signature = _object(signatures[0], "dsseEnvelope.signatures[0]", ("sig",), ("keyid",))
        return DsseContent(_bytes(envelope["payload"], "dsseEnvelope.payload"),
                           _string(envelope["payloadType"], "dsseEnvelope.payloadType"),
                           _bytes(signature["sig"], "dsseEnvelope.signatures[0].sig"))
    message = _object(bundle["messageSignature"], "messageSignature", ("messageDigest", "signature"))
    digest = _object(message["messageDigest"], "messageSignature.messageDigest", ("algorithm", "digest"))
    return MessageContent(_string(digest["algorithm"], "messageSignature.messageDigest.algorithm"),
                          _bytes(digest["digest"], "messageSignature.messageDigest.digest"),
                          _bytes(message["signature"], "messageSignature.signature"))


def parse_bundle(data: bytes) -> Bundle:
    """A sigstore bundle from its JSON, every field checked; raise BundleError naming the first fault."""
    try:
        document = strictjson.loads(data, MAX_BUNDLE_DEPTH)
    except strictjson.StrictJSONError as exc:
        raise BundleError(f"not valid JSON: {exc}") from None
    bundle = _object(document, "bundle", ("mediaType", "verificationMaterial"), ("dsseEnvelope", "messageSignature"))
    media_type = bundle["mediaType"]
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise BundleError(f"mediaType {str(media_type)[:100]!r} is not a sigstore bundle v0.1, v0.2 or v0.3")
    v03 = media_type.endswith(("v0.3+json", "version=0.3"))
    material = _object(bundle["verificationMaterial"], "verificationMaterial", (),
                       ("publicKey", "certificate", "x509CertificateChain", "tlogEntries",
                        "timestampVerificationData"))
    kinds = [name for name in ("publicKey", "certificate", "x509CertificateChain") if name in material]
    if len(kinds) != 1:
        raise BundleError("verificationMaterial holds exactly one of publicKey, certificate and "
                          "x509CertificateChain")
    certificates: tuple[x509.Certificate, ...] = ()
    if kinds[0] == "publicKey":
        # Only a hint naming the key; trust comes from the TrustStore's keys, never from the bundle.
        _object(material["publicKey"], "verificationMaterial.publicKey", (), ("hint",))
    elif kinds[0] == "certificate":
        certificates = (_certificate(material["certificate"], "verificationMaterial.certificate"),)
    else:
        if v03:
            raise BundleError("a v0.3 bundle carries its signing certificate as `certificate`, not a chain")
        chain = _object(material["x509CertificateChain"], "verificationMaterial.x509CertificateChain",
                        ("certificates",))
        entries = _list(chain["certificates"], "x509CertificateChain.certificates", MAX_CERTIFICATES)
        if not entries:
            raise BundleError("x509CertificateChain holds no certificate")
        certificates = tuple(_certificate(entry, f"x509CertificateChain.certificates[{index}]")
                             for index, entry in enumerate(entries))
    entries = _list(material.get("tlogEntries", []), "verificationMaterial.tlogEntries", MAX_TLOG_ENTRIES)
    tlog = tuple(_tlog_entry(entry, f"tlogEntries[{index}]") for index, entry in enumerate(entries))
    timestamps: tuple[bytes, ...] = ()
    if "timestampVerificationData" in material:
        data_ = _object(material["timestampVerificationData"], "timestampVerificationData", (),
                        ("rfc3161Timestamps",))
        tokens = _list(data_.get("rfc3161Timestamps", []), "rfc3161Timestamps", MAX_TIMESTAMPS)
        timestamps = tuple(_bytes(_object(token, f"rfc3161Timestamps[{index}]", ("signedTimestamp",))
                                  ["signedTimestamp"], f"rfc3161Timestamps[{index}].signedTimestamp")
                           for index, token in enumerate(tokens))
    return Bundle(media_type, certificates, tlog, timestamps, _content(bundle))


# --- verification ----------------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding: what a DSSE signature is made over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _signed_message(image: ResolvedImage, content: DsseContent | MessageContent) -> tuple[bytes, bytes, str]:
    """(the bytes the signature covers, the signature, hex SHA-256 of what a log entry records as signed)."""
    if isinstance(content, DsseContent):
        return pae(content.payload_type, content.payload), content.signature, \
            hashlib.sha256(content.payload).hexdigest()
    if content.algorithm != "SHA2_256":
        raise SignatureRejected("payload.digest", f"message digest algorithm {content.algorithm[:40]!r} is not "
                                                  "SHA2_256")
    actual = hashlib.sha256(image.manifest).digest()
    if content.digest != actual:
        raise SignatureRejected("payload.digest", f"the bundle signs message digest sha256:{content.digest.hex()}, "
                                                  f"not the admitted manifest {image.digest}")
    return image.manifest, content.signature, actual.hex()


def _logged_times(bundle: Bundle, trust: CosignTrust, signed_sha256: str, signature: bytes, signer: Signer,
                  require: bool) -> list[datetime]:
    """The integrated times of the verified log entries whose SET vouches for them."""
    if not trust.log_keys:
        if require:
            raise SignatureRejected("cosign.tlog", "the authority requires a Rekor entry and no rekorPublicKey "
                                                   "is trusted")
        return []
    if require and not bundle.tlog_entries:
        raise SignatureRejected("cosign.tlog", "the bundle holds no transparency-log entry, and the authority "
                                               "requires one")
    times: list[datetime] = []
    for index, entry in enumerate(bundle.tlog_entries):
        try:
            log_key = find_log_key(entry.log_id, trust.log_keys)
            if entry.signed_entry_timestamp is not None:
                verified = verify_signed_entry(entry.signed_entry_timestamp, entry.canonicalized_body,
                                               entry.integrated_time, entry.log_index, entry.log_id, trust.log_keys)
                times.append(verified.integrated_time)
            proof = entry.inclusion_proof
            if proof is not None:
                body = base64.b64decode(entry.canonicalized_body)
                verify_inclusion(leaf_hash(body), proof.log_index, proof.tree_size, list(proof.hashes),
                                 proof.root_hash)
                checkpoint = verify_checkpoint(proof.checkpoint, log_key)
                if (checkpoint.tree_size, checkpoint.root_hash) != (proof.tree_size, proof.root_hash):
                    raise RekorError("the signed checkpoint is for another tree than the inclusion proof")
            check_logged_signature(parse_body(entry.canonicalized_body), signed_sha256, signature, signer.public,
                                   dsse=isinstance(bundle.content, DsseContent))
        except RekorError as exc:
            raise SignatureRejected("cosign.tlog", f"transparency-log entry {index} rejected: {exc}") from None
    return times


def _timestamp_times(bundle: Bundle, trust: CosignTrust, signature: bytes) -> list[datetime]:
    if not trust.tsa_roots:
        return []  # nothing to check them with; the signature stands on its own, as configured
    times: list[datetime] = []
    for index, response in enumerate(bundle.timestamps):
        try:
            times.append(verify_timestamp(token_of_response(response), signature, trust.tsa_roots).time)
        except TimestampError as exc:
            raise SignatureRejected("cosign.timestamp", f"RFC 3161 timestamp {index} rejected: {exc}") from None
    return times


def _check_statement(image: ResolvedImage, content: DsseContent, predicate_type: str) -> str:
    """The statement's subject name for the admitted digest; raise SignatureRejected unless it names it."""
    if content.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise SignatureRejected("payload.invalid", f"DSSE payloadType {content.payload_type[:100]!r} is not "
                                                   f"{IN_TOTO_PAYLOAD_TYPE}")
    try:
        statement = strictjson.loads(content.payload, MAX_BUNDLE_DEPTH)
    except strictjson.StrictJSONError as exc:
        raise SignatureRejected("payload.invalid", f"the in-toto statement is not valid JSON: {exc}") from None
    if not isinstance(statement, dict) or statement.get("_type") not in STATEMENT_TYPES:
        raise SignatureRejected("payload.invalid", "the DSSE payload is not an in-toto statement")
    if statement.get("predicateType") != predicate_type:
        found = str(statement.get("predicateType"))[:200]
        raise SignatureRejected("payload.invalid", f"the statement's predicateType is {found!r}, not "
                                                   f"{predicate_type!r}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects or len(subjects) > MAX_STATEMENT_SUBJECTS:
        raise SignatureRejected("payload.invalid", "the statement's subject is not a non-empty list")
    algorithm, _, encoded = image.digest.partition(":")
    named: list[str] = []
    for subject in subjects:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(digests, dict):
            raise SignatureRejected("payload.invalid", "a statement subject has no digest map")
        if digests.get(algorithm) == encoded:
            name = subject.get("name")
            return name if isinstance(name, str) else ""
        named.extend(f"{key}:{value}" for key, value in digests.items() if isinstance(value, str))
    raise SignatureRejected("payload.digest", f"the statement names {', '.join(named)[:300] or 'no digest'}, "
                                              f"not the admitted manifest {image.digest}")


def verify_bundle_signature(image: ResolvedImage, material: SignatureMaterial, trust: CosignTrust,
                            spec: CosignAuthority, now: Callable[[], datetime]) -> Result:
    """Verify one sigstore bundle for `image`; raise SignatureRejected with the reason it is not accepted."""
    try:
        bundle = parse_bundle(material.data)
    except BundleError as exc:
        raise SignatureRejected("cosign.bundle", f"not a valid sigstore bundle: {exc}") from None
    message, signature, signed_sha256 = _signed_message(image, bundle.content)
    if trust.keys:
        signer = trust.key_signer(signature, message)
    elif bundle.certificates:
        signer = trust.certificate_signer(bundle.certificates[0], bundle.certificates[1:], signature, message)
    else:
        raise SignatureRejected("cosign.certificate", "the bundle carries no certificate; this authority trusts "
                                                      "certificates only")
    logged = _logged_times(bundle, trust, signed_sha256, signature, signer, spec.transparencyLog.require)
    stamped = _timestamp_times(bundle, trust, signature)
    if signer.certificate is not None:
        for at in (*logged, *stamped):
            trust.check_certificate(signer, at, f"at its signed time {at.isoformat()}")
        if not logged and not stamped:
            trust.check_certificate(signer, now(), "now (no verified signed time)")
    details: dict[str, str] = {"format": bundle.media_type}
    if isinstance(bundle.content, DsseContent):
        name = _check_statement(image, bundle.content, spec.predicateType or COSIGN_SIGN_PREDICATE)
        if name:
            details["subject"] = name
    verified_times = sorted((*logged, *stamped))
    if verified_times:
        details["signedTime"] = verified_times[0].astimezone(UTC).isoformat()
    signed_at = int(verified_times[0].timestamp()) if verified_times else None
    return Result.ok(material.label, "signature.valid", f"good sigstore bundle signature by {signer.description}",
                     signer=signer.identity, details=details, signer_ids=(signer.key_id,), signed_at=signed_at)
