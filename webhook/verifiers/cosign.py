"""cosign verifier: signatures as the cosign CLI writes them, checked offline with keys or X.509 roots.

One signature is one layer of the image's `.sig` manifest (see `webhook.sources.cosign_tag`): the payload
blob, its base64 signature annotation and optional certificate, chain and Rekor bundle annotations. It is
accepted when, in this order:

1. the signature over the exact payload bytes verifies with a trusted public key, or with a certificate that
   chains to a trusted x509 root and names the configured certificate identity;
2. a Rekor bundle, when present and a `rekorPublicKey` is trusted (always, with `transparencyLog.require`),
   carries a valid signed entry timestamp for an entry recording this signature. Certificates are checked
   at that entry's integrated time, otherwise at the current time: a short-lived Fulcio certificate without
   a verified log entry is expired;
3. the payload is a strict simple-signing document of type `cosign container image signature` naming the
   admitted manifest digest, and its docker-reference satisfies the authority's signedIdentity rule. Unlike
   `cosign verify`, a signature copied next to an image in another repository does not pass by default.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook import pki
from webhook.artifacts import ImageTarget, ResolvedImage, SignatureMaterial
from webhook.policy.models import CertificateIdentity, CosignAuthority
from webhook.references import ImageReference, parse_reference
from webhook.rekor import (
    RekorEntry,
    RekorError,
    RekorLogKey,
    check_entry_matches,
    rekor_log_key,
    spki_der,
    verify_bundle,
)
from webhook.results import Result
from webhook.simple_signing import (
    COSIGN_SIGNATURE_TYPE,
    InvalidPayloadError,
    describe_rule,
    identity_matches,
    manifest_matches_digest,
    parse_payload,
)
from webhook.sources.base import SignatureSource
from webhook.sources.cosign_tag import SIMPLE_SIGNING_MEDIA_TYPE, CosignSignatureTag
from webhook.trust import CompiledTrustStore, PemPublicKey, PublicKey, X509Bundle
from webhook.validation import ConfigError, validate_spec
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, find_trust_store, select_keys

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
MAX_CHAIN_CERTIFICATES = 8
# Fulcio's OIDC issuer: the DER UTF8String extension (current) and the raw-bytes one (legacy).
FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


class CertificateError(ValueError):
    """A certificate that cannot vouch for this signature."""


def decode_signature(value: str) -> bytes:
    """The signature annotation as cosign writes it: standard base64, line breaks tolerated (as Go does)."""
    text = value.replace("\r", "").replace("\n", "")
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not valid base64 ({exc})") from None
    # Python tolerates padding after the end; a canonical encoding has exactly one spelling.
    if base64.b64encode(decoded).decode() != text:
        raise ValueError("not canonical base64 (stray padding or bits)")
    return decoded


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


def parse_certificates(annotations: Mapping[str, str]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The signing certificate and the chain cosign attached to a signature."""
    try:
        leaf = x509.load_pem_x509_certificate(annotations[CERTIFICATE_ANNOTATION].encode())
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateError(f"{CERTIFICATE_ANNOTATION} is not a PEM certificate: {exc}") from None
    chain_text = annotations.get(CHAIN_ANNOTATION, "").strip()
    if not chain_text:
        return leaf, []
    try:
        chain = x509.load_pem_x509_certificates(chain_text.encode())
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateError(f"{CHAIN_ANNOTATION} is not a PEM certificate bundle: {exc}") from None
    if len(chain) > MAX_CHAIN_CERTIFICATES:
        raise CertificateError(f"{CHAIN_ANNOTATION} holds {len(chain)} certificates, more than "
                               f"{MAX_CHAIN_CERTIFICATES}")
    return leaf, chain


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- the verifier -------------------------------------------------------------------------------------


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


@dataclass
class CosignAuthorityVerifier(CompiledAuthority):
    name: str
    spec: CosignAuthority
    store_name: str
    keys: tuple[TrustedKey, ...]
    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    log_keys: dict[str, RekorLogKey]
    signatures_repository: ImageReference | None
    identity: IdentityConstraint | None = None
    verifier_type: str = "cosign"
    # The clock, for certificates checked without a log entry; replaced in tests.
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)

    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        return [CosignSignatureTag(self.signatures_repository)]

    def registries(self) -> Sequence[str]:
        return (self.signatures_repository.domain,) if self.signatures_repository else ()

    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        try:
            return self._verify(image, material)
        except SignatureRejected as rejected:
            return Result.fail(material.label, rejected.code, rejected.message)

    def _verify(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        if material.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
            raise SignatureRejected("cosign.media_type", f"media type {material.media_type or '(none)'} is not "
                                                         f"{SIMPLE_SIGNING_MEDIA_TYPE}; not a signature")
        encoded = material.annotations.get(SIGNATURE_ANNOTATION)
        if encoded is None:
            raise SignatureRejected("cosign.signature", f"no {SIGNATURE_ANNOTATION} annotation")
        try:
            signature = decode_signature(encoded)
        except ValueError as exc:
            raise SignatureRejected("cosign.signature", f"{SIGNATURE_ANNOTATION}: {exc}") from None
        signer = (self._key_signer(signature, material.data) if self.keys
                  else self._certificate_signer(signature, material))
        entry = self._log_entry(material, signature, signer)
        details: dict[str, str] = {}
        if entry is not None:
            details = {"rekorIntegratedTime": entry.integrated_time.isoformat(),
                       "rekorLogIndex": str(entry.log_index)}
        if signer.certificate is not None:
            self._check_certificate(signer, entry)
        return self._check_payload(image, material, signer, details,
                                   int(entry.integrated_time.timestamp()) if entry is not None else None)

    def _key_signer(self, signature: bytes, payload: bytes) -> Signer:
        for key in self.keys:
            if verify_with_key(key.key, key.hash_algorithm, signature, payload):
                return Signer(f"key {key.name} ({key.fingerprint})", key.fingerprint, key.key,
                              key.fingerprint.removeprefix("sha256:").upper())
        names = ", ".join(key.name for key in self.keys)
        raise SignatureRejected("cosign.signature", f"signature does not verify with any trusted key ({names} of "
                                                    f"TrustStore {self.store_name}): other key, or tampered")

    def _certificate_signer(self, signature: bytes, material: SignatureMaterial) -> Signer:
        if CERTIFICATE_ANNOTATION not in material.annotations:
            raise SignatureRejected("cosign.certificate", f"no {CERTIFICATE_ANNOTATION} annotation; this "
                                                          "authority trusts certificates only")
        try:
            leaf, chain = parse_certificates(material.annotations)
        except CertificateError as exc:
            raise SignatureRejected("cosign.certificate", str(exc)) from None
        key = leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise SignatureRejected("cosign.certificate", "certificate key type is not supported")
        if not verify_with_key(key, "sha256", signature, material.data):
            raise SignatureRejected("cosign.signature", f"signature does not verify with the key of certificate "
                                                        f"{pki.describe(leaf)!r}: tampered")
        name = ", ".join(certificate_subjects(leaf)) or pki.describe(leaf)
        leaf_fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
        return Signer(f"certificate for {name}", f"certificate sha256:{leaf_fingerprint}", leaf,
                      leaf_fingerprint.upper(), leaf, tuple(chain))

    def _log_entry(self, material: SignatureMaterial, signature: bytes, signer: Signer) -> RekorEntry | None:
        bundle = material.annotations.get(BUNDLE_ANNOTATION)
        if bundle is None:
            if self.spec.transparencyLog.require:
                raise SignatureRejected("cosign.tlog", f"no {BUNDLE_ANNOTATION} annotation, and the authority "
                                                       "requires a Rekor entry")
            return None
        if not self.log_keys:
            return None  # nothing to check it with; the signature stands on its own, as configured
        try:
            entry = verify_bundle(bundle, self.log_keys)
            check_entry_matches(entry, material.data, signature, signer.public)
        except RekorError as exc:
            raise SignatureRejected("cosign.tlog", f"Rekor bundle rejected: {exc}") from None
        return entry

    def _check_certificate(self, signer: Signer, entry: RekorEntry | None) -> None:
        assert signer.certificate is not None and self.identity is not None
        at = entry.integrated_time if entry is not None else self.now()
        when = "at its Rekor integrated time" if entry is not None else "now (no verified Rekor entry)"
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

    def _check_payload(self, image: ResolvedImage, material: SignatureMaterial, signer: Signer,
                       details: dict[str, str], logged_at: int | None) -> Result:
        good = f"good signature by {signer.description}"
        try:
            payload = parse_payload(material.data, COSIGN_SIGNATURE_TYPE)
        except InvalidPayloadError as exc:
            raise SignatureRejected("payload.invalid", f"{good}, but the payload is not a valid cosign "
                                                       f"signature: {exc}") from None
        if not manifest_matches_digest(image.manifest, payload.manifest_digest):
            raise SignatureRejected("payload.digest", f"{good}, but signed for manifest digest "
                                                      f"{payload.manifest_digest}, not {image.digest}")
        rule = self.spec.signedIdentity
        if not identity_matches(rule, image.reference, payload.docker_reference):
            raise SignatureRejected("payload.identity", f"{good}, but signed for {payload.docker_reference}, "
                                                        f"not accepted by {describe_rule(rule)} for "
                                                        f"{image.reference}")
        # The signed payload's timestamp, else the time the transparency log vouches the signature existed.
        signed_at = payload.timestamp if payload.timestamp is not None else logged_at
        return Result.ok(material.label, "signature.valid", f"{good}, signed for {payload.docker_reference}",
                         signer=signer.identity, details={"dockerReference": payload.docker_reference, **details},
                         signer_ids=(signer.key_id,), signed_at=signed_at)


class CosignVerifier(VerifierPlugin):
    type_name = "cosign"
    spec_model = CosignAuthority

    def compile(self, authority_name: str, spec: Any, trust_stores: Mapping[str, CompiledTrustStore],
                path: str) -> CompiledAuthority:
        spec = validate_spec(CosignAuthority, spec, path)
        store = find_trust_store(trust_stores, spec.trustStore, path)
        signers = {name: material for name, material in store.keys.items()
                   if (isinstance(material, PemPublicKey) and not material.rekor)
                   or (isinstance(material, X509Bundle) and material.role == "ca")}
        selected = select_keys(signers, spec.keys, spec.trustStore, "publicKey or x509 (role ca)", path)
        keys = tuple(TrustedKey(name, material.key, material.hash_algorithm, fingerprint(material.key))
                     for name, material in selected.items() if isinstance(material, PemPublicKey))
        bundles = [material for material in selected.values() if isinstance(material, X509Bundle)]
        if keys and bundles:
            raise ConfigError(f"{path}.keys", "an authority verifies either with public keys or with x509 roots, "
                                              "not both; use one authority for each")
        if bundles and spec.certificateIdentity is None:
            raise ConfigError(f"{path}.certificateIdentity", "required with x509 roots: which subject (and "
                                                             "issuer) the signing certificate must name")
        if keys and spec.certificateIdentity is not None:
            raise ConfigError(f"{path}.certificateIdentity", "applies to x509 roots only, and this authority "
                                                             "selects public keys")
        certificates = [certificate for bundle in bundles for certificate in bundle.certificates]
        roots = tuple(certificate for certificate in certificates if _self_signed(certificate))
        if bundles and not roots:
            raise ConfigError(f"{path}.keys", "the selected x509 entries hold no self-signed root certificate")
        log_keys: dict[str, RekorLogKey] = {}
        for name, material in store.keys.items():
            if isinstance(material, PemPublicKey) and material.rekor:
                try:
                    log_key = rekor_log_key(name, material.key)
                except ValueError as exc:
                    raise ConfigError(f"{path}.trustStore", f"TrustStore {spec.trustStore!r}: {exc}") from None
                log_keys[log_key.log_id] = log_key
        if spec.transparencyLog.require and not log_keys:
            raise ConfigError(f"{path}.transparencyLog.require",
                              f"TrustStore {spec.trustStore!r} holds no rekorPublicKey to check log entries with")
        repository = parse_reference(spec.signaturesRepository) if spec.signaturesRepository else None
        identity = IdentityConstraint.compile(spec.certificateIdentity) if spec.certificateIdentity else None
        return CosignAuthorityVerifier(
            authority_name, spec, spec.trustStore, keys, roots,
            tuple(certificate for certificate in certificates if certificate not in roots),
            tuple(crl for bundle in bundles for crl in bundle.crls), log_keys, repository, identity,
        )
