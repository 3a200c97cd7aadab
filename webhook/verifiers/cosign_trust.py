"""What both cosign signature formats (the legacy `.sig` layers and sigstore bundles) are checked with: the
trusted keys and x509 roots of an authority, signature checks as cosign signs, certificate chains and the
certificate identity rule, and the Rekor log keys. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook import pki
from webhook.policy.models import CertificateIdentity
from webhook.rekor import RekorLogKey, spki_der
from webhook.trust import PublicKey

# Fulcio's OIDC issuer: the DER UTF8String extension (current) and the raw-bytes one (legacy).
FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


class CertificateError(ValueError):
    """A certificate that cannot vouch for this signature."""


def verify_with_key(key: PublicKey, hash_algorithm: str, signature: bytes, payload: bytes) -> bool:
    """Verify as cosign signs: ECDSA (ASN.1 DER), RSA PKCS#1 v1.5, or pure Ed25519."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(_HASHES[hash_algorithm]()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), _HASHES[hash_algorithm]())
        else:
            key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def fingerprint(key: PublicKey) -> str:
    return f"sha256:{hashlib.sha256(spki_der(key)).hexdigest()}"


# --- certificates -------------------------------------------------------------------------------------


def _der_utf8_string(data: bytes) -> str | None:
    """The value of a DER UTF8String (tag 12), or None when `data` is not exactly one."""
    try:
        value: str = asn1_core.UTF8String.load(data, strict=True).native
    except (ValueError, TypeError):  # includes UnicodeDecodeError
        return None
    return value


def certificate_issuer(certificate: x509.Certificate) -> str | None:
    """The OIDC issuer a Fulcio certificate records; None for certificates of other CAs."""
    for oid, decode in ((FULCIO_ISSUER_V2, _der_utf8_string), (FULCIO_ISSUER_V1, _raw_utf8)):
        try:
            value = certificate.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        if isinstance(value, x509.UnrecognizedExtension):
            return decode(value.value)
    return None


def _raw_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def certificate_subjects(certificate: x509.Certificate) -> list[str]:
    """The subject alternative names cosign matches `--certificate-identity` against."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found: list[str] = []
    for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName):
        found.extend(names.get_values_for_type(kind))
    return found


def _matches(value: str, exact: str | None, pattern: re.Pattern[str] | None) -> bool:
    return value == exact if exact is not None else pattern is not None and pattern.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class IdentityConstraint:
    """A certificateIdentity with its regular expressions compiled (anchored: they must match whole values)."""

    spec: CertificateIdentity
    subject_pattern: re.Pattern[str] | None
    issuer_pattern: re.Pattern[str] | None

    @classmethod
    def compile(cls, spec: CertificateIdentity) -> IdentityConstraint:
        return cls(spec, re.compile(spec.subjectRegExp) if spec.subjectRegExp is not None else None,
                   re.compile(spec.issuerRegExp) if spec.issuerRegExp is not None else None)

    def check(self, certificate: x509.Certificate) -> str:
        """The matching subject; raise CertificateError saying which constraint failed."""
        subjects = certificate_subjects(certificate)
        subject = next((name for name in subjects
                        if _matches(name, self.spec.subject, self.subject_pattern)), None)
        if subject is None:
            wanted = self.spec.subject or f"/{self.spec.subjectRegExp}/"
            raise CertificateError(f"certificate names {', '.join(subjects) or 'no subject alternative name'}, "
                                   f"not {wanted}")
        if self.spec.issuer is not None or self.issuer_pattern is not None:
            issuer = certificate_issuer(certificate)
            if issuer is None or not _matches(issuer, self.spec.issuer, self.issuer_pattern):
                wanted = self.spec.issuer or f"/{self.spec.issuerRegExp}/"
                raise CertificateError(f"certificate issuer {issuer or '(none recorded)'} is not {wanted}")
        return subject


def self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class TrustedKey:
    name: str
    key: PublicKey
    hash_algorithm: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Signer:
    """Who made a signature whose cryptography verified: a trusted key, or a certificate to check further."""

    description: str
    identity: str
    public: PublicKey | x509.Certificate
    # Hex SHA-256 of the key's DER SubjectPublicKeyInfo, or of the certificate's DER: what revokedKeys names.
    key_id: str
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()


class SignatureRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CosignTrust:
    """The trust material of one cosign authority: public keys, or x509 roots with an identity rule."""

    store_name: str
    keys: tuple[TrustedKey, ...]
    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    log_keys: dict[str, RekorLogKey]
    identity: IdentityConstraint | None
    # RFC 3161 timestamp authorities (x509 entries of role tsa), for sigstore bundles' timestamps.
    tsa_roots: tuple[x509.Certificate, ...] = ()

    def key_signer(self, signature: bytes, message: bytes) -> Signer:
        """The trusted key whose signature over `message` this is."""
        for key in self.keys:
            if verify_with_key(key.key, key.hash_algorithm, signature, message):
                return Signer(f"key {key.name} ({key.fingerprint})", key.fingerprint, key.key,
                              key.fingerprint.removeprefix("sha256:").upper())
        names = ", ".join(key.name for key in self.keys)
        raise SignatureRejected("cosign.signature", f"signature does not verify with any trusted key ({names} of "
                                                    f"TrustStore {self.store_name}): other key, or tampered")

    def certificate_signer(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate], signature: bytes,
                           message: bytes) -> Signer:
        """The certificate whose key made `signature` over `message`; its chain and identity are checked later,
        at the signed time (`check_certificate`)."""
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise SignatureRejected("cosign.certificate", "certificate key type is not supported")
        if not verify_with_key(key, "sha256", signature, message):
            raise SignatureRejected("cosign.signature", f"signature does not verify with the key of certificate "
                                                        f"{pki.describe(leaf)!r}: tampered")
        name = ", ".join(certificate_subjects(leaf)) or pki.describe(leaf)
        leaf_fingerprint = pki.sha256_fingerprint(leaf)
        return Signer(f"certificate for {name}", f"certificate sha256:{leaf_fingerprint}", leaf,
                      leaf_fingerprint.upper(), leaf, tuple(chain))

    def check_certificate(self, signer: Signer, at: datetime, when: str) -> None:
        """Raise SignatureRejected unless the signing certificate chains to a trusted root at `at` (described
        by `when`) and names the configured identity."""
        assert signer.certificate is not None and self.identity is not None
        try:
            # As cosign (Go's x509): a leaf without extendedKeyUsage is accepted, one with it needs codeSigning.
            pki.verify_chain(signer.certificate, [*signer.chain, *self.intermediates], self.roots, at=at,
                             crls=self.crls, extended_key_usage=ExtendedKeyUsageOID.CODE_SIGNING,
                             eku_optional=True)
        except pki.ChainError as exc:
            raise SignatureRejected("cosign.certificate", f"certificate not trusted {when}: {exc}") from None
        try:
            self.identity.check(signer.certificate)
        except CertificateError as exc:
            raise SignatureRejected("cosign.identity", str(exc)) from None
