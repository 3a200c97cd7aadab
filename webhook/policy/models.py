"""Pydantic models of the TrustStore and TrustPolicy custom resources (trustgate.dev/v1alpha1).

These models are the single source of the CRD schemas: `controller/crds.py` generates `crds/*.yaml` from
them, and a test proves the committed YAML is what they generate. Field names are a public contract.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from webhook.policy.notation_identity import validate_trusted_identities
from webhook.references import InvalidReferenceError, is_repository_prefix, parse_reference, validate_digest

GROUP = "trustgate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ResourceName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN)]
EntryName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")]


class Strict(BaseModel):
    """Unknown fields are configuration errors: a typo must never silently weaken a policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata trustgate reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: ResourceName
    generation: int | None = None
    resourceVersion: str | None = None
    uid: str | None = None


# --- TrustStore ---------------------------------------------------------------------------------------


class X509Material(Strict):
    role: Literal["ca", "signingAuthority", "tsa"] = Field(
        description="ca: roots (with intermediates) for signing certificates; signingAuthority: roots for "
                    "Notation's notary.x509.signingAuthority scheme; tsa: RFC 3161 timestamping roots."
    )
    certificates: str = Field(description="PEM bundle of certificates.")
    crls: str | None = Field(
        default=None, description="PEM CRLs for offline revocation checks (no CRL or OCSP is ever fetched)."
    )


KEY_MATERIAL_FIELDS = ("gpg", "publicKey", "x509", "rekorPublicKey")
# Material kinds that are one PEM or armored text, so they can come from a Secret or ConfigMap value.
ValueFromType = Literal["gpg", "publicKey", "rekorPublicKey"]
_KEY_NAME = r"^[-._a-zA-Z0-9]+$"


class KeySelector(Strict):
    name: ResourceName = Field(description="Name of the Secret or ConfigMap.")
    namespace: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=_DNS_SUBDOMAIN)] = Field(
        description="Namespace of the Secret or ConfigMap (TrustStores are cluster-scoped)."
    )
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=_KEY_NAME)] = Field(
        description="Key within its data."
    )


class KeyValueSource(Strict):
    """Key material kept in a Secret or ConfigMap; `trustgate controller` reads it and follows its changes."""

    secretKeyRef: KeySelector | None = None
    configMapKeyRef: KeySelector | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> KeyValueSource:
        if (self.secretKeyRef is None) == (self.configMapKeyRef is None):
            raise ValueError("exactly one of secretKeyRef, configMapKeyRef is required")
        return self

    @property
    def kind(self) -> Literal["Secret", "ConfigMap"]:
        return "Secret" if self.secretKeyRef is not None else "ConfigMap"

    @property
    def selector(self) -> KeySelector:
        selector = self.secretKeyRef or self.configMapKeyRef
        assert selector is not None  # guaranteed by _one_reference
        return selector


class TrustStoreKey(Strict):
    name: EntryName = Field(description="Unique name of the key within the store.")
    gpg: str | None = Field(
        default=None,
        description="ASCII-armored OpenPGP public key block (a primary key with its subkeys).",
    )
    publicKey: str | None = Field(
        default=None, description="PEM SubjectPublicKeyInfo: ECDSA P-256/P-384/P-521, RSA >= 2048 or Ed25519."
    )
    x509: X509Material | None = None
    rekorPublicKey: str | None = Field(
        default=None, description="PEM public key of a Rekor transparency log, for offline entry checks."
    )
    hashAlgorithm: Literal["sha256", "sha384", "sha512"] | None = Field(
        default=None,
        description="publicKey (ECDSA or RSA) only: the digest its signatures use; sha256 when omitted, as cosign.",
    )
    valueFrom: KeyValueSource | None = Field(
        default=None,
        description="Take the key material from a Secret or ConfigMap (resolved by trustgate controller); "
                    "`type` says which kind of material it is.",
    )
    type: ValueFromType | None = Field(
        default=None, description="With valueFrom: the kind of key material the referenced value holds."
    )

    @model_validator(mode="after")
    def _one_material(self) -> TrustStoreKey:
        given = [name for name in (*KEY_MATERIAL_FIELDS, "valueFrom") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of {', '.join((*KEY_MATERIAL_FIELDS, 'valueFrom'))} is required"
                             + (f"; found {', '.join(given)}" if given else ""))
        if (self.valueFrom is None) != (self.type is None):
            raise ValueError("type is required with valueFrom, and allowed only with it")
        if self.hashAlgorithm is not None and self.material_field != "publicKey":
            raise ValueError("hashAlgorithm applies to publicKey entries only")
        return self

    @property
    def material_field(self) -> str:
        """The material kind of this entry; for a valueFrom entry, its `type`."""
        if self.type is not None:
            return self.type
        return next(name for name in KEY_MATERIAL_FIELDS if getattr(self, name) is not None)


def _unique_names(entries: list[Any], what: str) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ValueError(f"duplicate {what} name {entry.name!r}")
        seen.add(entry.name)


_KEY_ID = re.compile(r"^([0-9A-F]{16}|[0-9A-F]{40}|[0-9A-F]{64})$")


def _normalize_key_id(value: str) -> str:
    normalized = value.replace(" ", "").replace(":", "").upper()
    if not _KEY_ID.match(normalized):
        raise ValueError(
            f"revoked key {value!r} is not a key ID or fingerprint: 16, 40 or 64 hexadecimal digits (an OpenPGP "
            "key ID or fingerprint, or the SHA-256 fingerprint of a public key or certificate)"
        )
    return normalized


class TrustStoreSpec(Strict):
    keys: list[TrustStoreKey] = Field(min_length=1, description="Trusted key material.")
    revokedKeys: list[Annotated[str, StringConstraints(min_length=16, max_length=95)]] | None = Field(
        default=None,
        description="Keys whose signatures are rejected from now on, wherever they are trusted: OpenPGP key IDs or "
                    "fingerprints (primary or subkey), or SHA-256 fingerprints (hex) of public keys (DER "
                    "SubjectPublicKeyInfo) and signing certificates (DER).",
    )

    @field_validator("revokedKeys")
    @classmethod
    def _key_ids(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else [_normalize_key_id(value) for value in values]

    @model_validator(mode="after")
    def _unique_keys(self) -> TrustStoreSpec:
        _unique_names(self.keys, "key")
        return self


class Condition(Strict):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class KeyStatus(Strict):
    name: str
    type: str | None = None
    fingerprint: str | None = None
    algorithm: str | None = None
    expires: str | None = None


class TrustStoreStatus(Strict):
    conditions: list[Condition] | None = None
    observedGeneration: int | None = None
    keyCount: int | None = None
    keys: list[KeyStatus] | None = None


class TrustStore(Strict):
    apiVersion: Literal["trustgate.dev/v1alpha1"]
    kind: Literal["TrustStore"]
    metadata: ObjectMeta
    spec: TrustStoreSpec
    status: TrustStoreStatus | None = None


# --- TrustPolicy --------------------------------------------------------------------------------------

IdentityRuleType = Literal[
    "matchRepoDigestOrExact", "matchExact", "matchRepository", "exactReference", "exactRepository",
    "remapIdentity",
]
_RULE_FIELDS: dict[str, set[str]] = {
    "matchRepoDigestOrExact": set(),
    "matchExact": set(),
    "matchRepository": set(),
    "exactReference": {"dockerReference"},
    "exactRepository": {"dockerRepository"},
    "remapIdentity": {"prefix", "signedPrefix"},
}


def _check_repository_prefix(name: str, value: str) -> None:
    if not is_repository_prefix(value):
        raise ValueError(
            f"{name} {value!r} must be a fully expanded host[:port] or host[:port]/path, e.g. docker.io/library"
        )


class IdentityRemap(Strict):
    """Judge the admitted image as if it were named under `signedPrefix` instead of `prefix` (a copy or mirror of
    images signed under their origin's name), then apply the rule's own comparison."""

    prefix: str = Field(description="Prefix of the admitted reference (where the copies are).")
    signedPrefix: str = Field(description="The prefix the images were signed under (their origin).")

    @model_validator(mode="after")
    def _prefixes(self) -> IdentityRemap:
        _check_repository_prefix("remap.prefix", self.prefix)
        _check_repository_prefix("remap.signedPrefix", self.signedPrefix)
        if self.prefix == self.signedPrefix:
            raise ValueError(f"remap maps {self.prefix!r} onto itself; leave remap out instead")
        return self


# Rules that compare the signed name with the admitted image's name, so that a remap of that name means something.
_REMAPPABLE_RULES = ("matchRepoDigestOrExact", "matchExact", "matchRepository")


class SignedIdentity(Strict):
    """Which signed docker-reference vouches for the admitted image (containers-policy.json rules)."""

    type: IdentityRuleType = "matchRepoDigestOrExact"
    dockerReference: str | None = Field(default=None, description="exactReference: the signed reference.")
    dockerRepository: str | None = Field(default=None, description="exactRepository: the signed repository.")
    prefix: str | None = Field(default=None, description="remapIdentity: prefix of the admitted reference.")
    signedPrefix: str | None = Field(default=None, description="remapIdentity: the prefix it was signed under.")
    remap: IdentityRemap | None = Field(
        default=None,
        description="matchRepoDigestOrExact, matchExact, matchRepository: replace remap.prefix by "
                    "remap.signedPrefix in the admitted reference before comparing (copies and mirrors).",
    )

    @model_validator(mode="after")
    def _fields_for_type(self) -> SignedIdentity:
        if self.remap is not None and self.type not in _REMAPPABLE_RULES:
            raise ValueError(f"remap is not allowed with type {self.type}; only with {', '.join(_REMAPPABLE_RULES)}")
        wanted = _RULE_FIELDS[self.type]
        given = {name for name in ("dockerReference", "dockerRepository", "prefix", "signedPrefix")
                 if getattr(self, name) is not None}
        if given - wanted:
            raise ValueError(f"{', '.join(sorted(given - wanted))} not allowed with type {self.type}")
        if wanted - given:
            raise ValueError(f"type {self.type} requires {', '.join(sorted(wanted - given))}")
        if self.dockerReference is not None:
            ref = _parse_rule_reference(self.dockerReference, "dockerReference")
            if ref.is_name_only:
                raise ValueError(f"dockerReference {self.dockerReference!r} needs a tag or digest")
        if self.dockerRepository is not None:
            ref = _parse_rule_reference(self.dockerRepository, "dockerRepository")
            if not ref.is_name_only:
                raise ValueError(f"dockerRepository {self.dockerRepository!r} must not have a tag or digest")
        for name in ("prefix", "signedPrefix"):
            value = getattr(self, name)
            if value is not None:
                _check_repository_prefix(name, value)
        return self


def _parse_rule_reference(value: str, name: str) -> Any:
    try:
        return parse_reference(value)
    except InvalidReferenceError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _validate_http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{value!r} must not carry credentials, a query or a fragment")
    return value.rstrip("/")


class GpgAuthority(Strict):
    trustStore: ResourceName = Field(description="Name of the TrustStore holding the keys.")
    keys: list[EntryName] | None = Field(
        default=None, min_length=1, description="Subset of the store's keys; all of them when omitted."
    )
    lookaside: str | None = Field(
        default=None, description="Base URL of a lookaside signature server (used with the scheme it names)."
    )
    signedIdentity: SignedIdentity = Field(default_factory=SignedIdentity)

    _lookaside_url = field_validator("lookaside")(_validate_http_url)


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DURATION_UNITS = (86400, 3600, 60, 1)


def parse_duration(value: str) -> int:
    """`30d`, `720h`, `1h30m`, `90s` -> seconds."""
    match = _DURATION.match(value)
    if not value or match is None:
        raise ValueError(f"{value!r} is not a duration such as 30d, 720h or 1h30m")
    return sum(int(amount) * unit for amount, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if amount)


NotationAction = Literal["enforce", "log", "skip"]


class NotationOverride(Strict):
    """Per-check actions replacing those of the verification level (integrity can never be overridden)."""

    authenticity: Literal["enforce", "log"] | None = None
    authenticTimestamp: NotationAction | None = None
    expiry: NotationAction | None = None
    revocation: NotationAction | None = None


class NotationAuthority(Strict):
    """A Notary Project trust-policy statement: trusted certificates, trusted identities and a level."""

    trustStore: ResourceName | None = Field(
        default=None,
        description="TrustStore whose x509 entries (role ca, signingAuthority, tsa) are trusted; not with skip.",
    )
    trustedIdentities: list[str] | None = Field(
        default=None,
        description='"*" or "x509.subject: <DN>" entries; a DN must name C, ST and O and matches a signing '
                    "certificate whose subject has all of its attributes.",
    )
    verificationLevel: Literal["strict", "permissive", "audit", "skip"] = "strict"
    override: NotationOverride | None = None
    verifyTimestamp: Literal["always", "afterCertExpiry"] = Field(
        default="afterCertExpiry",
        description="always: a timestamp countersignature from a tsa root is required; afterCertExpiry: "
                    "required only once the signing certificate has expired (one present is always checked).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> NotationAuthority:
        if self.verificationLevel == "skip":
            if self.trustStore is not None or self.trustedIdentities is not None or self.override is not None:
                raise ValueError("verificationLevel skip must not have trustStore, trustedIdentities or override")
            return self
        if self.trustStore is None or not self.trustedIdentities:
            raise ValueError("trustStore and trustedIdentities are both required unless verificationLevel is skip")
        try:
            validate_trusted_identities(self.trustedIdentities)
        except ValueError as exc:
            raise ValueError(f"trustedIdentities: {exc}") from None
        return self




class CertificateIdentity(Strict):
    """Who a signing certificate must name: a SAN (email, URI, DNS name) and, for Fulcio, the OIDC issuer."""

    subject: str | None = Field(default=None, description="Exact subject alternative name.")
    subjectRegExp: str | None = Field(default=None, description="Anchored regular expression over the SANs.")
    issuer: str | None = Field(default=None, description="Exact OIDC issuer (Fulcio certificate extension).")
    issuerRegExp: str | None = Field(default=None, description="Anchored regular expression over the issuer.")

    @model_validator(mode="after")
    def _constraints(self) -> CertificateIdentity:
        if (self.subject is None) == (self.subjectRegExp is None):
            raise ValueError("exactly one of subject, subjectRegExp is required")
        if self.issuer is not None and self.issuerRegExp is not None:
            raise ValueError("issuer and issuerRegExp are mutually exclusive")
        for name in ("subjectRegExp", "issuerRegExp"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{name} {pattern!r} is not a valid regular expression: {exc}") from None
        return self


class TransparencyLog(Strict):
    require: bool = Field(
        default=False,
        description="Require a Rekor signed entry timestamp, checked offline with the TrustStore's rekorPublicKey.",
    )


class CosignAuthority(Strict):
    trustStore: ResourceName = Field(description="Name of the TrustStore holding the keys or x509 roots.")
    keys: list[EntryName] | None = Field(
        default=None, min_length=1,
        description="Subset of the store's publicKey or x509 (role ca) entries; all of them when omitted.",
    )
    # cosign signs the repository without a tag, so the default rule compares repositories only.
    signedIdentity: SignedIdentity = Field(default_factory=lambda: SignedIdentity(type="matchRepository"))
    signaturesRepository: str | None = Field(
        default=None, description="Repository holding the signatures instead of the image's own (COSIGN_REPOSITORY)."
    )
    certificateIdentity: CertificateIdentity | None = Field(
        default=None, description="Required for certificate-based signatures (x509 roots)."
    )
    transparencyLog: TransparencyLog = Field(default_factory=TransparencyLog)
    predicateType: str | None = Field(
        default=None, min_length=1, max_length=512,
        description="The in-toto predicateType a sigstore bundle's statement must carry; cosign's signing "
                    "predicate https://sigstore.dev/cosign/sign/v1 when omitted.",
    )

    @field_validator("signaturesRepository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _parse_rule_reference(value, "signaturesRepository").is_name_only:
            raise ValueError(f"signaturesRepository {value!r} must not have a tag or digest")
        return value


class Authority(BaseModel):
    """A named verifier, configured under exactly one verifier type key such as gpg."""

    # Extra keys are allowed only so that third-party verifier types can be configured; which keys are
    # valid is decided by the verifier registry when the policy is compiled.
    model_config = ConfigDict(extra="allow", frozen=True)

    name: EntryName
    minSignatures: int = Field(
        default=1, ge=1, le=64,
        description="Distinct signing keys (or certificates) that must each have a valid signature; the same key "
                    "signing twice, or the same signature stored twice, counts once.",
    )
    maxSignatureAge: str | None = Field(
        default=None,
        description="Reject signatures whose signed time is older than this (e.g. 30d, 720h): old signatures of "
                    "old, vulnerable images cannot be replayed. Signatures without a signed time are rejected.",
    )
    gpg: GpgAuthority | None = None
    cosign: CosignAuthority | None = None
    notation: NotationAuthority | None = None

    @field_validator("maxSignatureAge")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) == 0:
            raise ValueError("maxSignatureAge must be longer than zero")
        return value

    def verifier_entries(self) -> dict[str, Any]:
        """The verifier type keys given, built-in and third-party alike."""
        builtin = {"gpg": self.gpg, "cosign": self.cosign, "notation": self.notation}
        entries: dict[str, Any] = {name: spec for name, spec in builtin.items() if spec is not None}
        entries.update(self.model_extra or {})
        return entries


_GLOB_CHARS = re.compile(r"^[a-z0-9._\-/:*]+$")


def _validate_glob(pattern: str) -> str:
    if not _GLOB_CHARS.match(pattern):
        raise ValueError(
            f"image pattern {pattern!r} may contain only lowercase repository characters, ':' and '*'"
        )
    if "***" in pattern:
        raise ValueError(f"image pattern {pattern!r}: use * (one path segment) or ** (any segments)")
    return pattern


ImagePattern = Annotated[str, StringConstraints(min_length=1, max_length=512)]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]


class LabelSelectorRequirement(Strict):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = None

    @model_validator(mode="after")
    def _values_for_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} requires values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(Strict):
    """A Kubernetes label selector; all its terms must hold."""

    matchLabels: dict[LabelKey, Annotated[str, StringConstraints(max_length=63)]] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        for key, wanted in (self.matchLabels or {}).items():
            if labels.get(key) != wanted:
                return False
        for requirement in self.matchExpressions or []:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            if requirement.operator == "In" and value not in (requirement.values or []):
                return False
            if requirement.operator == "NotIn" and present and value in (requirement.values or []):
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True


class TrustPolicySpec(Strict):
    images: list[ImagePattern] = Field(
        min_length=1,
        description="Anchored globs over the normalized repository: * within one path segment, ** across.",
    )
    mode: Literal["enforce", "warn", "audit"] = "enforce"
    authorities: list[Authority] = Field(min_length=1)
    threshold: int | None = Field(
        default=None, ge=1, description="How many authorities must pass; all of them when omitted."
    )
    requireDigest: bool = Field(
        default=False,
        description="Deny references without a digest at /validate (for clusters where the mutating webhook, "
                    "which pins digests, is mandatory).",
    )
    mutateDigest: bool = Field(
        default=True,
        description="Let the mutating webhook rewrite admitted images to name:tag@digest. Turning it off leaves "
                    "specs untouched, but a tag moved after admission then runs unverified bytes.",
    )
    namespaceSelector: LabelSelector | None = Field(
        default=None,
        description="Apply this policy only to pods in namespaces whose labels match; when the labels cannot "
                    "be read the policy applies.",
    )
    deniedDigests: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        default=None,
        description="Manifest digests that are always denied, signed or not (known-vulnerable releases); an "
                    "index is denied when it lists one of them.",
    )

    @field_validator("deniedDigests")
    @classmethod
    def _digests(cls, digests: list[str] | None) -> list[str] | None:
        if digests is not None:
            for digest in digests:
                validate_digest(digest)
        return digests

    @field_validator("images")
    @classmethod
    def _patterns(cls, images: list[str]) -> list[str]:
        return [_validate_glob(pattern) for pattern in images]

    @model_validator(mode="after")
    def _authorities(self) -> TrustPolicySpec:
        _unique_names(self.authorities, "authority")
        if self.threshold is not None and self.threshold > len(self.authorities):
            raise ValueError(f"threshold {self.threshold} exceeds the {len(self.authorities)} authorities")
        return self


class TrustPolicyStatus(Strict):
    conditions: list[Condition] | None = None
    observedGeneration: int | None = None
    authorityCount: int | None = None


class TrustPolicy(Strict):
    apiVersion: Literal["trustgate.dev/v1alpha1"]
    kind: Literal["TrustPolicy"]
    metadata: ObjectMeta
    spec: TrustPolicySpec
    status: TrustPolicyStatus | None = None
