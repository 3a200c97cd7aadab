"""Validation of TrustStores and TrustPolicies as the controller sees them: plain functions, no API calls.

A TrustStore is evaluated after its `valueFrom` references are resolved: every key is parsed, and keys or
certificates that are expired, revoked or not yet valid make the store not Ready. A TrustPolicy is compiled
against the Ready TrustStores with the same verifier plugins the webhook uses, so whatever the controller
calls Ready is exactly what the webhook can load.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from webhook.gpgkeys import GpgKey
from webhook.policy.compile import compile_policy
from webhook.policy.models import KeyStatus, KeyValueSource, TrustPolicy, TrustStore
from webhook.rekor import spki_der
from webhook.trust import (
    CompiledTrustStore,
    KeyMaterial,
    PemPublicKey,
    X509Bundle,
    compile_trust_store,
    expires_at,
)
from webhook.validation import ConfigError, validation_errors
from webhook.verifiers.base import VerifierPlugin

EXPIRY_WARNING = datetime.timedelta(days=30)

# Condition reasons: stable, CamelCase, documented in docs/controller.md.
REASON_VALID = "Valid"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_KEY_SOURCE = "KeySourceUnavailable"
REASON_INVALID_KEY = "InvalidKeyMaterial"
REASON_KEY_EXPIRED = "KeyExpired"
REASON_KEY_REVOKED = "KeyRevoked"
REASON_NOT_YET_VALID = "CertificateNotYetValid"
REASON_STORE_NOT_READY = "TrustStoreNotReady"
REASON_INVALID_AUTHORITY = "InvalidAuthority"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something an operator should hear about as a Warning Event (e.g. a key expiring soon)."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class KeyReference:
    """A Secret or ConfigMap key that a TrustStore takes key material from."""

    kind: str  # Secret | ConfigMap
    namespace: str
    name: str
    key: str

    @classmethod
    def of(cls, source: KeyValueSource) -> KeyReference:
        selector = source.selector
        return cls(source.kind, selector.namespace, selector.name, selector.key)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} key {self.key}"


# (kind, namespace, name) -> the object's decoded data, or None when it does not exist.
DataLookup = Callable[[str, str, str], Mapping[str, str] | None]


@dataclass(frozen=True)
class StoreEvaluation:
    name: str
    ready: bool
    reason: str
    message: str
    # The store with every valueFrom replaced by its value; what goes into the bundle when Ready.
    resolved: TrustStore | None = None
    compiled: CompiledTrustStore | None = None
    keys: tuple[KeyStatus, ...] = ()
    notices: tuple[Notice, ...] = ()
    references: frozenset[KeyReference] = frozenset()
    # Revocations count even when the store is not Ready: a broken store must not un-revoke a key.
    revoked_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PolicyEvaluation:
    name: str
    ready: bool
    reason: str
    message: str
    policy: TrustPolicy | None = None
    authority_count: int | None = None
    trust_stores: frozenset[str] = field(default_factory=frozenset)


def references_of(store: TrustStore) -> frozenset[KeyReference]:
    return frozenset(KeyReference.of(entry.valueFrom) for entry in store.spec.keys if entry.valueFrom is not None)


def resolve_value_from(store: TrustStore, lookup: DataLookup,
                       allowed_namespaces: frozenset[str] | None = None) -> TrustStore:
    """The store with each valueFrom entry replaced by inline material; ConfigError names what is missing.

    With `allowed_namespaces`, key material is read only from those namespaces (the controller has no read
    access elsewhere), and a reference to any other namespace is refused by name.
    """
    keys: list[dict[str, Any]] = []
    for index, entry in enumerate(store.spec.keys):
        if entry.valueFrom is None or entry.type is None:
            keys.append(entry.model_dump(exclude_none=True))
            continue
        reference = KeyReference.of(entry.valueFrom)
        if allowed_namespaces is not None and reference.namespace not in allowed_namespaces:
            raise ConfigError(f"spec.keys[{index}].valueFrom",
                              f"{reference.kind} {reference.namespace}/{reference.name}: the controller reads key "
                              f"material only from namespaces {', '.join(sorted(allowed_namespaces))} "
                              f"(--key-source-namespace)")
        data = lookup(reference.kind, reference.namespace, reference.name)
        if data is None:
            raise ConfigError(f"spec.keys[{index}].valueFrom", f"{reference.kind} {reference.namespace}/"
                                                                 f"{reference.name} not found")
        if reference.key not in data:
            raise ConfigError(f"spec.keys[{index}].valueFrom", f"{reference} not found")
        keys.append({"name": entry.name, entry.type: data[reference.key],
                     **({"hashAlgorithm": entry.hashAlgorithm} if entry.hashAlgorithm else {})})
    document = store.model_dump(exclude_none=True, exclude={"status"})
    document["metadata"] = {"name": store.metadata.name}
    document["spec"] = {"keys": keys}
    return TrustStore.model_validate(document)


def _parse_error(exc: ValidationError) -> str:
    path, message = validation_errors(exc)[0]
    return f"{path}: {message}" if path else message


def evaluate_store(body: Mapping[str, Any], lookup: DataLookup, now: datetime.datetime,
                   allowed_namespaces: frozenset[str] | None = None,
                   compiled_before: Mapping[str, CompiledTrustStore] | None = None) -> StoreEvaluation:
    """Validate a TrustStore object as stored in the cluster (status is ignored).

    A store compiled from the same resolved content before (`compiled_before`, by name) is not compiled
    again; the validity of its keys is checked at `now` all the same."""
    name = str(body.get("metadata", {}).get("name", ""))
    try:
        store = TrustStore.model_validate({key: value for key, value in body.items() if key != "status"})
    except ValidationError as exc:
        return StoreEvaluation(name, False, REASON_INVALID_SPEC, _parse_error(exc))
    references = references_of(store)
    revoked = frozenset(store.spec.revokedKeys or ())
    try:
        resolved = resolve_value_from(store, lookup, allowed_namespaces)
    except ConfigError as exc:
        return StoreEvaluation(name, False, REASON_KEY_SOURCE, str(exc), references=references,
                               revoked_keys=revoked)
    except ValidationError as exc:
        return StoreEvaluation(name, False, REASON_INVALID_KEY, _parse_error(exc), references=references,
                               revoked_keys=revoked)
    earlier = (compiled_before or {}).get(name)
    try:
        compiled = earlier if earlier is not None and earlier.source == resolved else compile_trust_store(resolved)
    except ConfigError as exc:
        return StoreEvaluation(name, False, REASON_INVALID_KEY, str(exc), references=references,
                               revoked_keys=revoked)
    # The controller inspects keys and never verifies with them: the store's GNUPGHOME goes at once.
    compiled.release()

    statuses: list[KeyStatus] = []
    notices: list[Notice] = []
    faults: list[tuple[str, str]] = []
    for entry in resolved.spec.keys:
        material = compiled.keys[entry.name]
        statuses.append(key_status(entry.name, entry.material_field, material))
        key_faults, key_notices = check_validity(entry.name, material, now)
        faults.extend(key_faults)
        notices.extend(key_notices)
    if faults:
        reason = faults[0][0]
        message = "; ".join(message for _, message in faults)
        return StoreEvaluation(name, False, reason, message, keys=tuple(statuses), notices=tuple(notices),
                               references=references, revoked_keys=revoked)
    return StoreEvaluation(name, True, REASON_VALID, f"{len(statuses)} keys loaded", resolved, compiled,
                           tuple(statuses), tuple(notices), references, revoked)


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def describe_public_key(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def _spki_fingerprint(key: Any) -> str:
    return "SHA256:" + hashlib.sha256(spki_der(key)).hexdigest()


def key_status(name: str, material_type: str, material: KeyMaterial) -> KeyStatus:
    """What `status.keys` shows for one key: fingerprint or ID, algorithm, expiry."""
    if isinstance(material, GpgKey):
        return KeyStatus(name=name, type=material_type, fingerprint=material.fingerprint,
                         algorithm=material.algorithm, expires=_iso(expires_at(material)))
    if isinstance(material, PemPublicKey):
        return KeyStatus(name=name, type=material_type, fingerprint=_spki_fingerprint(material.key),
                         algorithm=describe_public_key(material.key))
    if isinstance(material, X509Bundle):
        first = material.certificates[0]
        return KeyStatus(name=name, type=material_type,
                         fingerprint="SHA256:" + first.fingerprint(hashes.SHA256()).hex(),
                         algorithm=describe_public_key(first.public_key()), expires=_iso(expires_at(material)))
    return KeyStatus(name=name, type=material_type)


def check_validity(name: str, material: KeyMaterial,
                   now: datetime.datetime) -> tuple[list[tuple[str, str]], list[Notice]]:
    """(faults as (reason, message), notices) for the lifetime of one key or certificate bundle."""
    faults: list[tuple[str, str]] = []
    notices: list[Notice] = []

    def lifetime(what: str, expires: datetime.datetime | None, fatal: bool) -> None:
        if expires is None:
            return
        if expires <= now:
            if fatal:
                faults.append((REASON_KEY_EXPIRED, f"key {name}: {what} expired at {_iso(expires)}"))
            else:
                notices.append(Notice(REASON_KEY_EXPIRED, f"key {name}: {what} expired at {_iso(expires)}"))
        elif expires - now <= EXPIRY_WARNING:
            notices.append(Notice("KeyExpiringSoon", f"key {name}: {what} expires at {_iso(expires)}"))

    if isinstance(material, GpgKey):
        if material.revoked:
            faults.append((REASON_KEY_REVOKED, f"key {name}: OpenPGP key {material.fingerprint} is revoked"))
        lifetime(f"OpenPGP key {material.fingerprint}", material.expires, fatal=True)
        # An expired subkey no longer signs, but the key's other (sub)keys still do: warn, do not fail.
        for fingerprint, expires in zip(material.subkey_fingerprints, material.subkey_expires, strict=False):
            lifetime(f"OpenPGP subkey {fingerprint}", expires, fatal=False)
    elif isinstance(material, X509Bundle):
        for certificate in material.certificates:
            subject = certificate.subject.rfc4514_string() or "(empty subject)"
            if certificate.not_valid_before_utc > now:
                faults.append((REASON_NOT_YET_VALID, f"key {name}: certificate {subject} is valid only from "
                                                     f"{_iso(certificate.not_valid_before_utc)}"))
            # A timestamping root keeps vouching for timestamps made while it was valid.
            lifetime(f"certificate {subject}", certificate.not_valid_after_utc, fatal=material.role != "tsa")
    return faults, notices


def authority_trust_stores(policy: TrustPolicy) -> list[tuple[str, str]]:
    """(field path, TrustStore name) for every authority, whatever its verifier type."""
    found: list[tuple[str, str]] = []
    for index, authority in enumerate(policy.spec.authorities):
        for type_name, spec in authority.verifier_entries().items():
            store = spec.get("trustStore") if isinstance(spec, Mapping) else getattr(spec, "trustStore", None)
            if isinstance(store, str):
                found.append((f"spec.authorities[{index}].{type_name}.trustStore", store))
    return found


def evaluate_policy(body: Mapping[str, Any], stores: Mapping[str, StoreEvaluation],
                    verifiers: Mapping[str, VerifierPlugin]) -> PolicyEvaluation:
    """Validate a TrustPolicy against the evaluated TrustStores (it is Ready only if all it names are)."""
    name = str(body.get("metadata", {}).get("name", ""))
    try:
        policy = TrustPolicy.model_validate({key: value for key, value in body.items() if key != "status"})
    except ValidationError as exc:
        return PolicyEvaluation(name, False, REASON_INVALID_SPEC, _parse_error(exc))
    used = authority_trust_stores(policy)
    names = frozenset(store for _, store in used)
    for path, store_name in used:
        store = stores.get(store_name)
        if store is None:
            return PolicyEvaluation(name, False, REASON_STORE_NOT_READY,
                                    f"{path}: TrustStore {store_name} not found", policy, trust_stores=names)
        if not store.ready:
            return PolicyEvaluation(name, False, REASON_STORE_NOT_READY,
                                    f"{path}: TrustStore {store_name} is not Ready: {store.message}", policy,
                                    trust_stores=names)
    compiled_stores = {store.name: store.compiled for store in stores.values() if store.compiled is not None}
    try:
        compiled = compile_policy(policy, compiled_stores, verifiers)
    except ConfigError as exc:
        return PolicyEvaluation(name, False, REASON_INVALID_AUTHORITY, str(exc), policy, trust_stores=names)
    for rules in compiled.authorities:
        rules.verifier.close()
    count = len(policy.spec.authorities)
    threshold = policy.spec.threshold or count
    return PolicyEvaluation(name, True, REASON_VALID, f"{threshold} of {count} authorities required", policy,
                            count, names)


def ready_condition(ready: bool, reason: str, message: str, generation: int | None,
                    previous: Sequence[Mapping[str, Any]] | None, now: datetime.datetime) -> dict[str, Any]:
    """The `Ready` condition; lastTransitionTime moves only when the status flips."""
    status = "True" if ready else "False"
    transition = _iso(now)
    for condition in previous or ():
        if condition.get("type") == "Ready" and condition.get("status") == status:
            transition = condition.get("lastTransitionTime") or transition
    return {"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": transition, "observedGeneration": generation}
