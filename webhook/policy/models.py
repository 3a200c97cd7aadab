"""Pydantic models of the TrustStore and TrustPolicy custom resources (trustgate.dev/v1alpha1).

These models are the single source of the CRD schemas: `controller/crds.py` generates `crds/*.yaml` from
them, and a test proves the committed YAML is what they generate. Field names are a public contract.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from webhook.references import InvalidReferenceError, is_repository_prefix, parse_reference

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


class TrustStoreSpec(Strict):
    keys: list[TrustStoreKey] = Field(min_length=1, description="Trusted key material.")

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


class SignedIdentity(Strict):
    """Which signed docker-reference vouches for the admitted image (containers-policy.json rules)."""

    type: IdentityRuleType = "matchRepoDigestOrExact"
    dockerReference: str | None = Field(default=None, description="exactReference: the signed reference.")
    dockerRepository: str | None = Field(default=None, description="exactRepository: the signed repository.")
    prefix: str | None = Field(default=None, description="remapIdentity: prefix of the admitted reference.")
    signedPrefix: str | None = Field(default=None, description="remapIdentity: the prefix it was signed under.")

    @model_validator(mode="after")
    def _fields_for_type(self) -> SignedIdentity:
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
            if value is not None and not is_repository_prefix(value):
                raise ValueError(
                    f"{name} {value!r} must be a fully expanded host[:port] or host[:port]/path, "
                    "e.g. docker.io/library"
                )
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


class Authority(BaseModel):
    """A named verifier, configured under exactly one verifier type key such as gpg."""

    # Extra keys are allowed only so that third-party verifier types can be configured; which keys are
    # valid is decided by the verifier registry when the policy is compiled.
    model_config = ConfigDict(extra="allow", frozen=True)

    name: EntryName
    gpg: GpgAuthority | None = None

    def verifier_entries(self) -> dict[str, Any]:
        entries: dict[str, Any] = {"gpg": self.gpg} if self.gpg is not None else {}
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
