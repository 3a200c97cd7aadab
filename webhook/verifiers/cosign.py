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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from webhook.artifacts import ImageTarget, ResolvedImage, SignatureMaterial
from webhook.policy.models import CosignAuthority
from webhook.references import ImageReference, parse_reference
from webhook.rekor import RekorEntry, RekorError, RekorLogKey, check_entry_matches, rekor_log_key, verify_bundle
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
from webhook.sources.referrers import BundleReferrers
from webhook.trust import CompiledTrustStore, PemPublicKey, X509Bundle
from webhook.validation import ConfigError, validate_spec
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, find_trust_store, select_keys
from webhook.verifiers.cosign_bundle import BUNDLE_MEDIA_TYPES, verify_bundle_signature
from webhook.verifiers.cosign_trust import (
    CertificateError,
    CosignTrust,
    IdentityConstraint,
    SignatureRejected,
    Signer,
    TrustedKey,
    fingerprint,
    self_signed,
)

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
MAX_CHAIN_CERTIFICATES = 8


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


@dataclass
class CosignAuthorityVerifier(CompiledAuthority):
    """One cosign authority: legacy `.sig` signatures and sigstore bundles, verified with the same trust."""

    name: str
    spec: CosignAuthority
    trust: CosignTrust
    signatures_repository: ImageReference | None
    verifier_type: str = "cosign"
    # The clock, for certificates checked without a verified signed time; replaced in tests.
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)
    bundle_source: BundleReferrers = field(default_factory=BundleReferrers, repr=False)

    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        return [CosignSignatureTag(self.signatures_repository), self.bundle_source]

    def registries(self) -> Sequence[str]:
        return (self.signatures_repository.domain,) if self.signatures_repository else ()

    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        try:
            if material.media_type in BUNDLE_MEDIA_TYPES:
                return verify_bundle_signature(image, material, self.trust, self.spec, self.now)
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
        signer = (self.trust.key_signer(signature, material.data) if self.trust.keys
                  else self._certificate_signer(signature, material))
        entry = self._log_entry(material, signature, signer)
        details: dict[str, str] = {}
        if entry is not None:
            details = {"rekorIntegratedTime": entry.integrated_time.isoformat(),
                       "rekorLogIndex": str(entry.log_index)}
        if signer.certificate is not None:
            if entry is not None:
                self.trust.check_certificate(signer, entry.integrated_time, "at its Rekor integrated time")
            else:
                self.trust.check_certificate(signer, self.now(), "now (no verified Rekor entry)")
        return self._check_payload(image, material, signer, details,
                                   int(entry.integrated_time.timestamp()) if entry is not None else None)

    def _certificate_signer(self, signature: bytes, material: SignatureMaterial) -> Signer:
        if CERTIFICATE_ANNOTATION not in material.annotations:
            raise SignatureRejected("cosign.certificate", f"no {CERTIFICATE_ANNOTATION} annotation; this "
                                                          "authority trusts certificates only")
        try:
            leaf, chain = parse_certificates(material.annotations)
        except CertificateError as exc:
            raise SignatureRejected("cosign.certificate", str(exc)) from None
        return self.trust.certificate_signer(leaf, chain, signature, material.data)

    def _log_entry(self, material: SignatureMaterial, signature: bytes, signer: Signer) -> RekorEntry | None:
        bundle = material.annotations.get(BUNDLE_ANNOTATION)
        if bundle is None:
            if self.spec.transparencyLog.require:
                raise SignatureRejected("cosign.tlog", f"no {BUNDLE_ANNOTATION} annotation, and the authority "
                                                       "requires a Rekor entry")
            return None
        if not self.trust.log_keys:
            return None  # nothing to check it with; the signature stands on its own, as configured
        try:
            entry = verify_bundle(bundle, self.trust.log_keys)
            check_entry_matches(entry, material.data, signature, signer.public)
        except RekorError as exc:
            raise SignatureRejected("cosign.tlog", f"Rekor bundle rejected: {exc}") from None
        return entry

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
        roots = tuple(certificate for certificate in certificates if self_signed(certificate))
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
        tsa_roots = tuple(certificate for material in store.keys.values()
                          if isinstance(material, X509Bundle) and material.role == "tsa"
                          for certificate in material.certificates if self_signed(certificate))
        trust = CosignTrust(spec.trustStore, keys, roots,
                            tuple(certificate for certificate in certificates if certificate not in roots),
                            tuple(crl for bundle in bundles for crl in bundle.crls), log_keys, identity, tsa_roots)
        return CosignAuthorityVerifier(authority_name, spec, trust, repository)
