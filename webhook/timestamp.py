"""RFC 3161 timestamps over a signature (Notary Project countersignatures, sigstore bundles), verified offline
against `tsa` roots.

The token is a CMS SignedData (RFC 5652) whose content is a TSTInfo. A Notary Project countersignature is the
token itself; a sigstore bundle holds the TSA's whole TimeStampResp (RFC 3161 section 2.4.2), which
`token_of_response` opens. asn1crypto parses the structures (it
accepts the BER set ordering real TSAs emit, which strict DER parsers refuse); every signature check is done
by `cryptography`, and the TSA certificate chain by `webhook.pki.verify_chain` with the timeStamping purpose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.pki import ChainError, verify_chain

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


class TimestampError(ValueError):
    """The timestamp token is malformed, does not cover the signature, or is not from a trusted TSA."""


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A verified timestamp: the signature existed between `earliest` and `latest` (time +- accuracy)."""

    time: datetime
    earliest: datetime
    latest: datetime
    authority: x509.Certificate


def _digest(name: str, data: bytes) -> bytes:
    if name not in _HASHES:
        raise TimestampError(f"unsupported digest algorithm {name} (sha256, sha384 or sha512 required)")
    return hashlib.new(name, data).digest()


def token_of_response(response: bytes) -> bytes:
    """The TimeStampToken of a DER TimeStampResp whose status grants it; raise TimestampError otherwise."""
    try:
        parsed = tsp.TimeStampResp.load(response, strict=True)
        status = parsed["status"]["status"].native
        token = parsed["time_stamp_token"]
    except (ValueError, TypeError, KeyError) as exc:
        raise TimestampError(f"timestamp response cannot be parsed: {exc}") from None
    if status not in ("granted", "granted_with_mods"):
        raise TimestampError(f"the timestamp response's status is {status!r}, not granted")
    if not isinstance(token, cms.ContentInfo) or token.contents is None:
        raise TimestampError("the timestamp response holds no timestamp token")
    return bytes(token.dump())


def _parse(token: bytes) -> tuple[cms.SignedData, tsp.TSTInfo]:
    try:
        info = cms.ContentInfo.load(token)
        if info["content_type"].native != "signed_data":
            raise TimestampError("timestamp token is not a CMS SignedData")
        signed: cms.SignedData = info["content"]
        content = signed["encap_content_info"]
        if content["content_type"].native != "tst_info":
            raise TimestampError(f"unexpected content type {content['content_type'].native!r} (want TSTInfo)")
        tst_info: tsp.TSTInfo = content["content"].parsed
        tst_info.native  # noqa: B018 - force a full parse, so malformed fields fail here
    except TimestampError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise TimestampError(f"timestamp token cannot be parsed: {exc}") from None
    return signed, tst_info


def _signer_certificate(signed: cms.SignedData, signer: cms.SignerInfo) -> x509.Certificate:
    sid = signer["sid"]
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        candidate = x509.load_der_x509_certificate(choice.chosen.dump())
        if sid.name == "issuer_and_serial_number":
            if (choice.chosen.issuer == sid.chosen["issuer"]
                    and candidate.serial_number == sid.chosen["serial_number"].native):
                return candidate
        else:
            try:
                identifier = candidate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if identifier == sid.chosen.native:
                return candidate
    raise TimestampError("the TSA signing certificate is not included in the timestamp token")


def _verify_signer(signer: cms.SignerInfo, certificate: x509.Certificate, content: bytes) -> None:
    digest_name = signer["digest_algorithm"]["algorithm"].native
    attributes = signer["signed_attrs"]
    if not attributes:
        raise TimestampError("timestamp token has no signed attributes")
    values = {attribute["type"].native: attribute["values"] for attribute in attributes}
    if "content_type" not in values or values["content_type"][0].native != "tst_info":
        raise TimestampError("signed content-type attribute is not TSTInfo")
    if "message_digest" not in values or values["message_digest"][0].native != _digest(digest_name, content):
        raise TimestampError("signed message-digest attribute does not match the TSTInfo")
    # The signature covers the DER SET OF the attributes, not their [0] IMPLICIT encoding in the token.
    signed_bytes = b"\x31" + attributes.dump()[1:]
    signature = signer["signature"].native
    algorithm = _HASHES[digest_name]()
    key = certificate.public_key()
    scheme = signer["signature_algorithm"].signature_algo
    try:
        if isinstance(key, rsa.RSAPublicKey) and scheme == "rsassa_pkcs1v15":
            key.verify(signature, signed_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, rsa.RSAPublicKey) and scheme == "rsassa_pss":
            params = signer["signature_algorithm"]["parameters"]
            pss_hash = _HASHES[params["hash_algorithm"]["algorithm"].native]()
            key.verify(signature, signed_bytes,
                       padding.PSS(mgf=padding.MGF1(pss_hash), salt_length=params["salt_length"].native), pss_hash)
        elif isinstance(key, ec.EllipticCurvePublicKey) and scheme == "ecdsa":
            key.verify(signature, signed_bytes, ec.ECDSA(algorithm))
        else:
            raise TimestampError(f"unsupported timestamp signature algorithm {scheme}")
    except InvalidSignature:
        raise TimestampError("the timestamp token's signature does not verify") from None


def verify_timestamp(token: bytes, signature: bytes, roots: Sequence[x509.Certificate]) -> Timestamp:
    """Verify that `token` timestamps `signature` and was issued by a TSA chaining to `roots`."""
    signed, tst_info = _parse(token)
    imprint = tst_info["message_imprint"]
    imprint_hash = imprint["hash_algorithm"]["algorithm"].native
    if imprint["hashed_message"].native != _digest(imprint_hash, signature):
        raise TimestampError("the timestamp does not cover this signature (message imprint mismatch)")
    signers = signed["signer_infos"]
    if len(signers) != 1:
        raise TimestampError(f"timestamp token has {len(signers)} signers; exactly one is required")
    signer = signers[0]
    try:
        certificate = _signer_certificate(signed, signer)
        _verify_signer(signer, certificate, signed["encap_content_info"]["content"].contents)
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, TimestampError):
            raise
        raise TimestampError(f"timestamp token signer cannot be checked: {exc}") from None
    time: datetime = tst_info["gen_time"].native
    accuracy = tst_info["accuracy"]
    margin = timedelta()
    if accuracy.native is not None:
        margin = timedelta(seconds=accuracy["seconds"].native or 0, milliseconds=accuracy["millis"].native or 0,
                           microseconds=accuracy["micros"].native or 0)
    intermediates = [x509.load_der_x509_certificate(choice.chosen.dump())
                     for choice in signed["certificates"] or [] if choice.name == "certificate"]
    try:
        verify_chain(certificate, [c for c in intermediates if c != certificate], roots, at=time,
                     extended_key_usage=ExtendedKeyUsageOID.TIME_STAMPING)
    except ChainError as exc:
        raise TimestampError(f"timestamp authority is not trusted: {exc}") from None
    return Timestamp(time, time - margin, time + margin, certificate)
