"""X.509 certification path validation shared by the certificate-based verifiers (Notation, cosign with a PKI).

Path building and signature checks are delegated to `cryptography.x509.verification`; this module only says
which extensions a code-signing (or timestamping) chain must carry, turns failures into sentences an operator
can act on, and applies offline CRLs, which that verifier does not handle.

A certificate placed among the roots is trusted as it is, even when it is a self-signed leaf without CA
extensions (`notation cert generate-test` produces exactly that and puts it into a `ca` store).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from itertools import pairwise

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

# Extended key usages that make a certificate unfit for code signing even when codeSigning is also listed.
_EXCLUSIVE_PURPOSES = {
    ExtendedKeyUsageOID.CODE_SIGNING: (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,),
    ExtendedKeyUsageOID.TIME_STAMPING: (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,),
}
_PURPOSE_NAMES = {
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}
# Deep enough for any real hierarchy, shallow enough to bound path building on attacker-supplied bundles.
MAX_CHAIN_DEPTH = 8
# Certificates whose name and fingerprint are remembered. The same signing certificates arrive in signature
# after signature, each parsed anew, and naming one (an RFC 4514 string) costs more than checking its signature.
# A certificate is equal to another only with the same DER bytes, so what is remembered never differs. Only
# certificates of at most NAMED_CERTIFICATE_BYTES are remembered (real ones are 1-2 KiB; signatures are
# attacker-supplied), so each of the two memories holds at most NAMED_CERTIFICATES of them.
NAMED_CERTIFICATES = 256
NAMED_CERTIFICATE_BYTES = 16 * 1024


class ChainError(Exception):
    """The certificate chain is not acceptable; the message says why."""


def _subject_name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or f"serial {certificate.serial_number:x}"


def _sha256_hex(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


_remembered_name = functools.lru_cache(maxsize=NAMED_CERTIFICATES)(_subject_name)
_remembered_sha256 = functools.lru_cache(maxsize=NAMED_CERTIFICATES)(_sha256_hex)


def _rememberable(certificate: x509.Certificate) -> bool:
    return len(certificate.public_bytes(serialization.Encoding.DER)) <= NAMED_CERTIFICATE_BYTES


def describe(certificate: x509.Certificate) -> str:
    """How a certificate is named in messages: its subject DN."""
    return _remembered_name(certificate) if _rememberable(certificate) else _subject_name(certificate)


def sha256_fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint of a certificate's DER, in lowercase hex."""
    return _remembered_sha256(certificate) if _rememberable(certificate) else _sha256_hex(certificate)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("verification time must be timezone-aware")
    return moment.astimezone(UTC)


def check_validity(certificate: x509.Certificate, at: datetime) -> None:
    """Raise ChainError unless `at` lies within the certificate's validity period."""
    at = _utc(at)
    if at < certificate.not_valid_before_utc:
        raise ChainError(f"certificate {describe(certificate)!r} is not valid before "
                         f"{certificate.not_valid_before_utc.isoformat()} (checked at {at.isoformat()})")
    if at > certificate.not_valid_after_utc:
        raise ChainError(f"certificate {describe(certificate)!r} expired on "
                         f"{certificate.not_valid_after_utc.isoformat()} (checked at {at.isoformat()})")


def _extension(certificate: x509.Certificate,
               kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return certificate.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def check_end_entity(certificate: x509.Certificate, extended_key_usage: x509.ObjectIdentifier | None,
                     *, eku_optional: bool = False) -> None:
    """Raise ChainError unless the signing certificate may sign for the wanted purpose.

    It must not be a CA, must carry keyUsage with digitalSignature, and, when a purpose is asked for, an
    extendedKeyUsage listing it (and no catch-all purpose that would let it sign anything). With
    `eku_optional` (the Notary Project rule) a certificate without any extendedKeyUsage is accepted too.
    """
    name = describe(certificate)
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is not None and isinstance(constraints.value, x509.BasicConstraints) and constraints.value.ca:
        raise ChainError(f"signing certificate {name!r} is a CA certificate (basicConstraints CA:TRUE)")
    key_usage = _extension(certificate, x509.KeyUsage)
    if key_usage is None:
        raise ChainError(f"signing certificate {name!r} has no keyUsage extension")
    if not (isinstance(key_usage.value, x509.KeyUsage) and key_usage.value.digital_signature):
        raise ChainError(f"signing certificate {name!r}: keyUsage lacks digitalSignature")
    if extended_key_usage is None:
        return
    usages = _extension(certificate, x509.ExtendedKeyUsage)
    purpose = _purpose_name(extended_key_usage)
    if usages is None and eku_optional:
        return
    if usages is None or not isinstance(usages.value, x509.ExtendedKeyUsage):
        raise ChainError(f"signing certificate {name!r} has no extendedKeyUsage extension ({purpose} required)")
    listed = list(usages.value)
    if extended_key_usage not in listed:
        raise ChainError(f"signing certificate {name!r}: extendedKeyUsage does not include {purpose}")
    for forbidden in _EXCLUSIVE_PURPOSES.get(extended_key_usage, ()):
        if forbidden in listed:
            raise ChainError(f"signing certificate {name!r}: extendedKeyUsage includes {_purpose_name(forbidden)}")


def _purpose_name(purpose: x509.ObjectIdentifier) -> str:
    return _PURPOSE_NAMES.get(purpose, purpose.dotted_string)


def _require_cert_sign(policy: verification.Policy, certificate: x509.Certificate,
                       key_usage: x509.KeyUsage | None) -> None:
    if key_usage is not None and not key_usage.key_cert_sign:
        raise ValueError(f"issuing certificate {describe(certificate)!r}: keyUsage lacks keyCertSign")


def _extension_policies() -> tuple[verification.ExtensionPolicy, verification.ExtensionPolicy]:
    agnostic = verification.Criticality.AGNOSTIC
    ca_policy = (verification.ExtensionPolicy.permit_all()
                 # cA:TRUE and path lengths are enforced by the verifier itself once the extension is required.
                 .require_present(x509.BasicConstraints, agnostic, None)
                 .may_be_present(x509.KeyUsage, agnostic, _require_cert_sign))
    # The end-entity checks ran before path building (check_end_entity), with readable messages.
    ee_policy = verification.ExtensionPolicy.permit_all()
    return ca_policy, ee_policy


def _explain_path_failure(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                          roots: Sequence[x509.Certificate], at: datetime, error: Exception) -> str:
    # Name the most likely cause first; the verifier's own text is kept for the rest.
    for certificate in (*intermediates, *roots):
        try:
            check_validity(certificate, at)
        except ChainError as expired:
            if certificate.subject == leaf.issuer or any(certificate.subject == c.issuer for c in intermediates):
                return str(expired)
    issuers = {root.subject for root in roots}
    if leaf.issuer not in issuers and not any(c.issuer in issuers for c in intermediates):
        return (f"certificate {describe(leaf)!r} does not chain to a trusted root "
                f"(issuer {leaf.issuer.rfc4514_string()!r} is not trusted)")
    return f"certificate {describe(leaf)!r} does not chain to a trusted root: {error}"


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
    extended_key_usage: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CODE_SIGNING,
    eku_optional: bool = False,
) -> list[x509.Certificate]:
    """Validate `leaf` up to one of `roots` at time `at`; return the chain leaf..root or raise ChainError.

    Checks: end-entity usage (see `check_end_entity`), validity of every certificate at `at`, CA constraints
    of every issuer (basicConstraints CA, keyCertSign, path length, name chaining, signatures, algorithms and
    key sizes as `cryptography.x509.verification` enforces them), and revocation by any of `crls` that was
    issued by a certificate of the chain and whose signature verifies.
    """
    if not roots:
        raise ChainError("no trusted root certificates are configured")
    check_end_entity(leaf, extended_key_usage, eku_optional=eku_optional)
    check_validity(leaf, at)
    ca_policy, ee_policy = _extension_policies()
    verifier = (verification.PolicyBuilder()
                .store(verification.Store(list(roots)))
                .time(_utc(at))
                .max_chain_depth(MAX_CHAIN_DEPTH)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
                .build_client_verifier())
    try:
        chain = verifier.verify(leaf, list(intermediates)).chain
    except verification.VerificationError as exc:
        raise ChainError(_explain_path_failure(leaf, intermediates, roots, at, exc)) from None
    for entry in revocation_status(chain, crls, at):
        if entry.state is Revocation.REVOKED:
            raise ChainError(entry.message)
    return chain


class Revocation(Enum):
    GOOD = "good"  # a current CRL from its issuer does not list it
    REVOKED = "revoked"
    NOT_REVOCABLE = "not revocable"  # it names no CRL distribution point
    UNKNOWN = "unknown"  # it names a CRL distribution point, but no current CRL of its issuer is configured


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    certificate: x509.Certificate
    state: Revocation
    message: str


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    if crl.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return False
    return crl.is_signature_valid(key)


def _names_crl_endpoint(certificate: x509.Certificate) -> bool:
    return _extension(certificate, x509.CRLDistributionPoints) is not None


def revocation_status(chain: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList],
                      at: datetime) -> list[RevocationEntry]:
    """The revocation state of every certificate of `chain` (leaf..root) below its root, from offline CRLs.

    Only CRLs issued by the certificate's own issuer with a verifying signature count. A revoked entry counts
    whatever the CRL's age (a revocation is never undone); a "good" answer needs a CRL current at `at`.
    """
    at = _utc(at)
    found: list[RevocationEntry] = []
    for certificate, issuer in pairwise(chain):
        name = describe(certificate)
        issued = [crl for crl in crls if _crl_signed_by(crl, issuer)]
        revoked = next((entry for crl in issued
                        if (entry := crl.get_revoked_certificate_by_serial_number(certificate.serial_number))),
                       None)
        if revoked is not None:
            when = revoked.revocation_date_utc.isoformat()
            found.append(RevocationEntry(certificate, Revocation.REVOKED,
                                         f"certificate {name!r} was revoked on {when} (CRL of {describe(issuer)!r})"))
        elif any(_crl_current(crl, at) for crl in issued):
            found.append(RevocationEntry(certificate, Revocation.GOOD,
                                         f"certificate {name!r} is not revoked (CRL of {describe(issuer)!r})"))
        elif not _names_crl_endpoint(certificate):
            found.append(RevocationEntry(certificate, Revocation.NOT_REVOCABLE,
                                         f"certificate {name!r} names no CRL distribution point"))
        else:
            why = "only an outdated CRL" if issued else "no CRL"
            found.append(RevocationEntry(certificate, Revocation.UNKNOWN,
                                         f"certificate {name!r} names a CRL distribution point but the TrustStore "
                                         f"holds {why} of its issuer {describe(issuer)!r} current at {at.isoformat()}"))
    return found


def _crl_current(crl: x509.CertificateRevocationList, at: datetime) -> bool:
    next_update = crl.next_update_utc
    return crl.last_update_utc <= at and (next_update is None or at <= next_update)
