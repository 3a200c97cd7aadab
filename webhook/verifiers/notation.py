"""The Notary Project (notation) verifier: trust-policy semantics over X.509 trust stores.

One signature is checked the way `notation verify` checks it, as a sequence of validations:

- integrity: the envelope parses and its signature verifies with its signing certificate; the signed payload's
  `targetArtifact` is exactly the admitted manifest (media type, digest, size). Enforced at every level.
- authenticity: the certificate chain leads to a root of the right role in the authority's TrustStore (`ca`
  for `notary.x509`, `signingAuthority` for `notary.x509.signingAuthority`), and the signing certificate's
  subject matches a trusted identity.
- authenticTimestamp: the chain is valid at a trusted time: an RFC 3161 countersignature from a `tsa` root,
  the signed authentic signing time (signing authorities), or else now.
- expiry: the signature's `io.cncf.notary.expiry` has not passed.
- revocation: offline only, from the CRLs in the TrustStore.

The verification level (strict, permissive, audit, skip) and the per-check `override` decide whether a failed
check denies (enforce), is reported as a warning (log), or is not run (skip).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from webhook import strictjson
from webhook.artifacts import Collected, ImageTarget, ResolvedImage, SignatureMaterial
from webhook.pki import ChainError, Revocation, describe, revocation_status, sha256_fingerprint, verify_chain
from webhook.policy.models import NotationAuthority
from webhook.policy.notation_identity import identity_matches, validate_trusted_identities
from webhook.registry.client import RegistryClient
from webhook.results import Result
from webhook.sources.base import SignatureSource
from webhook.sources.referrers import NotationReferrers
from webhook.timestamp import Timestamp, TimestampError, verify_timestamp
from webhook.trust import CompiledTrustStore, X509Bundle
from webhook.validation import ConfigError, validate_spec
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, find_trust_store
from webhook.verifiers.notary_envelope import (
    SCHEME_SIGNING_AUTHORITY,
    Envelope,
    EnvelopeError,
    open_envelope,
)

log = logging.getLogger(__name__)

CHECKS = ("authenticity", "authenticTimestamp", "expiry", "revocation")
LEVEL_ACTIONS: dict[str, dict[str, str]] = {
    "strict": dict.fromkeys(CHECKS, "enforce"),
    "permissive": {"authenticity": "enforce", "authenticTimestamp": "log", "expiry": "log", "revocation": "log"},
    "audit": dict.fromkeys(CHECKS, "log"),
}

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NotationTrust:
    """The trust material of one authority, split by role."""

    ca: tuple[x509.Certificate, ...]
    signing_authority: tuple[x509.Certificate, ...]
    tsa: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class NotationAuthorityVerifier(CompiledAuthority):
    verifier_type = "notation"

    def __init__(self, name: str, spec: NotationAuthority, trust: NotationTrust, *, clock: Clock = _utc_now,
                 sources: Sequence[SignatureSource] | None = None) -> None:
        self.name = name
        self.spec = spec
        self.trust = trust
        self.clock = clock
        self.actions = dict(LEVEL_ACTIONS.get(spec.verificationLevel, {}))
        if spec.override is not None:
            self.actions.update(spec.override.model_dump(exclude_none=True))
        identities = spec.trustedIdentities or ["*"]
        self.identities = validate_trusted_identities(identities)
        self._sources = list(sources) if sources is not None else [NotationReferrers()]

    @property
    def skipped(self) -> bool:
        return self.spec.verificationLevel == "skip"

    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        return [SkippedVerification()] if self.skipped else self._sources

    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        subject = f"notation signature {material.label}"
        if self.skipped:
            return Result.ok(subject, "notation.skipped",
                             "verificationLevel skip: admitted WITHOUT signature verification")
        try:
            envelope = open_envelope(material.media_type, material.data)
        except EnvelopeError as exc:
            return Result.fail(subject, "notation.integrity", f"integrity validation failed: {exc}")
        mismatch = _target_mismatch(envelope.payload, image)
        if mismatch is not None:
            return Result.fail(subject, "notation.integrity", f"integrity validation failed: {mismatch}")

        now = self.clock()
        checks: list[Result] = []
        chain = self._check(checks, "authenticity", lambda: self._authenticity(envelope))
        self._check(checks, "authenticTimestamp", lambda: self._authentic_timestamp(envelope, now))
        self._check(checks, "expiry", lambda: _expiry(envelope, now))
        self._check(checks, "revocation",
                    lambda: self._revocation(chain if isinstance(chain, list) else list(envelope.certificates), now))
        return self._verdict(subject, envelope, checks)

    # --- the checks ------------------------------------------------------------------------------------

    def _check(self, checks: list[Result], name: str, run: Callable[[], Any]) -> Any:
        action = self.actions[name]
        if action == "skip":
            checks.append(Result.ok(name, "notation.check_skipped", f"{name} check skipped by policy"))
            return None
        try:
            value = run()
        except _CheckFailed as exc:
            code = "notation.check_failed" if action == "enforce" else "notation.check_logged"
            message = f"{name} validation failed: {exc}"
            checks.append(Result(name, False, code, message, details={"action": action}))
            return None
        checks.append(Result.ok(name, "notation.check_passed", value[1] if isinstance(value, tuple) else value))
        return value[0] if isinstance(value, tuple) else None

    def _authenticity(self, envelope: Envelope) -> tuple[list[x509.Certificate], str]:
        signing_authority = envelope.signing_scheme == SCHEME_SIGNING_AUTHORITY
        roots = self.trust.signing_authority if signing_authority else self.trust.ca
        role = "signingAuthority" if signing_authority else "ca"
        if not roots:
            raise _CheckFailed(f"signing scheme {envelope.signing_scheme} needs {role} certificates; "
                               f"TrustStore {self.spec.trustStore!r} has none")
        leaf = envelope.leaf
        # Authenticity asks whether the chain leads to a trusted root, whatever the time: validity in time is
        # the authenticTimestamp check, which the level may only log. So the path is checked at a moment
        # every certificate of the presented chain was valid.
        moment = max(certificate.not_valid_before_utc for certificate in envelope.certificates)
        try:
            chain = verify_chain(leaf, envelope.certificates[1:], roots, at=moment, eku_optional=True)
        except ChainError as exc:
            raise _CheckFailed(f"the signature's certificate chain does not lead to a trusted {role} "
                               f"certificate: {exc}") from None
        if not identity_matches(self.identities, leaf):
            raise _CheckFailed(f"signing certificate subject {describe(leaf)!r} does not match the trusted "
                               "identities")
        return chain, f"signed by {describe(leaf)!r}, chained to trusted {role} {describe(chain[-1])!r}"

    def _authentic_timestamp(self, envelope: Envelope, now: datetime) -> str:
        certificates = envelope.certificates
        if envelope.signing_scheme == SCHEME_SIGNING_AUTHORITY:
            assert envelope.authentic_signing_time is not None  # the envelope parser guarantees it
            _valid_at(certificates, envelope.authentic_signing_time, envelope.authentic_signing_time,
                      "the authentic signing time")
            return f"certificates valid at the authentic signing time {_when(envelope.authentic_signing_time)}"
        timestamp: Timestamp | None = None
        if envelope.timestamp_token is not None and self.trust.tsa:
            try:
                timestamp = verify_timestamp(envelope.timestamp_token, envelope.signature, self.trust.tsa)
            except TimestampError as exc:
                raise _CheckFailed(f"timestamp countersignature: {exc}") from None
        expired = any(now > certificate.not_valid_after_utc for certificate in certificates)
        required = self.spec.verifyTimestamp == "always" or expired
        if required and self.trust.tsa and envelope.timestamp_token is None:
            raise _CheckFailed("no timestamp countersignature was found in the signature envelope")
        if timestamp is not None:
            _valid_at(certificates, timestamp.earliest, timestamp.latest, "the timestamp")
            return (f"timestamped {_when(timestamp.time)} by {describe(timestamp.authority)!r}; "
                    "certificates valid then")
        _valid_at(certificates, now, now, "verification time")
        return f"certificates valid at verification time {_when(now)} (no timestamp)"

    def _revocation(self, chain: list[x509.Certificate], now: datetime) -> str:
        problems = [entry.message for entry in revocation_status(chain, self.trust.crls, now)
                    if entry.state in (Revocation.REVOKED, Revocation.UNKNOWN)]
        if problems:
            raise _CheckFailed("; ".join(problems))
        return "no certificate of the chain is revoked (offline CRLs)"

    def _verdict(self, subject: str, envelope: Envelope, checks: list[Result]) -> Result:
        leaf = envelope.leaf
        denied = [check for check in checks if check.code == "notation.check_failed"]
        logged = [check for check in checks if check.code == "notation.check_logged"]
        signer = f"{describe(leaf)} (sha256 {sha256_fingerprint(leaf)})"
        signing_time = envelope.authentic_signing_time or envelope.signing_time
        identity = {"signer": signer, "signer_ids": (sha256_fingerprint(leaf).upper(),),
                    "signed_at": int(signing_time.timestamp()) if signing_time else None}
        details = {"envelope": envelope.media_type, "scheme": envelope.signing_scheme,
                   "level": self.spec.verificationLevel}
        if denied:
            reasons = "; ".join(check.message for check in denied)
            return Result.fail(subject, "notation.rejected", reasons, children=tuple(checks), details=details)
        if logged:
            warnings = "; ".join(check.message for check in logged)
            for check in logged:
                log.warning("notation authority %s, %s: %s (logged, not enforced)", self.name, subject,
                            check.message)
            details["warnings"] = warnings
            return Result.ok(subject, "notation.verified_with_warnings",
                             f"verified at level {self.spec.verificationLevel} with warnings: {warnings}",
                             children=tuple(checks), details=details, **identity)
        return Result.ok(subject, "notation.verified", f"verified: signed by {describe(leaf)!r}",
                         children=tuple(checks), details=details, **identity)


class _CheckFailed(Exception):
    """A validation of the sequence failed; the level decides what that means."""


def _valid_at(certificates: Sequence[x509.Certificate], earliest: datetime, latest: datetime, what: str) -> None:
    for certificate in certificates:
        if earliest < certificate.not_valid_before_utc:
            raise _CheckFailed(f"{what} ({_when(earliest)}) is before certificate {describe(certificate)!r} "
                               f"validity period, it is valid from {_when(certificate.not_valid_before_utc)}")
        if latest > certificate.not_valid_after_utc:
            raise _CheckFailed(f"{what} ({_when(latest)}) is after certificate {describe(certificate)!r} "
                               f"validity period, it expired at {_when(certificate.not_valid_after_utc)}")


def _expiry(envelope: Envelope, now: datetime) -> str:
    if envelope.expiry is None:
        return "the signature has no expiry"
    if now > envelope.expiry:
        raise _CheckFailed(f"digital signature has expired on {_when(envelope.expiry)}")
    return f"the signature expires {_when(envelope.expiry)}"


def _target_mismatch(payload: bytes, image: ResolvedImage) -> str | None:
    """Why the signed payload does not describe `image`, or None when it does."""
    try:
        document = strictjson.loads(payload)
    except strictjson.StrictJSONError as exc:
        return f"payload is not valid JSON: {exc}"
    target = document.get("targetArtifact") if isinstance(document, dict) else None
    if not isinstance(target, dict):
        return "payload has no targetArtifact descriptor"
    signed = (target.get("mediaType"), target.get("digest"), target.get("size"))
    actual = (image.media_type, image.digest, len(image.manifest))
    if signed != actual:
        return (f"content descriptor mismatch: the signature is for {signed[1]} ({signed[0]}, {signed[2]} bytes), "
                f"the image is {actual[1]} ({actual[0]}, {actual[2]} bytes)")
    return None


class SkippedVerification(SignatureSource):
    """Stands in for the signature search when the level is skip: nothing is fetched or checked."""

    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        skipped = SignatureMaterial("(verificationLevel skip)", b"")
        return Collected("nothing (verificationLevel skip)", (skipped,))


def notation_trust(store: CompiledTrustStore) -> NotationTrust:
    bundles = [key for key in store.keys.values() if isinstance(key, X509Bundle)]

    def role(name: str) -> tuple[x509.Certificate, ...]:
        return tuple(certificate for bundle in bundles if bundle.role == name for certificate in bundle.certificates)

    return NotationTrust(role("ca"), role("signingAuthority"), role("tsa"),
                         tuple(crl for bundle in bundles for crl in bundle.crls))


class NotationVerifier(VerifierPlugin):
    type_name = "notation"
    spec_model = NotationAuthority

    def compile(self, authority_name: str, spec: Any, trust_stores: Mapping[str, CompiledTrustStore],
                path: str) -> CompiledAuthority:
        spec = validate_spec(NotationAuthority, spec, path)
        if spec.verificationLevel == "skip":
            return NotationAuthorityVerifier(authority_name, spec, NotationTrust((), (), (), ()))
        assert spec.trustStore is not None  # the model requires it unless the level is skip
        store = find_trust_store(trust_stores, spec.trustStore, path)
        trust = notation_trust(store)
        if not trust.ca and not trust.signing_authority:
            raise ConfigError(f"{path}.trustStore", f"TrustStore {spec.trustStore!r} holds no x509 certificates "
                                                    "of role ca or signingAuthority")
        if spec.verifyTimestamp == "always" and not trust.tsa:
            raise ConfigError(f"{path}.verifyTimestamp", f"verifyTimestamp always needs x509 certificates of role "
                                                         f"tsa in TrustStore {spec.trustStore!r}")
        return NotationAuthorityVerifier(authority_name, spec, trust)

